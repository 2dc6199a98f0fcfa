package baseimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// tarOfDir tars a folder (for an OCI-layout tarball seed).
func tarOfDir(f *testing.F, dir string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, _ := d.Info()
		h, _ := tar.FileInfoHeader(fi, "")
		h.Name = rel
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			tw.Write(b)
		}
		return nil
	})
	if err != nil {
		f.Fatal(err)
	}
	tw.Close()
	return buf.Bytes()
}

var idPattern = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// FuzzDetect feeds arbitrary bytes to the readers of every load_base
// format that holds a tarball: this resource's `image`, registry-image's
// oci format `image.tar` and oci-build-task's `image.tar` (docker-save or
// OCI layout, plain or gzip). Properties: no panic, no hang, and a folder
// Detect accepts has a well-formed image ID and can be streamed as a
// docker-save tarball.
func FuzzDetect(f *testing.F) {
	img, err := random.Image(256, 2)
	if err != nil {
		f.Fatal(err)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		f.Fatal(err)
	}
	ref, _ := name.NewTag("example.com/fuzz/base:1")
	var save bytes.Buffer
	if err := tarball.Write(ref, img, &save); err != nil {
		f.Fatal(err)
	}
	lay := f.TempDir()
	p, err := layout.Write(lay, empty.Index)
	if err != nil {
		f.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithPlatform(amd64)); err != nil {
		f.Fatal(err)
	}
	layoutTar := tarOfDir(f, lay)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(save.Bytes())
	zw.Close()
	for _, s := range [][]byte{save.Bytes(), layoutTar, gz.Bytes(), save.Bytes()[:save.Len()/2], layoutTar[:len(layoutTar)/3], []byte("not a tarball"), {}} {
		f.Add(s, uint8(0))
		f.Add(s, uint8(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, layoutKind uint8) {
		dir := t.TempDir()
		if layoutKind%2 == 0 {
			// This resource's own save folder.
			os.WriteFile(filepath.Join(dir, ImageFile), data, 0o644)
			os.WriteFile(filepath.Join(dir, ImageIDFile), []byte(cfgName.String()+"\n"), 0o644)
			os.WriteFile(filepath.Join(dir, RepositoryFile), []byte("example.com/fuzz/base\n"), 0o644)
			os.WriteFile(filepath.Join(dir, TagFile), []byte("1\n"), 0o644)
		} else {
			// oci-build-task's output.
			os.WriteFile(filepath.Join(dir, "image.tar"), data, 0o644)
		}
		watchdog := time.AfterFunc(30*time.Second, func() { panic("Detect did not return within 30 s") })
		defer watchdog.Stop()
		folder, err := Detect(dir, amd64)
		if testing.Verbose() {
			t.Logf("layout %d, %d bytes: %v", layoutKind%2, len(data), err)
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		var im Image
		switch {
		case folder.Save != nil:
			im = *folder.Save
		case folder.Image != nil:
			im = folder.Image.Image()
		default:
			return // a gzip docker-save tarball is loaded as it is
		}
		if id := im.ID(); !idPattern.MatchString(id) {
			t.Fatalf("accepted an image with ID %q", id)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		// Streaming may fail (a layer cut short); it must not panic or hang.
		_ = WriteDockerSave(ctx, io.Discard, im, true)
		if ctx.Err() != nil {
			t.Fatal("WriteDockerSave did not finish within 20 s")
		}
	})
}
