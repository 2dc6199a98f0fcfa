package test

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// TestPutWritesBaseIntoLayerStore is issue 14's put: a load_base of a get
// with save: true goes straight into the new dockerd's layer store before
// it starts (the log says so), the build uses it without a pull (the
// registry no longer has it), sees its files with the upper layer's
// whiteout applied, and the pushed image, pulled afresh, has every layer
// hash to its diff ID.
func TestPutWritesBaseIntoLayerStore(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	base := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{300 << 10, 200 << 10}})
	base = testenv.AppendLayers(t, base, testenv.LayerFromFiles(t, []testenv.File{
		{Name: "data/", Type: tar.TypeDir},
		{Name: "data/.wh.random-0"},
		{Name: "data/note", Content: []byte("from the top layer\n"), Uid: 1000, Gid: 1000},
	}, "gzip"))
	baseDigest := reg.Push(t, "team/seeded:1.0", base).String()

	srcDir := t.TempDir()
	getOK(t, filepath.Join(srcDir, "base"), map[string]any{
		"source": source(reg, "team/seeded", map[string]any{"tag": "1.0"}), "version": map[string]any{"digest": baseDigest},
		"params": map[string]any{"save": true},
	})
	reg.Delete(t, "team/seeded@"+baseDigest)
	writeFiles(t, srcDir, map[string]string{
		"app/Dockerfile": "FROM " + reg.Host + "/team/seeded:1.0\n" +
			"RUN test ! -e /data/random-0 && test -s /data/random-1 && grep -q 'top layer' /data/note && test \"$(stat -c %u /data/note)\" = 1000 && echo ok > /built\n",
	})
	r := runOut(t, srcDir, map[string]any{
		"source": source(reg, "team/app", nil),
		"params": map[string]any{"build": "app", "load_base": "base"},
	})
	if r.err != nil {
		t.Fatalf("out failed: %v\nstderr:\n%s", r.err, r.stderr)
	}
	if testing.Verbose() {
		t.Logf("out's log:\n%s", r.stderr)
	}
	for _, want := range []string{
		"load: writing base " + reg.Host + "/team/seeded:1.0 (4 layers, ",
		fmt.Sprintf("straight into dockerd's layer store, %d at a time", min(runtime.GOMAXPROCS(0), 4)),
		"load: wrote 4 layers into dockerd's layer store in ",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("the log does not say %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "loading the usual way") || strings.Contains(r.stderr, "loading it with docker load") {
		t.Errorf("the put fell back to docker load:\n%s", r.stderr)
	}
	var resp protocol.Response
	if err := json.Unmarshal([]byte(r.stdout), &resp); err != nil {
		t.Fatal(err)
	}
	meta := map[string]string{}
	for _, m := range resp.Metadata {
		meta[m.Name] = m.Value
	}
	if meta["time load"] == "" || meta["time load"] == "0s" {
		t.Errorf("metadata has no time load for writing the base: %v", resp.Metadata)
	}
	img, err := remote.Image(reg.Ref(t, "team/app:latest"), reg.RemoteOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("the pushed image does not validate (layers against diff IDs): %v", err)
	}
	layers, _ := img.Layers()
	if len(layers) != 5 {
		t.Errorf("pushed image has %d layers, want the base's 4 and the RUN's", len(layers))
	}
}
