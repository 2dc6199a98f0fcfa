package test

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// bigFileSize is the file TestAbortGetWriting aborts the get in the middle of.
const bigFileSize = 3 << 30

// bigFileTar writes a tar holding name, a file of size zero bytes.
func bigFileTar(name string, size int64) func(io.Writer) error {
	return func(w io.Writer) error {
		tw := tar.NewWriter(w)
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: testenv.DefaultCreated}); err != nil {
			return err
		}
		buf := make([]byte, 1<<20)
		for left := size; left > 0; left -= int64(len(buf)) {
			if _, err := tw.Write(buf[:min(left, int64(len(buf)))]); err != nil {
				return err
			}
		}
		return tw.Close()
	}
}

// growing is true once a file matching glob has reached size bytes.
func growing(glob string, size int64) bool {
	ms, _ := filepath.Glob(glob)
	for _, m := range ms {
		if fi, err := os.Stat(m); err == nil && fi.Size() >= size {
			return true
		}
	}
	return false
}

// TestAbortGetWriting sends SIGTERM to the built in binary while it writes
// a 3 GiB file: into rootfs/ (a 3 GiB file in the layer), into rootfs.tar
// (a 3 GiB file under /dev, which rootfs/ leaves out) and into image (a
// 3 GiB uncompressed layer, from a loopback server that makes it up as it
// sends it). Copies inside an entry check the context between chunks, so
// the get exits within a second, says in which phase, and leaves nothing
// that looks complete, nor its temporary files. Before, the entry was
// copied to its end first (rootfs/: 2.6 s and growing with the file).
func TestAbortGetWriting(t *testing.T) {
	bin := buildBinaries(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	blobs := t.TempDir()
	base := testenv.BusyboxImage(t, testenv.ImageOptions{})
	rootfsDigest := reg.Push(t, "abort/bigfile:1", testenv.AppendLayers(t, base, testenv.FileLayer(t, blobs, "gzip", bigFileTar("big", bigFileSize)))).String()
	devDigest := reg.Push(t, "abort/bigdev:1", testenv.AppendLayers(t, base, testenv.FileLayer(t, blobs, "gzip", bigFileTar("dev/big", bigFileSize)))).String()
	os.RemoveAll(blobs)

	// The image phase needs a 3 GiB blob: an uncompressed layer, from a
	// server that generates it (the real registry would store it).
	h := startHostileRegistry(t)
	layerDigest, layer := h.add(t, "blobs", string(types.OCIUncompressedLayer), false, bigFileTar("dev/big", bigFileSize))
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest.String()}}})
	cfgDigest, cfgObj := h.addBytes(t, "blobs", string(types.OCIConfigJSON), cfg)
	imageDigest := h.addImage(t, v1.Descriptor{MediaType: types.OCIConfigJSON, Size: cfgObj.size, Digest: cfgDigest},
		[]v1.Descriptor{{MediaType: types.OCIUncompressedLayer, Size: layer.size, Digest: layerDigest}}, nil, false)

	// No daemon of another test may start meanwhile: the leftover check
	// compares the whole host before and after.
	unlock := testenv.LockDockerd(t)
	defer unlock()
	for _, c := range []struct {
		phase, glob string
		req         map[string]any
	}{
		{"writing rootfs/", ".rootfs.tmp-*/big", map[string]any{
			"source": source(reg, "abort/bigfile", map[string]any{"tag": "1"}), "version": map[string]any{"digest": rootfsDigest},
		}},
		{"writing rootfs.tar", ".rootfs.tar.tmp-*", map[string]any{
			"source": source(reg, "abort/bigdev", map[string]any{"tag": "1"}), "version": map[string]any{"digest": devDigest},
			"params": map[string]any{"rootfs": true},
		}},
		{"writing rootfs/ and image", ".image.tmp-*", map[string]any{
			"source": map[string]any{"repository": h.Host + "/abort/bigblob"}, "version": map[string]any{"digest": imageDigest.String()},
			"params": map[string]any{"save": true},
		}},
	} {
		t.Run(c.phase, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "get")
			glob := filepath.Join(dest, c.glob)
			var atSignal int64
			a := abortBinary(t, bin, "in", c.req, func(string) bool {
				if !growing(glob, 256<<20) {
					return false
				}
				ms, _ := filepath.Glob(glob)
				if fi, err := os.Stat(ms[0]); err == nil {
					atSignal = fi.Size()
				}
				return true
			}, dest)
			t.Logf("SIGTERM when %s held %d MiB of %d", c.glob, atSignal>>20, bigFileSize>>20)
			assertAbortMessage(t, a, c.phase)
			if a.took > time.Second {
				t.Errorf("the get exited %s after SIGTERM, more than a second", a.took.Round(time.Millisecond))
			}
			assertNothingComplete(t, dest)
			if ms, _ := filepath.Glob(glob); len(ms) > 0 {
				t.Errorf("the partly written file is left: %v", ms)
			}
		})
	}
}
