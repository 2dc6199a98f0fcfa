package imagefs

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"path/filepath"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// bigLayer is an uncompressed layer holding one file of size zero bytes,
// generated while it is read; read counts the bytes read so far.
type bigLayer struct {
	name string
	size int64
	read *atomic.Int64
	// cancel is called once after cancelAt bytes.
	cancelAt int64
	cancel   func()
}

func (l *bigLayer) Digest() (v1.Hash, error) {
	sum := sha256.Sum256([]byte(l.name))
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}, nil
}
func (l *bigLayer) DiffID() (v1.Hash, error)            { return l.Digest() }
func (l *bigLayer) Size() (int64, error)                { return l.size, nil }
func (l *bigLayer) MediaType() (types.MediaType, error) { return types.OCIUncompressedLayer, nil }
func (l *bigLayer) Compressed() (io.ReadCloser, error)  { return l.Uncompressed() }
func (l *bigLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(&countReader{l: l, r: l.stream()}), nil
}

func (l *bigLayer) stream() io.Reader {
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	tw.WriteHeader(&tar.Header{Name: l.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: l.size, ModTime: testTime})
	return io.MultiReader(&hdr, io.LimitReader(zeros{}, l.size), bytes.NewReader(make([]byte, 1024)))
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

type countReader struct {
	l *bigLayer
	r io.Reader
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.l.read.Add(int64(n)) >= c.l.cancelAt && c.l.cancel != nil {
		c.l.cancel()
	}
	return n, err
}

// TestContextInsideAnEntry: an abort stops the work inside one big entry
// at the next read of the layer, not at the next entry: writing it to
// rootfs/, to rootfs.tar, and skipping it while planning rootfs.tar.
func TestContextInsideAnEntry(t *testing.T) {
	const size, at = 4 << 30, 64 << 20
	for _, c := range []struct {
		name string
		run  func(ctx context.Context, img v1.Image, dir string) error
		// cancelAt for the pass that reads the layer the second time.
		second bool
		file   string
	}{
		{"rootfs/", func(ctx context.Context, img v1.Image, dir string) error {
			return ExtractRootfs(ctx, img, filepath.Join(dir, "rootfs"), ExtractOptions{})
		}, false, "big"},
		{"rootfs.tar, planning", func(ctx context.Context, img v1.Image, dir string) error {
			return WriteRootfsTar(ctx, img, filepath.Join(dir, "rootfs.tar"))
		}, false, "big"},
		{"rootfs.tar, writing", func(ctx context.Context, img v1.Image, dir string) error {
			return WriteRootfsTar(ctx, img, filepath.Join(dir, "rootfs.tar"))
		}, true, "big"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			l := &bigLayer{name: c.file, size: size, read: new(atomic.Int64), cancelAt: at, cancel: cancel}
			if c.second {
				l.cancelAt = size + 2048 + at // the plan reads it all once
			}
			dir := t.TempDir()
			err := c.run(ctx, imageOf(t, l), dir)
			read := l.read.Load() - (l.cancelAt - at)
			t.Logf("error %v after %d MiB", err, read>>20)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("want context.Canceled, got %v", err)
			}
			if read > at+(8<<20) {
				t.Errorf("read %d MiB of the layer, the abort came after %d MiB", read>>20, at>>20)
			}
			if ents, _ := filepath.Glob(filepath.Join(dir, "*")); len(ents) != 0 {
				t.Errorf("left behind: %v", ents)
			}
		})
	}
}
