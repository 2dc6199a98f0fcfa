package test

import (
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestPushPulledBase: a put without base folders whose FROM the put's
// daemon pulls from the target's registry (BuildKit and the classic
// builder) is pushed straight to the registry as the base's original
// blobs: dockerd's distribution metadata names them, the registry mounts
// them from the base's repository into a new repository, and not one base
// byte is uploaded. Only the new layer and the config travel.
func TestPushPulledBase(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	base := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{2 << 20}})
	reg.Push(t, "pp/base:1", base)
	baseManifest, err := base.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	srcDir := t.TempDir()
	writeFiles(t, srcDir, map[string]string{
		"app/Dockerfile": "FROM " + reg.Host + "/pp/base:1\nRUN echo built > /built\n",
	})

	for _, c := range []struct {
		name, repo string
		buildkit   int
	}{
		{"BuildKit", "pp/bk", 1},
		{"classic builder", "pp/classic", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(registryRequests(t, reg))
			r := runOut(t, srcDir, map[string]any{"source": source(reg, c.repo, nil),
				"params": map[string]any{"build": "app", "docker_buildkit": c.buildkit}})
			if r.err != nil {
				t.Fatalf("out: %v\n%s", r.err, r.stderr)
			}
			resp := decodeResponse(t, r)
			meta := metaOf(resp)
			t.Logf("%s: push %s, uploaded %s, reused %s", c.name, meta["push"], meta["uploaded"], meta["reused"])
			if meta["push"] != "registry" || !strings.Contains(r.stderr, "which dockerd pulled: pushing the original blobs") {
				t.Errorf("not pushed straight from the pulled base's blobs (metadata %v):\n%s", resp.Metadata, r.stderr)
			}
			m, mt := manifestOf(t, reg, c.repo+":latest")
			if mt != types.DockerManifestSchema2 || len(m.Layers) != len(baseManifest.Layers)+1 {
				t.Fatalf("pushed %s with %d layers, want a Docker manifest with the base's %d + 1", mt, len(m.Layers), len(baseManifest.Layers))
			}
			for i, l := range baseManifest.Layers {
				if m.Layers[i].Digest != l.Digest || m.Layers[i].Size != l.Size || m.Layers[i].MediaType != l.MediaType {
					t.Errorf("layer %d is %+v; the base's is %+v", i, m.Layers[i], l)
				}
			}
			if !strings.HasPrefix(m.Config.Digest.Hex, meta["image"]) {
				t.Errorf("config %s is not the image %s the daemon built", m.Config.Digest, meta["image"])
			}
			tr := trafficOf(registryRequests(t, reg)[before:], c.repo)
			for _, l := range baseManifest.Layers {
				d := l.Digest.String()
				if tr.uploaded[d] {
					t.Errorf("base blob %s was uploaded", d)
				}
				if !tr.mounted[d] && !tr.existing[d] {
					t.Errorf("base blob %s was neither mounted nor found in %s", d, c.repo)
				}
			}
			want := map[string]bool{m.Config.Digest.String(): true, m.Layers[len(m.Layers)-1].Digest.String(): true}
			if len(tr.uploaded) != len(want) || !tr.uploaded[m.Config.Digest.String()] || !tr.uploaded[m.Layers[len(m.Layers)-1].Digest.String()] {
				t.Errorf("uploaded %v, want exactly the new layer and the config %v", tr.uploaded, want)
			}
			// The image reads back whole: every blob is in the repository.
			img := readsBack(t, reg, c.repo+":latest")
			if got, ok := imageFile(t, img, "built"); !ok || got != "built\n" {
				t.Errorf("the pushed image's /built is %q (%v)", got, ok)
			}
		})
	}
}
