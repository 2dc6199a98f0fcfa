package testenv

import (
	"archive/tar"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Base image folders as the other Concourse image tools write them.

// SaveTarball writes img as a docker-save tarball at p, tagged when tag is
// set (registry-image-resource format: oci) or without RepoTags
// (oci-build-task).
func SaveTarball(t testing.TB, p string, img v1.Image, tag string) {
	t.Helper()
	var ref name.Reference
	var err error
	if tag != "" {
		ref, err = name.NewTag(tag)
	} else {
		d, _ := img.Digest()
		ref, err = name.NewDigest("example.invalid/untagged@" + d.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := tarball.MultiRefWrite(map[name.Reference]v1.Image{ref: img}, f); err != nil {
		t.Fatal(err)
	}
}

// OCILayout writes an OCI image layout at dir holding idx, or img alone.
func OCILayout(t testing.TB, dir string, img v1.Image, idx v1.ImageIndex) {
	t.Helper()
	if idx == nil {
		idx = mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img})
	}
	if _, err := layout.Write(dir, idx); err != nil {
		t.Fatal(err)
	}
}

// TarDir packs dir into an uncompressed tarball at p, as oci-build-task's
// image.tar with OUTPUT_OCI packs a layout.
func TarDir(t testing.TB, dir, p string) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		fi, _ := d.Info()
		h, _ := tar.FileInfoHeader(fi, "")
		h.Name = rel
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
}
