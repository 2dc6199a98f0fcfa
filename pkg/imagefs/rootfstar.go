package imagefs

import (
	"archive/tar"
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// WriteRootfsTar writes the flattened filesystem of img as one tar at path
// (through a temporary file renamed at the end).
//
// It holds every entry the image's filesystem has after applying the layers
// in order, whiteouts and opaque directories included, and nothing else:
// unlike rootfs/ it keeps /dev and device nodes, since a tar can carry them
// without creating anything on this machine (what `docker export` gave, less
// the files docker adds to a container). Entries come in layer order, lowest
// first, so a hardlink follows its target; a hardlink whose target an upper
// layer replaced becomes a regular file with the content it linked to.
// Names are relative ("etc/passwd", directories end in "/"). A name that
// climbs out of the root with ".." is an error.
//
// Each layer is decompressed twice (a first pass, top layer first, decides
// what survives); memory holds entry names and directory headers, not
// contents.
func WriteRootfsTar(ctx context.Context, img v1.Image, dst string) error {
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("list layers: %w", err)
	}
	plan, err := planFlatten(ctx, layers)
	if err != nil {
		return err
	}
	return writeAtomic(dst, 0o644, func(w io.Writer) error {
		return plan.write(ctx, layers, w, filepath.Dir(dst))
	})
}

// flattenPlan says, per layer, which entries (by position) end up in the
// flattened tree.
type flattenPlan struct {
	keep [][]bool
	// dirHeaders holds the surviving header of each directory, written where
	// the directory first appears so parents precede children.
	dirHeaders map[string]*tar.Header
	// links maps a surviving hardlink (layer, index) whose target was
	// replaced above it to that target's name: it is written as a copy.
	links map[[2]int]string
	// needed are target names whose content must be kept aside (on disk)
	// while writing.
	needed map[string]bool
}

type planEntry struct {
	name     string // cleaned; "" is the root
	typ      byte
	linkname string // cleaned hardlink target
	skip     bool   // tar-format headers, whiteouts, aufs metadata
	whiteout string // name hidden by a .wh. entry
	opaque   string // directory made opaque by this entry
	isOpaque bool
	hdr      *tar.Header // directories only: kept for dirHeaders
}

func readPlanEntries(ctx context.Context, l v1.Layer) ([]planEntry, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var out []planEntry
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read tar: %w", err)
		}
		e, err := toPlanEntry(hdr)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return nil, fmt.Errorf("read layer: %w", err)
	}
	return out, nil
}

func toPlanEntry(hdr *tar.Header) (planEntry, error) {
	e := planEntry{typ: hdr.Typeflag}
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
		e.skip = true
		return e, nil
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return e, err
	}
	e.name = name
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	switch {
	case hasMetaComponent(dir):
		e.skip = true
	case base == whiteoutOpaque:
		e.skip, e.isOpaque, e.opaque = true, true, dir
	case strings.HasPrefix(base, whiteoutMeta):
		e.skip = true
	case strings.HasPrefix(base, whiteoutPrefix):
		e.skip = true
		if t := strings.TrimPrefix(base, whiteoutPrefix); t != "" && t != "." && t != ".." {
			e.whiteout = path.Join(dir, t)
		}
	}
	if hdr.Typeflag == tar.TypeDir && !e.skip {
		e.hdr = cleanHeader(hdr, name)
	}
	if hdr.Typeflag == tar.TypeLink {
		if e.linkname, err = cleanName(hdr.Linkname); err != nil {
			return e, err
		}
	}
	return e, nil
}

// planFlatten walks the layers top first. A name is claimed by the first
// (highest, and within a layer last) entry that defines it; whiteouts and
// opaque markers hide lower layers only, so they apply after their layer.
func planFlatten(ctx context.Context, layers []v1.Layer) (*flattenPlan, error) {
	p := &flattenPlan{
		keep:       make([][]bool, len(layers)),
		dirHeaders: map[string]*tar.Header{},
		links:      map[[2]int]string{},
		needed:     map[string]bool{},
	}
	claimed := map[string]bool{} // name -> claimed by a directory
	hidden := map[string]bool{}  // whited out below this point
	opaque := map[string]bool{}  // contents hidden below this point
	isHidden := func(name string) bool {
		if _, ok := claimed[name]; ok || hidden[name] {
			return true
		}
		if opaque[""] {
			return true
		}
		for d := path.Dir(name); d != "."; d = path.Dir(d) {
			if isDir, ok := claimed[d]; (ok && !isDir) || hidden[d] || opaque[d] {
				return true
			}
		}
		return false
	}
	for i := len(layers) - 1; i >= 0; i-- {
		dg, _ := layers[i].Digest()
		entries, err := readPlanEntries(ctx, layers[i])
		if err != nil {
			return nil, fmt.Errorf("read layer %s: %w", dg, err)
		}
		keep := make([]bool, len(entries))
		var newHidden, newOpaque []string
		for j := len(entries) - 1; j >= 0; j-- {
			e := entries[j]
			switch {
			case e.isOpaque:
				newOpaque = append(newOpaque, e.opaque)
				continue
			case e.whiteout != "":
				newHidden = append(newHidden, e.whiteout)
				continue
			case e.skip:
				continue
			}
			if e.name == "" {
				// The root directory: keep its highest entry.
				if _, ok := claimed[""]; !ok && e.typ == tar.TypeDir {
					claimed[""] = true
					keep[j] = true
					p.dirHeaders[""] = e.hdr
				}
				continue
			}
			if isHidden(e.name) {
				continue
			}
			keep[j] = true
			claimed[e.name] = e.typ == tar.TypeDir
			if e.typ == tar.TypeDir {
				p.dirHeaders[e.name] = e.hdr
			}
			if e.typ == tar.TypeLink && e.linkname != "" && isHidden(e.linkname) {
				// The target this link shares was replaced above: copy it.
				p.links[[2]int{i, j}] = e.linkname
				p.needed[e.linkname] = true
			}
		}
		for _, h := range newHidden {
			hidden[h] = true
		}
		for _, o := range newOpaque {
			opaque[o] = true
		}
		p.keep[i] = keep
	}
	return p, nil
}

// spooled is the last content seen under a needed hardlink target.
type spooled struct {
	hdr  *tar.Header
	file string
}

func (p *flattenPlan) write(ctx context.Context, layers []v1.Layer, w io.Writer, tmpDir string) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	tw := tar.NewWriter(bw)
	written := map[string]bool{} // directories already written
	spool := map[string]*spooled{}
	defer func() {
		for _, s := range spool {
			os.Remove(s.file)
		}
	}()
	buf := make([]byte, 256<<10)

	writeDir := func(name string) error {
		if written[name] {
			return nil
		}
		h, ok := p.dirHeaders[name]
		if !ok {
			return nil
		}
		written[name] = true
		return tw.WriteHeader(h)
	}

	for i, l := range layers {
		dg, _ := l.Digest()
		err := func() error {
			rc, err := l.Uncompressed()
			if err != nil {
				return fmt.Errorf("open: %w", err)
			}
			defer rc.Close()
			tr := tar.NewReader(rc)
			for j := 0; ; j++ {
				if err := ctx.Err(); err != nil {
					return err
				}
				hdr, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					return fmt.Errorf("read tar: %w", err)
				}
				if j >= len(p.keep[i]) {
					return fmt.Errorf("layer changed between passes")
				}
				e, err := toPlanEntry(hdr)
				if err != nil {
					return err
				}
				if e.skip {
					continue
				}
				// Replaced content a later link still shares (a kept entry
				// is never such content: it is above every link that needs
				// a copy).
				if p.needed[e.name] && !p.keep[i][j] && (e.typ == tar.TypeReg || e.typ == tar.TypeRegA) {
					if err := spoolEntry(spool, e.name, hdr, tr, tmpDir, buf); err != nil {
						return err
					}
				}
				// A directory's parents and the directory itself go out the
				// first time the name shows up, with the surviving header.
				if err := writeParents(e.name, writeDir); err != nil {
					return err
				}
				if e.typ == tar.TypeDir {
					if err := writeDir(e.name); err != nil {
						return err
					}
					continue
				}
				if !p.keep[i][j] {
					continue
				}
				out := cleanHeader(hdr, e.name)
				if target, ok := p.links[[2]int{i, j}]; ok {
					// No content when the target was itself a hardlink: then
					// the link is written as it is.
					if s := spool[target]; s != nil {
						if err := writeSpooled(tw, s, e.name, buf); err != nil {
							return err
						}
						continue
					}
				}
				if e.typ == tar.TypeLink {
					out.Linkname = e.linkname
				}
				if err := tw.WriteHeader(out); err != nil {
					return fmt.Errorf("write %s: %w", e.name, err)
				}
				if out.Typeflag == tar.TypeReg || out.Typeflag == tar.TypeRegA {
					if _, err := io.CopyBuffer(tw, tr, buf); err != nil {
						return fmt.Errorf("write %s: %w", e.name, err)
					}
				}
			}
			_, err = io.Copy(io.Discard, rc)
			return err
		}()
		if err != nil {
			return fmt.Errorf("flatten layer %s: %w", dg, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

func writeParents(name string, writeDir func(string) error) error {
	if name == "" {
		return nil
	}
	var parents []string
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		parents = append(parents, d)
	}
	if err := writeDir(""); err != nil {
		return err
	}
	for k := len(parents) - 1; k >= 0; k-- {
		if err := writeDir(parents[k]); err != nil {
			return err
		}
	}
	return nil
}

// cleanHeader copies hdr with a normalised name and lets the tar writer
// choose the format.
func cleanHeader(hdr *tar.Header, name string) *tar.Header {
	h := *hdr
	h.Name = name
	if name == "" {
		h.Name = "./"
	} else if h.Typeflag == tar.TypeDir {
		h.Name += "/"
	}
	h.Format = tar.FormatUnknown
	if h.Typeflag == tar.TypeRegA {
		h.Typeflag = tar.TypeReg
	}
	return &h
}

func spoolEntry(spool map[string]*spooled, name string, hdr *tar.Header, r io.Reader, dir string, buf []byte) error {
	f, err := os.CreateTemp(dir, ".rootfs-link-*.tmp")
	if err != nil {
		return fmt.Errorf("keep content of %s: %w", name, err)
	}
	if _, err := io.CopyBuffer(f, r, buf); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("keep content of %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("keep content of %s: %w", name, err)
	}
	if old := spool[name]; old != nil {
		os.Remove(old.file)
	}
	spool[name] = &spooled{hdr: cleanHeader(hdr, name), file: f.Name()}
	return nil
}

func writeSpooled(tw *tar.Writer, s *spooled, name string, buf []byte) error {
	f, err := os.Open(s.file)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	h := *s.hdr
	h.Name = name
	h.Typeflag = tar.TypeReg
	h.Size = fi.Size()
	if err := tw.WriteHeader(&h); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := io.CopyBuffer(tw, f, buf); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
