package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/resource"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Folders as the other Concourse image tools write them.

func hashOf(t *testing.T, f func() (v1.Hash, error)) string {
	t.Helper()
	h, err := f()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

// checkOnBase: the pushed image is the base's layers (original blobs,
// same diff IDs) plus the build's.
func checkOnBase(t *testing.T, reg *testenv.Registry, ref string, base v1.Image) {
	t.Helper()
	m, bm := checkBuiltOn(t, reg, ref, base)
	for i := range bm.Layers {
		if m.Layers[i].Digest != bm.Layers[i].Digest {
			t.Errorf("%s layer %d: blob %s, not the base's original %s", ref, i, m.Layers[i].Digest, bm.Layers[i].Digest)
		}
	}
}

// checkBuiltOn: the pushed image has the base's layers (same diff IDs, in
// any compression) and label, plus the build's layers. It returns the
// pushed image's manifest and the base's.
func checkBuiltOn(t *testing.T, reg *testenv.Registry, ref string, base v1.Image) (*v1.Manifest, *v1.Manifest) {
	t.Helper()
	img, err := remote.Image(reg.Ref(t, ref), reg.RemoteOptions()...)
	if err != nil {
		t.Fatalf("%s: %v", ref, err)
	}
	cfg, _ := img.ConfigFile()
	bcfg, _ := base.ConfigFile()
	m, _ := img.Manifest()
	bm, _ := base.Manifest()
	if len(cfg.RootFS.DiffIDs) <= len(bcfg.RootFS.DiffIDs) {
		t.Fatalf("%s has %d layers, the base %d: the build added none", ref, len(cfg.RootFS.DiffIDs), len(bcfg.RootFS.DiffIDs))
	}
	for i, d := range bcfg.RootFS.DiffIDs {
		if cfg.RootFS.DiffIDs[i] != d {
			t.Errorf("%s layer %d: diff ID %s, the base's %s", ref, i, cfg.RootFS.DiffIDs[i], d)
		}
	}
	if cfg.Config.Labels["base"] != bcfg.Config.Labels["base"] {
		t.Errorf("%s: label base=%q, want %q", ref, cfg.Config.Labels["base"], bcfg.Config.Labels["base"])
	}
	return m, bm
}

// TestPutForeignBaseFormats: every folder layout of registry-image-resource
// and oci-build-task works as load_base with the base deleted from the
// registry, so FROM can only be satisfied by the loaded image. The pushed
// image carries the base's original blobs.
func TestPutForeignBaseFormats(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	srcDir := t.TempDir()
	n := uint64(0)
	// newBase pushes a distinct base (so no build can hit another's cache)
	// and deletes it again, returning the image and its manifest digest.
	newBase := func(repoTag string, o testenv.ImageOptions) (v1.Image, string) {
		n++
		o.RandomLayers, o.RandomSeed = []int64{32 << 10}, n
		o.Labels = map[string]string{"base": repoTag}
		img := testenv.BusyboxImage(t, o)
		d := reg.Push(t, repoTag, img)
		repo, _, _ := strings.Cut(repoTag, ":")
		reg.Delete(t, repo+"@"+d.String())
		return img, d.String()
	}
	build := func(dir, from string) {
		writeFiles(t, srcDir, map[string]string{dir + "/Dockerfile": "FROM " + from + "\nRUN echo built > /built\n"})
	}

	t.Run("registry-image format: oci (image.tar, repository, tag, digest)", func(t *testing.T) {
		img, digest := newBase("ri/oci:1", testenv.ImageOptions{})
		dir := filepath.Join(srcDir, "ri-oci")
		testenv.SaveTarball(t, filepath.Join(dir, "image.tar"), img, reg.Host+"/ri/oci:1")
		writeFiles(t, dir, map[string]string{"repository": reg.Host + "/ri/oci", "tag": "1", "digest": digest})
		build("ri-oci-app", reg.Host+"/ri/oci:1")
		putOK(t, srcDir, map[string]any{"source": source(reg, "ri/oci-app", nil), "params": map[string]any{"build": "ri-oci-app", "load_base": "ri-oci"}})
		checkOnBase(t, reg, "ri/oci-app:latest", img)
	})

	t.Run("registry-image format: oci-layout with a multi-platform index", func(t *testing.T) {
		plats := []v1.Platform{{OS: "linux", Architecture: "arm64", Variant: "v8"}, {OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm", Variant: "v7"}}
		n++
		idx := testenv.MultiPlatformIndex(t, plats, testenv.ImageOptions{MediaType: "oci", RandomLayers: []int64{32 << 10}, RandomSeed: n, Labels: map[string]string{"base": "ri/layout"}})
		d := reg.PushIndex(t, "ri/layout:2", idx)
		reg.Delete(t, "ri/layout@"+d.String())
		dir := filepath.Join(srcDir, "ri-layout")
		// registry-image-resource's index.json points at the index.
		testenv.OCILayout(t, filepath.Join(dir, "oci"), nil, mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: idx}))
		writeFiles(t, dir, map[string]string{"repository": reg.Host + "/ri/layout", "tag": "2", "digest": d.String()})
		build("ri-layout-app", reg.Host+"/ri/layout:2")
		r := runOut(t, srcDir, map[string]any{"source": source(reg, "ri/layout-app", nil), "params": map[string]any{"build": "ri-layout-app", "load_base": "ri-layout"}})
		if r.err != nil {
			t.Fatalf("out: %v\n%s", r.err, r.stderr)
		}
		if !strings.Contains(r.stderr, "linux/amd64") {
			t.Errorf("the log does not name the chosen platform:\n%s", r.stderr)
		}
		var amd v1.Image
		im, _ := idx.IndexManifest()
		for _, m := range im.Manifests {
			if m.Platform.Architecture == "amd64" {
				amd, _ = idx.Image(m.Digest)
			}
		}
		checkOnBase(t, reg, "ri/layout-app:latest", amd)
		img, _ := remote.Image(reg.Ref(t, "ri/layout-app:latest"), reg.RemoteOptions()...)
		cfg, _ := img.ConfigFile()
		if cfg.Config.Labels["platform"] != "linux/amd64" {
			t.Errorf("built on %q, want the linux/amd64 image", cfg.Config.Labels["platform"])
		}
	})

	t.Run("oci-build-task image.tar without RepoTags, object form names it", func(t *testing.T) {
		img, _ := newBase("bt/save:3", testenv.ImageOptions{})
		dir := filepath.Join(srcDir, "bt-save")
		testenv.SaveTarball(t, filepath.Join(dir, "image.tar"), img, "")
		writeFiles(t, dir, map[string]string{"digest": hashOf(t, img.ConfigName)})
		build("bt-save-app", reg.Host+"/bt/save:3")
		putOK(t, srcDir, map[string]any{"source": source(reg, "bt/save-app", nil), "params": map[string]any{"build": "bt-save-app",
			"load_base": map[string]any{"path": "bt-save", "repository": reg.Host + "/bt/save", "tag": 3}}})
		checkOnBase(t, reg, "bt/save-app:latest", img)
	})

	t.Run("oci-build-task OUTPUT_OCI image.tar (OCI layout tarball) in load_bases", func(t *testing.T) {
		img, digest := newBase("bt/ocitar:4", testenv.ImageOptions{MediaType: "oci"})
		dir := filepath.Join(srcDir, "bt-ocitar")
		l := t.TempDir()
		testenv.OCILayout(t, l, img, nil)
		os.MkdirAll(dir, 0o755)
		testenv.TarDir(t, l, filepath.Join(dir, "image.tar"))
		writeFiles(t, dir, map[string]string{"digest": digest})
		build("bt-ocitar-app", reg.Host+"/bt/ocitar:4")
		putOK(t, srcDir, map[string]any{"source": source(reg, "bt/ocitar-app", nil), "params": map[string]any{"build": "bt-ocitar-app",
			"load_bases": []any{map[string]any{"path": "bt-ocitar", "repository": reg.Host + "/bt/ocitar", "tag": "4"}}}})
		checkOnBase(t, reg, "bt/ocitar-app:latest", img)
	})

	t.Run("oci-build-task OUTPUT_OCI image/ layout as cache_from and load_base", func(t *testing.T) {
		img, digest := newBase("bt/layout:5", testenv.ImageOptions{MediaType: "oci"})
		dir := filepath.Join(srcDir, "bt-layout")
		testenv.OCILayout(t, filepath.Join(dir, "image"), img, nil)
		writeFiles(t, dir, map[string]string{"digest": digest})
		build("bt-layout-app", "bt/layout:5")
		entry := map[string]any{"path": "bt-layout", "repository": "bt/layout", "tag": "5"}
		putOK(t, srcDir, map[string]any{"source": source(reg, "bt/layout-app", nil), "params": map[string]any{"build": "bt-layout-app",
			"load_base": entry, "cache_from": []any{entry}}})
		checkOnBase(t, reg, "bt/layout-app:latest", img)
	})

	t.Run("zstd OCI layout on dockerd 20.10", func(t *testing.T) {
		img, digest := newBase("ri/zstd:6", testenv.ImageOptions{Compression: "zstd"})
		dir := filepath.Join(srcDir, "ri-zstd")
		testenv.OCILayout(t, filepath.Join(dir, "oci"), img, nil)
		writeFiles(t, dir, map[string]string{"repository": reg.Host + "/ri/zstd", "tag": "6", "digest": digest})
		build("ri-zstd-app", reg.Host+"/ri/zstd:6")
		r := runOut(t, srcDir, map[string]any{"source": source(reg, "ri/zstd-app", nil), "params": map[string]any{"build": "ri-zstd-app", "load_base": "ri-zstd"}})
		if r.err != nil {
			t.Fatalf("out: %v\n%s", r.err, r.stderr)
		}
		// dockerd 20.10 cannot decompress zstd; the layers are unpacked
		// into its layer store before it starts, so it never has to.
		if want := "load: writing base " + reg.Host + "/ri/zstd:6 (2 layers"; !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "straight into dockerd's layer store") {
			t.Errorf("the log does not say the zstd base was written into the layer store (%q):\n%s", want, r.stderr)
		}
		// The push still sends the original zstd blobs.
		checkOnBase(t, reg, "ri/zstd-app:latest", img)
	})

	t.Run("zstd OCI layout through docker load on dockerd 20.10", func(t *testing.T) {
		// The path of a daemon that cannot take the seed (another storage
		// driver): docker load, which 20.10 cannot do for zstd layers, so the
		// put decompresses them for it.
		img, digest := newBase("ri/zstdload:11", testenv.ImageOptions{Compression: "zstd"})
		dir := filepath.Join(srcDir, "ri-zstdload")
		testenv.OCILayout(t, filepath.Join(dir, "oci"), img, nil)
		writeFiles(t, dir, map[string]string{"repository": reg.Host + "/ri/zstdload", "tag": "11", "digest": digest})
		build("ri-zstdload-app", reg.Host+"/ri/zstdload:11")
		r := runOutHooked(t, srcDir, map[string]any{"source": source(reg, "ri/zstdload-app", map[string]any{"debug": true}),
			"params": map[string]any{"build": "ri-zstdload-app", "load_base": "ri-zstdload"}}, func(h *resource.Hooks) { h.DockerLoad = true })
		if r.err != nil {
			t.Fatalf("out: %v\n%s", r.err, r.stderr)
		}
		if strings.Contains(r.stderr, "straight into dockerd's layer store") {
			t.Fatalf("the DockerLoad hook did not keep the base out of the layer store:\n%s", r.stderr)
		}
		if !strings.Contains(r.stderr, "zstd layers, which this dockerd cannot load") {
			t.Errorf("the log does not say the zstd layers were decompressed for docker load:\n%s", r.stderr)
		}
		checkOnBase(t, reg, "ri/zstdload-app:latest", img)
	})

	t.Run("registry-image format: oci with zstd layers on dockerd 20.10", func(t *testing.T) {
		img, digest := newBase("ri/ocizstd:10", testenv.ImageOptions{Compression: "zstd"})
		dir := filepath.Join(srcDir, "ri-ocizstd")
		testenv.SaveTarball(t, filepath.Join(dir, "image.tar"), img, reg.Host+"/ri/ocizstd:10")
		writeFiles(t, dir, map[string]string{"repository": reg.Host + "/ri/ocizstd", "tag": "10", "digest": digest})
		build("ri-ocizstd-app", reg.Host+"/ri/ocizstd:10")
		r := runOut(t, srcDir, map[string]any{"source": source(reg, "ri/ocizstd-app", nil), "params": map[string]any{"build": "ri-ocizstd-app", "load_base": "ri-ocizstd"}})
		if r.err != nil {
			t.Fatalf("out: %v\n%s", r.err, r.stderr)
		}
		// dockerd 20.10 cannot decompress zstd; the layers are unpacked
		// into its layer store before it starts, so it never has to.
		if want := "load: writing base " + reg.Host + "/ri/ocizstd:10 (2 layers"; !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "straight into dockerd's layer store") {
			t.Errorf("the log does not say the zstd base was written into the layer store (%q):\n%s", want, r.stderr)
		}
		checkOnBase(t, reg, "ri/ocizstd-app:latest", img)
	})

	t.Run("load pushes a foreign folder as it is", func(t *testing.T) {
		img, digest := newBase("ri/load:7", testenv.ImageOptions{MediaType: "oci"})
		dir := filepath.Join(srcDir, "ri-load")
		testenv.OCILayout(t, filepath.Join(dir, "oci"), img, nil)
		writeFiles(t, dir, map[string]string{"repository": reg.Host + "/ri/load", "tag": "7", "digest": digest})
		resp := putOK(t, srcDir, map[string]any{"source": source(reg, "ri/loaded", nil), "params": map[string]any{"load": "ri-load"}})
		if resp.Version.Digest != digest {
			t.Errorf("load pushed %s, want the layout's own manifest %s", resp.Version.Digest, digest)
		}
	})

	t.Run("unnamed folder: loaded by ID with a warning", func(t *testing.T) {
		img, _ := newBase("bt/unnamed:8", testenv.ImageOptions{})
		dir := filepath.Join(srcDir, "bt-unnamed")
		testenv.SaveTarball(t, filepath.Join(dir, "image.tar"), img, "")
		writeFiles(t, dir, map[string]string{"digest": hashOf(t, img.ConfigName), "scratch-app/Dockerfile": "FROM scratch\nCOPY Dockerfile /d\n"})
		r := runOut(t, srcDir, map[string]any{"source": source(reg, "bt/unnamed-app", nil), "params": map[string]any{"build": "bt-unnamed/scratch-app", "load_base": "bt-unnamed"}})
		if r.err != nil {
			t.Fatalf("out: %v\n%s", r.err, r.stderr)
		}
		if !strings.Contains(r.stderr, "FROM cannot refer to it by name") || !strings.Contains(r.stderr, "object form") {
			t.Errorf("no warning about the unnamed base:\n%s", r.stderr)
		}
	})

	t.Run("unnamed cache_from is used by its ID", func(t *testing.T) {
		img, _ := newBase("bt/unnamed-cache:9", testenv.ImageOptions{})
		dir := filepath.Join(srcDir, "bt-unnamed-cache")
		testenv.SaveTarball(t, filepath.Join(dir, "image.tar"), img, "")
		writeFiles(t, dir, map[string]string{"digest": hashOf(t, img.ConfigName)})
		build("unnamed-cache-app", "bt/unnamed-cache:9")
		for _, builder := range []int{0, 1} {
			putOK(t, srcDir, map[string]any{"source": source(reg, "bt/unnamed-cache-app", nil), "params": map[string]any{"build": "unnamed-cache-app",
				"docker_buildkit": builder, "cache_from": []any{"bt-unnamed-cache"},
				"load_base": map[string]any{"path": "bt-unnamed-cache", "repository": "bt/unnamed-cache", "tag": "9"}}})
			checkOnBase(t, reg, "bt/unnamed-cache-app:latest", img)
		}
	})
}

// TestPutForeignBaseErrors: layouts that cannot work fail before a daemon
// starts, naming the param, what the folder holds and what is accepted.
func TestPutForeignBaseErrors(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	srcDir := t.TempDir()
	writeFiles(t, srcDir, map[string]string{
		"app/Dockerfile":     "FROM scratch\n",
		"odd/notes.txt":      "x",
		"odd/rootfs/bin/sh":  "x",
		"badtar/image.tar":   "not a tarball",
		"partial/oci/foo":    "x",
		"armonly/repository": reg.Host + "/armonly",
		"armonly/tag":        "1",
	})
	idx := testenv.MultiPlatformIndex(t, []v1.Platform{{OS: "linux", Architecture: "s390x"}}, testenv.ImageOptions{MediaType: "oci"})
	idx2 := mutate.AppendManifests(idx, mutate.IndexAddendum{Add: testenv.BusyboxImage(t, testenv.ImageOptions{Platform: &v1.Platform{OS: "linux", Architecture: "ppc64le"}, MediaType: "oci"}), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "ppc64le"}}})
	testenv.OCILayout(t, filepath.Join(srcDir, "armonly/oci"), nil, idx2)

	for _, c := range []struct {
		name   string
		params map[string]any
		want   []string
	}{
		{"unknown layout", map[string]any{"build": "app", "load_base": "odd"},
			[]string{"params.load_base:", "it holds notes.txt, rootfs/", "accepted folder layouts", "oci-build-task output"}},
		{"load_bases: the first bad entry is named", map[string]any{"build": "app", "load_bases": []any{"odd", "badtar"}},
			[]string{"params.load_bases[0]:"}},
		{"cache_from object on an image.tar that is no tarball", map[string]any{"build": "app", "cache_from": []any{map[string]any{"path": "badtar", "repository": "x"}}},
			[]string{"params.cache_from[0]:", "image.tar"}},
		{"oci/ without a layout", map[string]any{"load": "partial"}, []string{"params.load:", "oci/ is not an OCI image layout"}},
		{"no image for the build platform", map[string]any{"build": "app", "load_base": "armonly"}, []string{"params.load_base:", "no image for the build platform linux/", "linux/s390x, linux/ppc64le"}},
		{"object form without path", map[string]any{"build": "app", "load_base": map[string]any{"repository": "x"}}, []string{"params.load_base: the object form needs path"}},
		{"object form with a bad repository", map[string]any{"build": "app", "load_base": map[string]any{"path": "armonly", "repository": "Bad Name"}}, []string{"params.load_base.repository"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			r := runOut(t, srcDir, map[string]any{"source": source(reg, "errs/formats", nil), "params": c.params})
			if r.err == nil {
				t.Fatalf("succeeded:\n%s", r.stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(r.err.Error(), w) {
					t.Errorf("err %v\nwant %q", r.err, w)
				}
			}
			if strings.Contains(r.stderr, "dockerd") {
				t.Errorf("a daemon was started for input that could be checked before:\n%s", r.stderr)
			}
			t.Logf("%s (%s): %v", c.name, time.Since(start).Round(time.Millisecond), r.err)
		})
	}
}
