package test

import (
	"encoding/json"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/docker/api/types/image"
	dregistry "github.com/docker/docker/api/types/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// regRequest is one request in the registry's access log.
type regRequest struct {
	method, path string
	query        url.Values
	status       int
}

var accessLine = regexp.MustCompile(`"(HEAD|GET|POST|PUT|PATCH|DELETE) (\S+) HTTP/[0-9.]+" (\d{3}) `)

// registryRequests reads every request the registry has logged so far.
func registryRequests(t *testing.T, reg *testenv.Registry) []regRequest {
	t.Helper()
	var out []regRequest
	for _, l := range strings.Split(reg.LogTail(1<<30), "\n") {
		m := accessLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		u, err := url.Parse(m[2])
		if err != nil {
			t.Fatalf("registry log: %q: %v", m[2], err)
		}
		status, _ := strconv.Atoi(m[3])
		out = append(out, regRequest{method: m[1], path: u.Path, query: u.Query(), status: status})
	}
	return out
}

// blobTraffic sorts a put's requests: blobs whose upload was committed
// (PUT ?digest=), blobs mounted (POST ?mount= answered 201), blobs found
// (HEAD 200), and manifest PUTs by reference.
type blobTraffic struct {
	uploaded, mounted, existing map[string]bool
	manifests                   []string
}

func trafficOf(reqs []regRequest, repo string) blobTraffic {
	tr := blobTraffic{uploaded: map[string]bool{}, mounted: map[string]bool{}, existing: map[string]bool{}}
	prefix := "/v2/" + repo + "/"
	for _, r := range reqs {
		if !strings.HasPrefix(r.path, prefix) {
			continue
		}
		switch {
		case r.method == "PUT" && strings.Contains(r.path, "/blobs/uploads/") && r.status == 201:
			tr.uploaded[r.query.Get("digest")] = true
		case r.method == "POST" && r.query.Get("mount") != "" && r.status == 201:
			tr.mounted[r.query.Get("mount")] = true
		case r.method == "HEAD" && strings.Contains(r.path, "/blobs/") && r.status == 200:
			tr.existing[r.path[strings.LastIndex(r.path, "/")+1:]] = true
		case r.method == "PUT" && strings.Contains(r.path, "/manifests/") && r.status == 201:
			tr.manifests = append(tr.manifests, r.path[strings.LastIndex(r.path, "/")+1:])
		}
	}
	return tr
}

func metaOf(resp protocol.Response) map[string]string {
	m := map[string]string{}
	for _, f := range resp.Metadata {
		m[f.Name] = f.Value
	}
	return m
}

func manifestOf(t *testing.T, reg *testenv.Registry, ref string) (*v1.Manifest, types.MediaType) {
	t.Helper()
	desc, err := remote.Get(reg.Ref(t, ref), reg.RemoteOptions()...)
	if err != nil {
		t.Fatalf("%s: %v", ref, err)
	}
	img, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return m, desc.MediaType
}

// TestPushReusesBaseBlobs: a build on load_base is pushed straight to the
// registry. The manifest names the base's original blobs, which the registry
// mounts from the base's repository (first push) or already has (second):
// not one base byte is uploaded. Only the new layers and the config travel,
// once; extra tags are manifest PUTs. A real docker pull of the result gives
// the image ID the put's daemon built.
func TestPushReusesBaseBlobs(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	base := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{2 << 20, 1 << 20}})
	baseDigest := reg.Push(t, "pb/base:1", base)
	baseManifest, _ := base.Manifest()
	baseBlobs := map[string]bool{}
	for _, l := range baseManifest.Layers {
		baseBlobs[l.Digest.String()] = true
	}

	srcDir := t.TempDir()
	getOK(t, filepath.Join(srcDir, "base"), map[string]any{
		"source": source(reg, "pb/base", map[string]any{"tag": "1"}), "version": map[string]any{"digest": baseDigest.String()},
		"params": map[string]any{"save": true},
	})
	writeFiles(t, srcDir, map[string]string{
		"app/Dockerfile": "FROM " + reg.Host + "/pb/base:1\nRUN echo built > /built\nCOPY data /data\nLABEL stage=final\n",
		"app/data":       strings.Repeat("first build\n", 100000),
		"version":        "1.0\n",
		"more":           "extra stable\n",
	})
	params := map[string]any{"build": "app", "load_base": "base", "tag_file": "version", "additional_tags": "more", "tag_as_latest": true}

	before := len(registryRequests(t, reg))
	r := runOut(t, srcDir, map[string]any{"source": source(reg, "pb/app", nil), "params": params})
	if r.err != nil {
		t.Fatalf("out: %v\n%s", r.err, r.stderr)
	}
	resp := decodeResponse(t, r)
	if !strings.Contains(r.stderr, "push: straight to the registry") || strings.Contains(r.stderr, "through the daemon") {
		t.Errorf("the log does not say the registry push was taken:\n%s", r.stderr)
	}
	meta := metaOf(resp)
	if meta["push"] != "registry" || !strings.HasSuffix(meta["reused"], "(3 blobs)") || !strings.HasSuffix(meta["uploaded"], "(3 blobs, 4 manifests)") {
		t.Errorf("metadata %v: want push=registry, 3 base blobs reused, 2 new layers + config uploaded", meta)
	}

	// The manifest names the base's blobs, with the base's media types.
	m, mt := manifestOf(t, reg, "pb/app:1.0")
	if mt != types.DockerManifestSchema2 || m.Config.MediaType != types.DockerConfigJSON {
		t.Errorf("manifest %s with config %s; want the Docker family of the base", mt, m.Config.MediaType)
	}
	if len(m.Layers) != len(baseManifest.Layers)+2 {
		t.Fatalf("%d layers, want the base's %d + 2", len(m.Layers), len(baseManifest.Layers))
	}
	for i, l := range baseManifest.Layers {
		if m.Layers[i].Digest != l.Digest || m.Layers[i].Size != l.Size || m.Layers[i].MediaType != l.MediaType {
			t.Errorf("layer %d is %s (%d bytes, %s); the base's is %s (%d bytes, %s)", i, m.Layers[i].Digest, m.Layers[i].Size, m.Layers[i].MediaType, l.Digest, l.Size, l.MediaType)
		}
	}
	for _, l := range m.Layers[len(baseManifest.Layers):] {
		if l.MediaType != types.DockerLayer {
			t.Errorf("new layer %s has media type %s", l.Digest, l.MediaType)
		}
	}
	if !strings.HasPrefix(m.Config.Digest.Hex, meta["image"]) {
		t.Errorf("config %s is not the image %s the daemon built", m.Config.Digest, meta["image"])
	}

	// What the registry saw: base blobs mounted, never uploaded; new layers
	// and config uploaded once; one manifest PUT per tag.
	tr := trafficOf(registryRequests(t, reg)[before:], "pb/app")
	want := map[string]bool{m.Config.Digest.String(): true}
	for _, l := range m.Layers[len(baseManifest.Layers):] {
		want[l.Digest.String()] = true
	}
	for d := range baseBlobs {
		if tr.uploaded[d] {
			t.Errorf("base blob %s was uploaded", d)
		}
		if !tr.mounted[d] {
			t.Errorf("base blob %s was not mounted from pb/base", d)
		}
	}
	if len(tr.uploaded) != len(want) {
		t.Errorf("uploaded %v, want exactly the new layers and config %v", tr.uploaded, want)
	}
	for d := range want {
		if !tr.uploaded[d] {
			t.Errorf("%s was not uploaded", d)
		}
	}
	if strings.Join(tr.manifests, " ") != "1.0 extra stable latest" {
		t.Errorf("manifest PUTs %v, want one per tag", tr.manifests)
	}
	for _, tag := range []string{"1.0", "extra", "stable", "latest"} {
		desc, err := remote.Head(reg.Ref(t, "pb/app:"+tag), reg.RemoteOptions()...)
		if err != nil || desc.Digest.String() != resp.Version.Digest {
			t.Errorf("tag %s: %v %v, want %s", tag, desc, err, resp.Version.Digest)
		}
	}

	// A second build pushed to the same repository: the base blobs are
	// already there (HEAD), nothing of them is mounted or uploaded.
	// The RUN writes other content too: a put is fast enough for both RUNs
	// to fall in one second, and a tar keeps whole seconds, so the same
	// RUN would make the same layer.
	writeFiles(t, srcDir, map[string]string{"app/data": "second build\n", "version": "2.0\n",
		"app/Dockerfile": "FROM " + reg.Host + "/pb/base:1\nRUN echo built again > /built\nCOPY data /data\nLABEL stage=final\n"})
	before = len(registryRequests(t, reg))
	resp2 := putOK(t, srcDir, map[string]any{"source": source(reg, "pb/app", nil), "params": map[string]any{"build": "app", "load_base": "base", "tag_file": "version"}})
	tr = trafficOf(registryRequests(t, reg)[before:], "pb/app")
	for d := range baseBlobs {
		if tr.uploaded[d] || tr.mounted[d] || !tr.existing[d] {
			t.Errorf("second push, base blob %s: uploaded %v, mounted %v, found %v; want found only", d, tr.uploaded[d], tr.mounted[d], tr.existing[d])
		}
	}
	m2, _ := manifestOf(t, reg, "pb/app:2.0")
	if len(tr.uploaded) != 3 || !tr.uploaded[m2.Config.Digest.String()] {
		t.Errorf("second push uploaded %v, want its RUN and COPY layers and config", tr.uploaded)
	}
	if meta2 := metaOf(resp2); !strings.HasSuffix(meta2["reused"], "(3 blobs)") || m2.Config.Digest.String() == m.Config.Digest.String() {
		t.Errorf("second push metadata %v: want the 3 base blobs reused", meta2)
	}

	// A real pull of the pushed image gives the image ID the put built: the
	// config is the daemon's own bytes, every blob decompresses to its
	// diff ID (the daemon checks).
	d := testenv.StartDockerd(t)
	auth, _ := dregistry.EncodeAuthConfig(dregistry.AuthConfig{Username: reg.Username, Password: reg.Password, ServerAddress: reg.Host})
	rc, err := d.Client().ImagePull(t.Context(), reg.Host+"/pb/app:1.0", image.PullOptions{RegistryAuth: auth})
	if err != nil {
		t.Fatal(err)
	}
	_, err = testenv.ReadJSONStream(rc)
	rc.Close()
	if err != nil {
		t.Fatalf("docker pull of the pushed image: %v", err)
	}
	ins, err := d.Client().ImageInspect(t.Context(), reg.Host+"/pb/app:1.0")
	if err != nil {
		t.Fatal(err)
	}
	if ins.ID != m.Config.Digest.String() {
		t.Errorf("pulled image ID %s, want the config digest %s", ins.ID, m.Config.Digest)
	}
}

// TestPushOCIBase: an OCI base gives an OCI manifest (config and new layers
// in OCI types too), and `load` of a saved image pushes its manifest
// unchanged: the same digest as the original.
func TestPushOCIBase(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	base := testenv.BusyboxImage(t, testenv.ImageOptions{MediaType: "oci", RandomLayers: []int64{1 << 20}})
	baseDigest := reg.Push(t, "oci/base:1", base)
	baseManifest, _ := base.Manifest()
	srcDir := t.TempDir()
	getOK(t, filepath.Join(srcDir, "base"), map[string]any{
		"source": source(reg, "oci/base", map[string]any{"tag": "1"}), "version": map[string]any{"digest": baseDigest.String()},
		"params": map[string]any{"save": true},
	})
	writeFiles(t, srcDir, map[string]string{"app/Dockerfile": "FROM " + reg.Host + "/oci/base:1\nRUN echo built > /built\n"})

	r := runOut(t, srcDir, map[string]any{"source": source(reg, "oci/app", nil), "params": map[string]any{"build": "app", "load_base": "base"}})
	if r.err != nil {
		t.Fatalf("out: %v\n%s", r.err, r.stderr)
	}
	if !strings.Contains(r.stderr, "push: writing an OCI image manifest, the base image's own format") {
		t.Errorf("the log does not name the OCI family:\n%s", r.stderr)
	}
	m, mt := manifestOf(t, reg, "oci/app:latest")
	if mt != types.OCIManifestSchema1 || m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("manifest %s / %s, config %s: want OCI", mt, m.MediaType, m.Config.MediaType)
	}
	for i, l := range m.Layers {
		if l.MediaType != types.OCILayer {
			t.Errorf("layer %d: %s, want %s", i, l.MediaType, types.OCILayer)
		}
		if i < len(baseManifest.Layers) && l.Digest != baseManifest.Layers[i].Digest {
			t.Errorf("layer %d is %s, the base's %s", i, l.Digest, baseManifest.Layers[i].Digest)
		}
	}

	// load: every blob, the config too, is mounted; only the manifest,
	// byte for byte the base's, is sent.
	before := len(registryRequests(t, reg))
	resp := putOK(t, srcDir, map[string]any{"source": source(reg, "oci/loaded", nil), "params": map[string]any{"load": "base"}})
	if resp.Version.Digest != baseDigest.String() {
		t.Errorf("load pushed %s, want the base's own manifest %s", resp.Version.Digest, baseDigest)
	}
	tr := trafficOf(registryRequests(t, reg)[before:], "oci/loaded")
	if len(tr.uploaded) != 0 || len(tr.mounted) != len(baseManifest.Layers)+1 || len(tr.manifests) != 1 {
		t.Errorf("load: uploaded %v, mounted %v, manifests %v; want every blob mounted and one manifest", tr.uploaded, tr.mounted, tr.manifests)
	}
}

// TestPushFallsBackToDaemon: when the original blob of a layer is unknown
// the daemon pushes, and the log says why.
func TestPushFallsBackToDaemon(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	base := testenv.BusyboxImage(t, testenv.ImageOptions{Labels: map[string]string{"from": "base"}})
	baseDigest := reg.Push(t, "fb/base:1", base)
	baseID, _ := base.ConfigName()
	srcDir := t.TempDir()
	getOK(t, filepath.Join(srcDir, "saved"), map[string]any{
		"source": source(reg, "fb/base", map[string]any{"tag": "1"}), "version": map[string]any{"digest": baseDigest.String()},
		"params": map[string]any{"save": true},
	})
	// FROM images on another registry: dockerd's distribution metadata
	// names their blobs there, which no registry mounts across registries
	// (from the target's registry, see TestPushPulledBase). fb/other is
	// another image on the same busybox layer, with a layer of its own.
	elsewhere := testenv.StartRegistry(t, testenv.RegistryOptions{NoAuth: true})
	elsewhere.Push(t, "fb/base:1", base)
	elsewhere.Push(t, "fb/other:1", testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{1 << 20}}))
	writeFiles(t, srcDir, map[string]string{
		"pulled/Dockerfile": "FROM " + elsewhere.Host + "/fb/base:1\nRUN echo built > /built\n",
		"other/Dockerfile":  "FROM " + elsewhere.Host + "/fb/other:1\nRUN echo built > /built\n",
	})

	cases := []struct {
		name, repo string
		params     map[string]any
		why        string
	}{
		{"load_file", "fb/file", map[string]any{"load_file": "saved/image", "load_repository": reg.Host + "/fb/base", "load_tag": "1"},
			"params.load_file: the original compressed blobs of its layers are unknown"},
		// The classic builder's pulls are in the daemon's image list with
		// their registry origin (RepoDigests), from another registry here:
		// pushed through the daemon. BuildKit's pulls are not listed, so
		// under BuildKit these push directly, the layers compressed again.
		{"FROM pulled by the daemon", "fb/pulled", map[string]any{"build": "pulled", "docker_buildkit": 0}, "which the daemon pulled"},
		{"FROM pulled, sharing the busybox layer with load_base", "fb/pulled2", map[string]any{"build": "other", "load_base": "saved", "docker_buildkit": 0}, "which the daemon pulled"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runOut(t, srcDir, map[string]any{"source": source(reg, c.repo, nil), "params": c.params})
			if r.err != nil {
				t.Fatalf("out: %v\n%s", r.err, r.stderr)
			}
			if !strings.Contains(r.stderr, "push: through the daemon") || !strings.Contains(r.stderr, c.why) {
				t.Errorf("the log does not say the daemon pushed because %q:\n%s", c.why, r.stderr)
			}
			resp := decodeResponse(t, r)
			if metaOf(resp)["push"] != "daemon" {
				t.Errorf("metadata %v", resp.Metadata)
			}
			m, _ := manifestOf(t, reg, c.repo+":latest")
			if c.name == "load_file" && m.Config.Digest != baseID {
				t.Errorf("pushed config %s, want %s", m.Config.Digest, baseID)
			}
			if !strings.HasPrefix(m.Config.Digest.Hex, metaOf(resp)["image"]) {
				t.Errorf("pushed config %s, daemon image %s", m.Config.Digest, metaOf(resp)["image"])
			}
		})
	}
}

func decodeResponse(t *testing.T, r result) protocol.Response {
	t.Helper()
	var resp protocol.Response
	if err := json.Unmarshal([]byte(r.stdout), &resp); err != nil {
		t.Fatalf("stdout %q: %v", r.stdout, err)
	}
	return resp
}
