package engine

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sirupsen/logrus"
)

// saveFolder writes img as a get with save: true would and detects it.
func saveFolder(t *testing.T, img v1.Image) *baseimage.Folder {
	t.Helper()
	dir := t.TempDir()
	testenv.SaveTarball(t, filepath.Join(dir, BaseImageFile), img, "seed/base:1")
	id, _ := img.ConfigName()
	for n, v := range map[string]string{BaseImageIDFile: id.String(), BaseRepositoryFile: "seed/base", BaseTagFile: "1"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := baseimage.Detect(dir, baseimage.HostPlatform())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestPlanSeeding: folders read in place with gzip, zstd or plain layers
// are written into the layer store; a tarball compressed as a whole is
// loaded with docker load, and the log says why.
func TestPlanSeeding(t *testing.T) {
	log, hook := testLog(t)
	log.Logger.SetLevel(logrus.DebugLevel)
	gz := saveFolder(t, testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{100}}))
	zst := saveFolder(t, testenv.BusyboxImage(t, testenv.ImageOptions{Compression: "zstd"}))
	plain := saveFolder(t, testenv.BusyboxImage(t, testenv.ImageOptions{Compression: "none", Labels: map[string]string{"plain": "1"}}))

	whole := saveFolder(t, testenv.BusyboxImage(t, testenv.ImageOptions{}))
	raw, err := os.ReadFile(whole.Path)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(raw)
	zw.Close()
	if err := os.WriteFile(whole.Path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	whole, err = baseimage.Detect(whole.Dir, baseimage.HostPlatform())
	if err != nil {
		t.Fatal(err)
	}

	s := PlanSeeding([]*baseimage.Folder{gz, zst, plain, whole}, LoadOptions{}, log)
	if s == nil {
		t.Fatal("PlanSeeding wrote nothing")
	}
	if len(s.images) != 3 {
		t.Errorf("%d images to write, want 3", len(s.images))
	}
	for _, f := range []*baseimage.Folder{gz, zst, plain} {
		if !s.folders[f] {
			t.Errorf("%s (%s) is not written into the layer store", f.Dir, f.Kind)
		}
	}
	if s.folders[whole] {
		t.Error("a tarball gzip-compressed as a whole is written into the layer store")
	}
	if countContaining(messages(hook), "compressed as a whole") != 1 {
		t.Errorf("the log does not say why the compressed tarball is loaded: %q", messages(hook))
	}
	if s.Holds(gz) {
		t.Error("Holds before Write")
	}
	if PlanSeeding([]*baseimage.Folder{whole}, LoadOptions{}, log) != nil {
		t.Error("PlanSeeding of nothing writable is not nil")
	}
}
