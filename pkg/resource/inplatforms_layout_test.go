package resource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/download"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// downloaded puts img's layer blobs into dir as pkg/download leaves them.
func downloaded(t *testing.T, img v1.Image, dir string) {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		h, _ := l.Digest()
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(download.BlobPath(dir, h), os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, rc); err != nil {
			t.Fatal(err)
		}
		f.Close()
		rc.Close()
	}
}

func hashFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestLayoutWriter(t *testing.T) {
	dl, dest := t.TempDir(), t.TempDir()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	downloaded(t, img, dl)
	lw, err := newLayoutWriter(filepath.Join(dest, LayoutDir))
	if err != nil {
		t.Fatal(err)
	}
	digest, _ := img.Digest()
	if err := lw.addImage(context.Background(), img, digest, dl); err != nil {
		t.Fatal(err)
	}
	// A second image sharing nothing but being added twice keeps the blobs.
	if err := lw.addImage(context.Background(), img, digest, dl); err != nil {
		t.Fatalf("adding the same image again: %v", err)
	}
	// Not a layout until index.json is written.
	if _, err := baseimage.Detect(dest, baseimage.HostPlatform()); err == nil {
		t.Fatal("Detect took a layout without index.json")
	}
	mt, _ := img.MediaType()
	raw, _ := img.RawManifest()
	index, err := singleImageIndex(v1.Descriptor{MediaType: mt, Size: int64(len(raw)), Digest: digest}, protocol.Platform{OS: "linux", Architecture: runtime.GOARCH})
	if err != nil {
		t.Fatal(err)
	}
	if err := lw.finish(index); err != nil {
		t.Fatal(err)
	}
	blobs, _ := os.ReadDir(filepath.Join(dest, LayoutDir, "blobs", "sha256"))
	if len(blobs) != 4 { // manifest, config, two layers
		t.Errorf("%d blobs, want 4", len(blobs))
	}
	for _, b := range blobs {
		p := filepath.Join(dest, LayoutDir, "blobs", "sha256", b.Name())
		if got := hashFile(t, p); got != b.Name() {
			t.Errorf("blob %s hashes to %s", b.Name(), got)
		}
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o644 {
			t.Errorf("blob %s has mode %v", b.Name(), fi.Mode())
		}
	}
	f, err := baseimage.Detect(dest, baseimage.HostPlatform())
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigName()
	if f.Kind != baseimage.OCILayoutDir || f.ID() != cfg.String() || len(f.Image.Layers) != 2 {
		t.Errorf("Detect: %+v", f)
	}
}

func TestLayoutWriterRefusesWrongBytes(t *testing.T) {
	lw, err := newLayoutWriter(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}
	if err := lw.addBytes(h, []byte("x")); err == nil || !strings.Contains(err.Error(), "hashes to sha256:2d71") {
		t.Errorf("addBytes: %v", err)
	}
	if err := lw.addFile(context.Background(), h, filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "is missing") {
		t.Errorf("addFile: %v", err)
	}
}
