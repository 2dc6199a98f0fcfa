package baseimage

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// TarEntry locates a regular file's bytes inside an uncompressed tarball.
type TarEntry struct{ Offset, Size int64 }

// IndexTar lists the regular files of an uncompressed tarball with their
// offsets, seeking over their contents (a multi-GB tarball costs only its
// headers).
func IndexTar(f *os.File) (map[string]TarEntry, error) {
	var magic [2]byte
	if _, err := f.ReadAt(magic[:], 0); err == nil && magic == [2]byte{0x1f, 0x8b} {
		return nil, errCompressed
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	pr := &posReader{r: f}
	tr := tar.NewReader(pr)
	out := map[string]TarEntry{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if len(out) == 0 {
				return nil, errors.New("not a tarball (or an empty one)")
			}
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("not a readable tarball: %w", err)
		}
		if h.Typeflag == tar.TypeReg {
			// tar.Reader reads headers block by block without read-ahead, so
			// after Next the position is where the file's bytes start.
			out[CleanName(h.Name)] = TarEntry{Offset: pr.pos, Size: h.Size}
		}
	}
}

var errCompressed = errors.New("the tarball is gzip-compressed")

// posReader tracks the offset tar.Reader has reached; it also seeks, so
// tar.Reader skips file contents instead of reading them.
type posReader struct {
	r   io.ReadSeeker
	pos int64
}

func (p *posReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.pos += int64(n)
	return n, err
}

func (p *posReader) Seek(off int64, whence int) (int64, error) {
	n, err := p.r.Seek(off, whence)
	if err == nil {
		p.pos = n
	}
	return n, err
}

// CleanName is a tar entry name without ./ or leading slashes.
func CleanName(n string) string {
	return strings.TrimPrefix(path.Clean("/"+n), "/")
}

// tarKind tells the format from the entry names of a tarball.
func tarKind(names func(string) bool) (Kind, error) {
	switch {
	case names("manifest.json"):
		return DockerSave, nil
	case names("oci-layout") && names("index.json"):
		return OCILayoutTar, nil
	}
	return 0, errors.New("neither a docker-save tarball (no manifest.json in it) nor an OCI layout tarball (no oci-layout and index.json in it)")
}

// sniffTar tells a docker-save tarball from an OCI layout tarball by the
// files inside. A gzip-compressed tarball is read through once (docker load
// takes those; an OCI layout tarball must be plain to be read in place).
func sniffTar(p string) (Kind, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	entries, err := IndexTar(f)
	if errors.Is(err, errCompressed) {
		return sniffGzipTar(f)
	}
	if err != nil {
		return 0, err
	}
	return tarKind(func(n string) bool { _, ok := entries[n]; return ok })
}

func sniffGzipTar(f *os.File) (Kind, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		return 0, fmt.Errorf("opening gzip: %w", err)
	}
	defer zr.Close()
	seen := map[string]bool{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("not a readable tarball: %w", err)
		}
		seen[CleanName(h.Name)] = true
		if seen["manifest.json"] {
			break
		}
	}
	k, err := tarKind(func(n string) bool { return seen[n] })
	if err == nil && k == OCILayoutTar {
		return 0, errors.New("a gzip-compressed OCI layout tarball: decompress it (gunzip) so its blobs can be read in place")
	}
	return k, err
}

// Peek reads up to n bytes at off (for compression sniffing).
func peek(r io.ReaderAt, off, size int64, n int) []byte {
	b := make([]byte, min(int64(n), size))
	m, _ := r.ReadAt(b, off)
	return b[:m]
}

// IsZstd reports whether b starts with the zstd frame magic.
func IsZstd(b []byte) bool { return bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}) }
