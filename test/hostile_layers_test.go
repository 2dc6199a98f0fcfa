package test

import (
	"archive/tar"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

// symlinkChain is a folder "target" and n symlinks l1 -> target, l2 -> l1,
// ..., then a file reached through the last one.
func symlinkChain(n int) []testenv.File {
	files := []testenv.File{{Name: "target/", Type: tar.TypeDir}, {Name: "l1", Type: tar.TypeSymlink, Linkname: "target"}}
	for i := 2; i <= n; i++ {
		files = append(files, testenv.File{Name: fmt.Sprintf("l%d", i), Type: tar.TypeSymlink, Linkname: fmt.Sprintf("l%d", i-1)})
	}
	return append(files, testenv.File{Name: fmt.Sprintf("l%d/sub/file", n), Content: []byte("through the chain\n")})
}

// TestGetSymlinkChains: a path in a layer may pass 40 symlinks, as Linux
// allows (MAXSYMLINKS); one that needs 41 fails the get, as the kernel
// would fail docker's extraction, instead of being followed up to 255.
func TestGetSymlinkChains(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	get := func(t *testing.T, n int) (string, result) {
		t.Helper()
		img := testenv.AppendLayers(t, testenv.BusyboxImage(t, testenv.ImageOptions{}), testenv.LayerFromFiles(t, symlinkChain(n), "gzip"))
		repo := fmt.Sprintf("hostile/chain-%d", n)
		digest := reg.Push(t, repo+":1", img).String()
		dest := filepath.Join(t.TempDir(), "get")
		return dest, runIn(t, dest, map[string]any{
			"source":  source(reg, repo, map[string]any{"tag": "1"}),
			"version": map[string]any{"digest": digest},
			"params":  map[string]any{"rootfs": true},
		})
	}
	t.Run("40 links", func(t *testing.T) {
		dest, r := get(t, 40)
		if r.err != nil {
			t.Fatalf("the get failed: %v\n%s", r.err, r.stderr)
		}
		if got := readFile(t, filepath.Join(dest, "rootfs", "target", "sub", "file")); got != "through the chain\n" {
			t.Errorf("rootfs/target/sub/file = %q", got)
		}
		if l, err := os.Readlink(filepath.Join(dest, "rootfs", "l40")); err != nil || l != "l39" {
			t.Errorf("rootfs/l40 -> %q (%v), want l39", l, err)
		}
	})
	t.Run("41 links", func(t *testing.T) {
		dest, r := get(t, 41)
		if r.err == nil {
			t.Fatal("the get succeeded")
		}
		t.Logf("error: %v", r.err)
		for _, want := range []string{"write rootfs/", "l41/sub/file", "more than 40 symbolic links", "too many levels of symbolic links"} {
			if !strings.Contains(r.err.Error(), want) {
				t.Errorf("the error does not say %q", want)
			}
		}
		assertNothingComplete(t, dest)
	})
}
