package engine

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// saveTarball writes img as a docker-save tarball with the given tags.
func saveTarball(t *testing.T, path string, img v1.Image, tags ...string) {
	t.Helper()
	refs := map[name.Reference]v1.Image{}
	for _, tag := range tags {
		ref, err := name.NewTag(tag)
		if err != nil {
			t.Fatal(err)
		}
		refs[ref] = img
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(refs) == 0 {
		// No RepoTags, like oci-build-task's image.tar.
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		ref, err := name.NewDigest("example.invalid/untagged@" + d.String())
		if err != nil {
			t.Fatal(err)
		}
		err = tarball.MultiRefWrite(map[name.Reference]v1.Image{ref: img}, f)
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := tarball.MultiRefWrite(refs, f); err != nil {
		t.Fatal(err)
	}
}

func configName(t *testing.T, img v1.Image) string {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

func TestReadSaveManifest(t *testing.T) {
	dir := t.TempDir()
	img := testenv.BusyboxImage(t, testenv.ImageOptions{Labels: map[string]string{"a": "b"}})
	plain := filepath.Join(dir, "image.tar")
	saveTarball(t, plain, img, "example.invalid/x:1")

	// Gzip-compressed, as `docker save | gzip` makes.
	gz := gzipFile(t, plain)

	untagged := filepath.Join(dir, "untagged.tar")
	saveTarball(t, untagged, img)

	for path, tags := range map[string][]string{plain: {"example.invalid/x:1"}, gz: {"example.invalid/x:1"}, untagged: nil} {
		imgs, err := readSaveManifest(context.Background(), path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		want := []LoadedImage{{ID: configName(t, img), RepoTags: tags}}
		if !reflect.DeepEqual(imgs, want) {
			t.Fatalf("%s: %+v, want %+v", path, imgs, want)
		}
	}

	// A tarball without manifest.json, and one whose config is missing.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "layer.tar", Size: 1, Mode: 0o644})
	tw.Write([]byte("x"))
	tw.Close()
	bad := filepath.Join(dir, "bad.tar")
	os.WriteFile(bad, buf.Bytes(), 0o644)
	if _, err := readSaveManifest(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "manifest.json") {
		t.Fatalf("tarball without manifest: %v", err)
	}
	buf.Reset()
	tw = tar.NewWriter(&buf)
	m := `[{"Config":"sha256:abc","RepoTags":["x:1"],"Layers":[]}]`
	tw.WriteHeader(&tar.Header{Name: "manifest.json", Size: int64(len(m)), Mode: 0o644})
	tw.Write([]byte(m))
	tw.Close()
	os.WriteFile(bad, buf.Bytes(), 0o644)
	if _, err := readSaveManifest(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "sha256:abc") {
		t.Fatalf("tarball without its config: %v", err)
	}
}
