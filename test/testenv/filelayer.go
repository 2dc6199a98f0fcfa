package testenv

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

// FileLayer writes the tar stream that write produces into a blob file in
// dir, once (gzip at its fastest level, or "none" for an uncompressed
// layer), hashing it on the way, and returns a layer that reads that file.
// For layers too big to hold in memory or to compress twice: millions of
// entries, gigabytes of content.
func FileLayer(t testing.TB, dir, compression string, write func(io.Writer) error) v1.Layer {
	t.Helper()
	f, err := os.CreateTemp(dir, "layer-*.blob")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l := &fileLayer{path: f.Name(), mt: types.DockerLayer}
	digest, diff := sha256.New(), sha256.New()
	blob := &countWriter{w: io.MultiWriter(f, digest)}
	var tarOut io.Writer
	var zw *gzip.Writer
	switch compression {
	case "", "gzip":
		zw, _ = gzip.NewWriterLevel(blob, gzip.BestSpeed)
		tarOut = io.MultiWriter(zw, diff)
	case "none":
		l.mt = types.DockerUncompressedLayer
		tarOut = io.MultiWriter(blob, diff)
	default:
		t.Fatalf("testenv: FileLayer compression %q: want gzip or none", compression)
	}
	if err := write(tarOut); err != nil {
		t.Fatalf("testenv: writing layer %s: %v", filepath.Base(f.Name()), err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	l.size = blob.n
	l.digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(digest.Sum(nil))}
	l.diffID = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(diff.Sum(nil))}
	return l
}

type fileLayer struct {
	path           string
	mt             types.MediaType
	size           int64
	digest, diffID v1.Hash
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }

func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil || l.mt == types.DockerUncompressedLayer {
		return f, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// EmptyFiles writes a tar of n empty files, 1000 to a folder
// (files/d00000/f0000000 ...): a layer of many entries and few bytes.
func EmptyFiles(n int) func(io.Writer) error {
	return func(w io.Writer) error {
		tw := tar.NewWriter(w)
		for i := range n {
			dir := fmt.Sprintf("files/d%05d/", i/1000)
			if i%1000 == 0 {
				if err := tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: DefaultCreated}); err != nil {
					return err
				}
			}
			if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("%sf%07d", dir, i), Typeflag: tar.TypeReg, Mode: 0o644, ModTime: DefaultCreated}); err != nil {
				return err
			}
		}
		return tw.Close()
	}
}
