package baseimage

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"

	"github.com/concourse-docker/docker-image-resource/pkg/ctxio"
	"github.com/klauspost/compress/zstd"
)

// Image is one image as blobs on disk: enough to write a docker-save
// tarball from a layout, or to rewrite a docker-save tarball.
type Image struct {
	RawConfig []byte
	Layers    []Blob
	// LayerNames are a docker-save tarball's layer entry names, in Layers'
	// order (tarball.Write names them by digest); nil for layouts.
	LayerNames []string
	// Foreign: manifest.json lists LayerSources (non-distributable layers).
	Foreign bool
	// ConfigName is a docker-save tarball's config entry name; "" for
	// layouts.
	ConfigName string
}

// MaxConfig caps an image config or small blob read whole.
const MaxConfig = 64 << 20

// Image is the layout image's config and layer blobs.
func (img *LayoutImage) Image() Image { return Image{RawConfig: img.RawConfig, Layers: img.Layers} }

// ID is the config digest: the image ID docker load gives.
func (img Image) ID() string {
	s := sha256.Sum256(img.RawConfig)
	return "sha256:" + hex.EncodeToString(s[:])
}

// HasZstd reports whether any layer blob starts with the zstd magic.
func (img Image) HasZstd() bool {
	for _, bl := range img.Layers {
		f, err := os.Open(bl.File)
		if err != nil {
			continue
		}
		z := IsZstd(peek(f, bl.Offset, bl.Size, 4))
		f.Close()
		if z {
			return true
		}
	}
	return false
}

// saveEntry is one entry of a docker-save manifest.json.
type saveEntry struct {
	Config       string
	RepoTags     []string
	Layers       []string
	LayerSources map[string]json.RawMessage `json:",omitempty"`
}

// ReadSave reads the single image of an uncompressed docker-save tarball
// as blobs in place.
func ReadSave(p string) (Image, error) {
	f, err := os.Open(p)
	if err != nil {
		return Image{}, err
	}
	defer f.Close()
	entries, err := IndexTar(f)
	if err != nil {
		return Image{}, err
	}
	mf, ok := entries["manifest.json"]
	if !ok {
		return Image{}, errors.New("no manifest.json: not a docker-save tarball")
	}
	b := &blobs{tarPath: p, entries: entries}
	raw, err := b.read(Blob{File: p, Offset: mf.Offset, Size: mf.Size}, maxManifest)
	if err != nil {
		return Image{}, fmt.Errorf("manifest.json: %w", err)
	}
	var ms []saveEntry
	if err := json.Unmarshal(raw, &ms); err != nil {
		return Image{}, fmt.Errorf("parsing manifest.json: %w", err)
	}
	if len(ms) != 1 {
		return Image{}, fmt.Errorf("it holds %d images, want 1", len(ms))
	}
	cb, err := b.file(CleanName(ms[0].Config))
	if err != nil {
		return Image{}, fmt.Errorf("config: %w", err)
	}
	img := Image{ConfigName: CleanName(ms[0].Config)}
	if img.RawConfig, err = b.read(cb, MaxConfig); err != nil {
		return Image{}, fmt.Errorf("config: %w", err)
	}
	for _, l := range ms[0].Layers {
		bl, err := b.file(CleanName(l))
		if err != nil {
			return Image{}, fmt.Errorf("layer: %w", err)
		}
		img.Layers = append(img.Layers, bl)
		img.LayerNames = append(img.LayerNames, l)
	}
	img.Foreign = len(ms[0].LayerSources) > 0
	return img, nil
}

// WriteDockerSave writes img as a docker-save tarball without RepoTags
// (the caller tags the loaded image by its ID). Layers are written as they
// are stored, except zstd layers when decompressZstd is set: those are
// written uncompressed (daemons before Docker 23 cannot load zstd; they
// store layers uncompressed anyway, so nothing is lost). A decompressed
// layer is read twice: once for its size, which the tar header needs first.
func WriteDockerSave(ctx context.Context, w io.Writer, img Image, decompressZstd bool) error {
	tw := tar.NewWriter(w)
	id := img.ID()
	cfgName := id[len("sha256:"):] + ".json"
	if err := writeEntry(tw, cfgName, int64(len(img.RawConfig)), func(w io.Writer) error {
		_, err := w.Write(img.RawConfig)
		return err
	}); err != nil {
		return err
	}
	var names []string
	for i, bl := range img.Layers {
		f, err := os.Open(bl.File)
		if err != nil {
			return err
		}
		zst := decompressZstd && IsZstd(peek(f, bl.Offset, bl.Size, 4))
		f.Close()
		name := fmt.Sprintf("layer-%d.tar", i)
		size, open := bl.Size, bl.Open
		if zst {
			open = func() (io.ReadCloser, error) { return zstdReader(bl) }
			if size, err = countBytes(ctx, open); err != nil {
				return fmt.Errorf("decompressing zstd layer %d: %w", i, err)
			}
		}
		names = append(names, name)
		if err := writeEntry(tw, name, size, copyFrom(ctx, open, size, fmt.Sprintf("layer %d", i))); err != nil {
			return err
		}
	}
	m, err := json.Marshal([]saveEntry{{Config: cfgName, RepoTags: []string{}, Layers: names}})
	if err != nil {
		return err
	}
	if err := writeEntry(tw, "manifest.json", int64(len(m)), func(w io.Writer) error { _, err := w.Write(m); return err }); err != nil {
		return err
	}
	return tw.Close()
}

// OpenTar opens a tarball, plain or gzip-compressed, for reading from the
// start. A plain one is the file itself, so tar.Reader seeks over contents
// it is not asked for.
func OpenTar(p string) (io.Reader, func() error, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, err
	}
	var magic [2]byte
	if _, err := f.ReadAt(magic[:], 0); err != nil || magic != [2]byte{0x1f, 0x8b} {
		return f, f.Close, nil
	}
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("opening gzip: %w", err)
	}
	return zr, func() error { zr.Close(); return f.Close() }, nil
}

// CopySave writes the docker-save tarball at p (plain or gzip-compressed)
// to w as a plain tarball that names no image: every manifest.json entry's
// RepoTags is emptied and the legacy repositories file is left out, so
// docker load tags nothing and the caller gives the image the name its
// folder gives. A tarball's own tags could otherwise move a name another
// folder gives (the one a FROM uses) to its image. configs replaces the
// content of config entries, by entry name. Everything else is copied as it
// is, entry by entry: nothing is held in memory but manifest.json.
func CopySave(ctx context.Context, w io.Writer, p string, configs map[string][]byte) error {
	r, closeTar, err := OpenTar(p)
	if err != nil {
		return err
	}
	defer closeTar()
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	sawManifest := false
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", p, err)
		}
		name := CleanName(h.Name)
		var body []byte
		switch {
		case h.Typeflag != tar.TypeReg:
		case name == "repositories":
			continue
		case name == "manifest.json":
			if body, err = untagManifest(tr); err != nil {
				return fmt.Errorf("%s: manifest.json: %w", p, err)
			}
			sawManifest = true
		case configs[name] != nil:
			body = configs[name]
		}
		if body != nil {
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if body != nil {
			_, err = tw.Write(body)
		} else {
			_, err = io.Copy(tw, ctxio.Reader(ctx, tr)) // nothing for folders and links
		}
		if err != nil {
			return err
		}
	}
	if !sawManifest {
		return fmt.Errorf("%s has no manifest.json: not a docker-save tarball", p)
	}
	return tw.Close()
}

// untagManifest is manifest.json with every entry's RepoTags emptied; the
// other fields are kept as they are.
func untagManifest(r io.Reader) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r, maxManifest+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxManifest {
		return nil, fmt.Errorf("larger than %d bytes", maxManifest)
	}
	var entries []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, fmt.Errorf("parsing: %w", err)
	}
	for _, e := range entries {
		e["RepoTags"] = json.RawMessage("[]")
	}
	return json.Marshal(entries)
}

// maxManifest caps a docker-save manifest.json, which lists a few names per
// image.
const maxManifest = 1 << 20

// copyFrom is a writeEntry body: what open reads, which must be size
// bytes, stopping when ctx ends.
func copyFrom(ctx context.Context, open func() (io.ReadCloser, error), size int64, what string) func(io.Writer) error {
	return func(w io.Writer) error {
		rc, err := open()
		if err != nil {
			return err
		}
		defer rc.Close()
		n, err := io.Copy(w, ctxio.Reader(ctx, rc))
		if err == nil && n != size {
			err = fmt.Errorf("%s: read %d bytes, expected %d", what, n, size)
		}
		return err
	}
}

func writeEntry(tw *tar.Writer, name string, size int64, body func(io.Writer) error) error {
	if err := tw.WriteHeader(&tar.Header{Name: path.Clean(name), Typeflag: tar.TypeReg, Mode: 0o644, Size: size}); err != nil {
		return err
	}
	return body(tw)
}

func zstdReader(bl Blob) (io.ReadCloser, error) {
	rc, err := bl.Open()
	if err != nil {
		return nil, err
	}
	zr, err := zstd.NewReader(rc)
	if err != nil {
		rc.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, closeFunc(func() error { zr.Close(); return rc.Close() })}, nil
}

type closeFunc func() error

func (c closeFunc) Close() error { return c() }

func countBytes(ctx context.Context, open func() (io.ReadCloser, error)) (int64, error) {
	rc, err := open()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return io.Copy(io.Discard, ctxio.Reader(ctx, rc))
}
