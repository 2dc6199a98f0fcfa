package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

// smallDisk mounts a tmpfs of size bytes (testenv.Tmpfs).
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	dir, _ := testenv.Tmpfs(t, "size="+size)
	return dir
}

// TestGetFullDisk: a get into a disk too small for it fails with "no space
// left on device" naming DEST, and leaves nothing that looks complete (no
// image, no version files) nor its temporary files: once while the blobs
// download, once while the image tarball is written.
func TestGetFullDisk(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{8 << 20}})
	digest := reg.Push(t, "disk/app:1", img).String()
	req := map[string]any{
		"source":  source(reg, "disk/app", map[string]any{"tag": "1"}),
		"version": map[string]any{"digest": digest},
		"params":  map[string]any{"save": true, "rootfs": true},
	}
	for _, c := range []struct {
		name, size, phase string
	}{
		// Smaller than the compressed layers.
		{"during the download", "4m", "download"},
		// The blobs (9 MiB) and rootfs/ (10 MiB) fit, the image copy not.
		{"while writing the image", "24m", "write"},
	} {
		t.Run(c.name, func(t *testing.T) {
			disk := smallDisk(t, c.size)
			dest := filepath.Join(disk, "get")
			r := runIn(t, dest, req)
			if r.err == nil {
				t.Fatalf("the get succeeded on a %s disk", c.size)
			}
			t.Logf("error: %v", r.err)
			msg := r.err.Error()
			if !strings.Contains(msg, "no space left on device") || !strings.Contains(msg, dest) {
				t.Errorf("the error does not say the disk of DEST %s is full: %q", dest, msg)
			}
			if !strings.Contains(msg, c.phase) {
				t.Errorf("the error does not name the %s phase: %q", c.phase, msg)
			}
			if c.phase == "download" && !strings.Contains(msg, "(attempt 1 of") {
				t.Errorf("a full disk was retried as if the registry had failed: %q", msg)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q", r.stdout)
			}
			assertNothingComplete(t, dest)
			if ents, err := os.ReadDir(dest); err == nil {
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				t.Logf("DEST holds %v", names)
			}
		})
	}
}
