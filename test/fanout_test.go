package test

import (
	"bytes"
	"io"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/docker/api/types/image"
	dregistry "github.com/docker/docker/api/types/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// fanOutEnv is two registries with their own credentials, a base on the
// first saved by a get, and a build on it.
type fanOutEnv struct {
	a, b      *testenv.Registry
	srcDir    string
	baseBlobs []string // the base's layer digests
}

func startFanOut(t *testing.T) *fanOutEnv {
	t.Helper()
	e := &fanOutEnv{
		a: testenv.StartRegistry(t, testenv.RegistryOptions{}),
		b: testenv.StartRegistry(t, testenv.RegistryOptions{Username: "mirroruser"}),
	}
	base := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{1 << 20}})
	baseDigest := e.a.Push(t, "fo/base:1", base)
	bm, _ := base.Manifest()
	for _, l := range bm.Layers {
		e.baseBlobs = append(e.baseBlobs, l.Digest.String())
	}
	e.srcDir = t.TempDir()
	getOK(t, filepath.Join(e.srcDir, "base"), map[string]any{
		"source": source(e.a, "fo/base", map[string]any{"tag": "1"}), "version": map[string]any{"digest": baseDigest.String()},
		"params": map[string]any{"save": true},
	})
	writeFiles(t, e.srcDir, map[string]string{
		"app/Dockerfile": "FROM " + e.a.Host + "/fo/base:1\nRUN echo built > /built\n",
		"version":        "1.0\n",
	})
	return e
}

// source is registry a's repo with b's credentials as an
// additional_private_registries entry (withB) or none.
func (e *fanOutEnv) source(repo string, withB bool) map[string]any {
	if !withB {
		return source(e.a, repo, nil)
	}
	return source(e.a, repo, map[string]any{"additional_private_registries": []map[string]any{
		{"registry": e.b.Host, "username": e.b.Username, "password": e.b.Password},
	}})
}

// rawManifest is reg's manifest for ref, or nil when it has none.
func rawManifest(t *testing.T, reg *testenv.Registry, ref string) (*remote.Descriptor, bool) {
	t.Helper()
	desc, err := remote.Get(reg.Ref(t, ref), reg.RemoteOptions()...)
	return desc, err == nil
}

// sameManifest fails unless ref on reg holds want's manifest byte for byte.
func sameManifest(t *testing.T, reg *testenv.Registry, ref string, want *remote.Descriptor) {
	t.Helper()
	desc, ok := rawManifest(t, reg, ref)
	if !ok || !bytes.Equal(desc.Manifest, want.Manifest) {
		t.Errorf("%s/%s: %v; want the manifest %s byte for byte", reg.Host, ref, desc, want.Digest)
	}
}

// uploadCounts counts a registry's committed blob uploads by digest, in
// every repository.
func uploadCounts(reqs []regRequest) map[string]int {
	n := map[string]int{}
	for _, r := range reqs {
		if r.method == "PUT" && strings.Contains(r.path, "/blobs/uploads/") && r.status == 201 {
			n[r.query.Get("digest")]++
		}
	}
	return n
}

// timedRequest is one of the registry's "response completed" log lines:
// a request and when the registry had answered it (nanoseconds).
type timedRequest struct {
	at     time.Time
	host   string
	method string
	uri    string
	status int
}

func (r timedRequest) blob() bool {
	return strings.Contains(r.uri, "/blobs/") && r.method != "GET"
}

func (r timedRequest) manifestPut() bool {
	return r.method == "PUT" && strings.Contains(r.uri, "/manifests/") && r.status < 300
}

var logField = regexp.MustCompile(`([\w.]+)=("(?:[^"\\]|\\.)*"|\S+)`)

// timedRequests are reg's answered requests since since.
func timedRequests(t *testing.T, reg *testenv.Registry, since time.Time) []timedRequest {
	t.Helper()
	var out []timedRequest
	for _, line := range strings.Split(reg.Log(t), "\n") {
		// "response completed", or "response completed with error".
		if !strings.Contains(line, `msg="response completed`) {
			continue
		}
		f := map[string]string{}
		for _, m := range logField.FindAllStringSubmatch(line, -1) {
			v := m[2]
			if u, err := strconv.Unquote(v); err == nil {
				v = u
			}
			f[m[1]] = v
		}
		at, err := time.Parse(time.RFC3339Nano, f["time"])
		if err != nil {
			t.Fatalf("registry log line without a time: %s", line)
		}
		if at.Before(since) {
			continue
		}
		status, _ := strconv.Atoi(f["http.response.status"])
		out = append(out, timedRequest{at: at, host: reg.Host, method: f["http.request.method"], uri: f["http.request.uri"], status: status})
	}
	return out
}

// checkBlobsBeforeManifests: across the registries, the last blob request
// (HEAD, mount, upload) was answered before the first manifest PUT
// (of repositories matching only, when given) was.
func checkBlobsBeforeManifests(t *testing.T, reqs []timedRequest, only func(timedRequest) bool) {
	t.Helper()
	var lastBlob, firstManifest timedRequest
	for _, r := range reqs {
		if r.blob() && r.at.After(lastBlob.at) {
			lastBlob = r
		}
		if r.manifestPut() && (only == nil || only(r)) && (firstManifest.at.IsZero() || r.at.Before(firstManifest.at)) {
			firstManifest = r
		}
	}
	path := func(uri string) string { p, _, _ := strings.Cut(uri, "?"); return p }
	t.Logf("last blob request answered at %s (%s %s%s), first manifest PUT at %s (%s%s)", lastBlob.at.Format("15:04:05.000000"), lastBlob.method,
		lastBlob.host, path(lastBlob.uri), firstManifest.at.Format("15:04:05.000000"), firstManifest.host, path(firstManifest.uri))
	if lastBlob.at.IsZero() || firstManifest.at.IsZero() || !firstManifest.at.After(lastBlob.at) {
		t.Errorf("last blob request %s %s%s at %s; first manifest PUT %s%s at %s: want every blob before any manifest",
			lastBlob.method, lastBlob.host, lastBlob.uri, lastBlob.at.Format(time.RFC3339Nano), firstManifest.host, firstManifest.uri, firstManifest.at.Format(time.RFC3339Nano))
	}
}

// TestPutFanOut: one put to the source's repository, a second repository
// on its registry and one on another registry with other credentials. The
// second registry gets every blob uploaded once; the second repository of
// the first mounts every blob; no manifest is written before the last
// blob; every repository holds the same manifest under every tag, and the
// one on the second registry pulls as the image the put built.
func TestPutFanOut(t *testing.T) {
	e := startFanOut(t)
	a, b := e.a, e.b
	start := time.Now()
	beforeA, beforeB := len(registryRequests(t, a)), len(registryRequests(t, b))
	resp := putOK(t, e.srcDir, map[string]any{"source": e.source("fo/app", true), "params": map[string]any{
		"build": "app", "load_base": "base", "tag_file": "version", "tag_as_latest": true,
		"additional_repositories": []string{a.Host + "/fo/mirror", b.Host + "/fo/app"},
	}})
	meta := metaOf(resp)
	wantRepos := a.Host + "/fo/app " + a.Host + "/fo/mirror " + b.Host + "/fo/app"
	if meta["push"] != "registry" || meta["repositories"] != wantRepos {
		t.Errorf("metadata %v: want push=registry and repositories %q", meta, wantRepos)
	}

	// The same manifest bytes under every tag everywhere.
	first, _ := rawManifest(t, a, "fo/app:1.0")
	if first == nil || first.Digest.String() != resp.Version.Digest {
		t.Fatalf("fo/app:1.0 is %v, the response says %s", first, resp.Version.Digest)
	}
	for _, c := range []struct {
		reg  *testenv.Registry
		repo string
	}{{a, "fo/app"}, {a, "fo/mirror"}, {b, "fo/app"}} {
		for _, tag := range []string{"1.0", "latest"} {
			sameManifest(t, c.reg, c.repo+":"+tag, first)
		}
	}
	m, _ := manifestOf(t, a, "fo/app:1.0")
	all := map[string]bool{m.Config.Digest.String(): true}
	for _, l := range m.Layers {
		all[l.Digest.String()] = true
	}
	isBase := map[string]bool{}
	for _, d := range e.baseBlobs {
		isBase[d] = true
	}

	// Registry a: the new blobs uploaded once (to fo/app), the base's
	// mounted into fo/app, and every blob mounted into fo/mirror.
	reqsA := registryRequests(t, a)[beforeA:]
	for d, n := range uploadCounts(reqsA) {
		if isBase[d] || n != 1 {
			t.Errorf("registry a: %s uploaded %d times (base blob: %v); want each new blob once and no base blob", d, n, isBase[d])
		}
	}
	if got, want := len(uploadCounts(reqsA)), len(all)-len(e.baseBlobs); got != want {
		t.Errorf("registry a: %d blobs uploaded, want the %d new ones", got, want)
	}
	mirror := trafficOf(reqsA, "fo/mirror")
	if len(mirror.uploaded) != 0 || len(mirror.mounted) != len(all) {
		t.Errorf("fo/mirror: uploaded %v, mounted %d of %d blobs; want every blob mounted", mirror.uploaded, len(mirror.mounted), len(all))
	}
	if app := trafficOf(reqsA, "fo/app"); len(app.mounted) != len(e.baseBlobs) {
		t.Errorf("fo/app: mounted %v, want the base's %d blobs", app.mounted, len(e.baseBlobs))
	}
	// Registry b: every blob, the base's original ones included, uploaded
	// once.
	up := uploadCounts(registryRequests(t, b)[beforeB:])
	for d := range all {
		if up[d] != 1 {
			t.Errorf("registry b: %s uploaded %d times, want once", d, up[d])
		}
	}
	if len(up) != len(all) {
		t.Errorf("registry b: %d blobs uploaded, want %d", len(up), len(all))
	}

	checkBlobsBeforeManifests(t, append(timedRequests(t, a, start), timedRequests(t, b, start)...), nil)

	// Pullable: a real pull from the second registry gives the image the
	// put built.
	d := testenv.StartDockerd(t)
	auth, _ := dregistry.EncodeAuthConfig(dregistry.AuthConfig{Username: b.Username, Password: b.Password, ServerAddress: b.Host})
	rc, err := d.Client().ImagePull(t.Context(), b.Host+"/fo/app:1.0", image.PullOptions{RegistryAuth: auth})
	if err != nil {
		t.Fatal(err)
	}
	_, err = testenv.ReadJSONStream(rc)
	rc.Close()
	if err != nil {
		t.Fatalf("docker pull %s/fo/app:1.0: %v", b.Host, err)
	}
	ins, err := d.Client().ImageInspect(t.Context(), b.Host+"/fo/app:1.0")
	if err != nil || ins.ID != m.Config.Digest.String() || !strings.HasPrefix(m.Config.Digest.Hex, meta["image"]) {
		t.Errorf("pulled image %s (%v), want %s, the put's image %s", ins.ID, err, m.Config.Digest, meta["image"])
	}
	readsBack(t, a, "fo/mirror:latest")
}

// readsBack reads every blob of ref (go-containerregistry checks digests)
// and returns the image.
func readsBack(t *testing.T, reg *testenv.Registry, ref string) v1.Image {
	t.Helper()
	img, err := remote.Image(reg.Ref(t, ref), reg.RemoteOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err == nil {
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
		}
		if err != nil {
			t.Errorf("%s: layer: %v", ref, err)
		}
	}
	return img
}

// absent fails when any of refs (repo:tag on reg) exists.
func absent(t *testing.T, reg *testenv.Registry, refs ...string) {
	t.Helper()
	for _, ref := range refs {
		if _, ok := rawManifest(t, reg, ref); ok {
			t.Errorf("%s/%s is tagged", reg.Host, ref)
		}
	}
}

// TestPutFanOutRefused: a repository whose registry refuses the put's
// credentials (none: anonymous; or a wrong password) fails the put with an
// error naming it, and no repository gets a tag: the source's, the other
// one on its registry, the refused one.
func TestPutFanOutRefused(t *testing.T) {
	e := startFanOut(t)
	a, b := e.a, e.b
	for _, c := range []struct {
		name string
		src  map[string]any
		log  string
	}{
		{"anonymous", e.source("fo/anon", false), "anonymously: no additional_private_registries entry names " + b.Host},
		{"wrong password", source(a, "fo/wrong", map[string]any{"additional_private_registries": []map[string]any{
			{"registry": b.Host, "username": b.Username, "password": "not-" + b.Password}}}), "with the additional_private_registries entry for " + b.Host},
	} {
		t.Run(c.name, func(t *testing.T) {
			repo := c.src["repository"].(string)
			_, path, _ := strings.Cut(repo, "/")
			start := time.Now()
			r := runOut(t, e.srcDir, map[string]any{"source": c.src, "params": map[string]any{
				"build": "app", "load_base": "base", "tag_as_latest": true,
				"additional_repositories": []string{repo + "-mirror", b.Host + "/" + path},
			}})
			if r.err == nil || !strings.Contains(r.err.Error(), "to "+b.Host+"/"+path+":") || !strings.Contains(r.err.Error(), "no repository holds the new tags") {
				t.Fatalf("err %v, want one naming %s/%s and saying no repository holds the new tags\n%s", r.err, b.Host, path, r.stderr)
			}
			if r.stdout != "" || !strings.Contains(r.stderr, c.log) {
				t.Errorf("stdout %q; the log does not say %q:\n%s", r.stdout, c.log, r.stderr)
			}
			absent(t, a, path+":latest", path+"-mirror:latest")
			absent(t, b, path+":latest")
			for _, reg := range []*testenv.Registry{a, b} {
				for _, req := range timedRequests(t, reg, start) {
					if req.manifestPut() {
						t.Errorf("%s: manifest PUT %s", reg.Host, req.uri)
					}
				}
			}
		})
	}
}

// TestPutFanOutBadEntry: a bad additional_repositories entry fails the
// put before its daemon starts, naming the entry.
func TestPutFanOutBadEntry(t *testing.T) {
	srcDir := t.TempDir()
	writeFiles(t, srcDir, map[string]string{"app/Dockerfile": "FROM scratch\n"})
	src := map[string]any{"repository": "registry.example.com:5000/team/app"}
	for _, c := range []struct {
		name  string
		repos []string
		want  string
	}{
		{"upper case", []string{"registry.example.com/Team/App"}, `params.additional_repositories[0]: "registry.example.com/Team/App" is not a valid repository: repository names must be lower case`},
		{"with a tag", []string{"other.example.com/app", "other.example.com/app2:1"}, `params.additional_repositories[1]: "other.example.com/app2:1" must not contain a tag`},
		{"twice", []string{"alpine", "other.example.com/x", "docker.io/library/alpine"}, `params.additional_repositories[2]: "docker.io/library/alpine" is params.additional_repositories[0] ("alpine") again`},
		{"the source again", []string{"registry.example.com:5000/team/app"}, `params.additional_repositories[0]: "registry.example.com:5000/team/app" is source.repository`},
	} {
		t.Run(c.name, func(t *testing.T) {
			began := time.Now()
			r := runOut(t, srcDir, map[string]any{"source": src, "params": map[string]any{"build": "app", "additional_repositories": c.repos}})
			if r.err == nil || !strings.Contains(r.err.Error(), c.want) {
				t.Fatalf("err %v, want %q", r.err, c.want)
			}
			if strings.Contains(r.stderr, "starting dockerd") || time.Since(began) > 5*time.Second {
				t.Errorf("the daemon was started (or the put took %s):\n%s", time.Since(began), r.stderr)
			}
		})
	}
}

// TestPutFanOutThroughDaemon: a load_file put goes through the daemon to
// the source's repository, then on to the others, blobs first: their
// manifests are the source's bytes, written after their last blob; the
// source's were written (by the daemon) before. A refused repository
// then leaves the source's tags and no other, and the error says so.
func TestPutFanOutThroughDaemon(t *testing.T) {
	e := startFanOut(t)
	a, b := e.a, e.b
	params := func(repos ...string) map[string]any {
		return map[string]any{"load_file": "base/image", "load_repository": a.Host + "/fo/base", "load_tag": "1", "additional_repositories": repos}
	}
	start := time.Now()
	beforeB := len(registryRequests(t, b))
	r := runOut(t, e.srcDir, map[string]any{"source": e.source("fo/daemon", true), "params": params(a.Host+"/fo/daemon-mirror", b.Host+"/fo/daemon")})
	if r.err != nil {
		t.Fatalf("out: %v\n%s", r.err, r.stderr)
	}
	resp := decodeResponse(t, r)
	if metaOf(resp)["push"] != "daemon" || !strings.Contains(r.stderr, "push: through the daemon") ||
		!strings.Contains(r.stderr, "then every blob goes on to each additional repository (2) before any of them gets a manifest") {
		t.Errorf("metadata %v; the log does not say the daemon pushed first:\n%s", resp.Metadata, r.stderr)
	}
	first, _ := rawManifest(t, a, "fo/daemon:latest")
	if first == nil || first.Digest.String() != resp.Version.Digest {
		t.Fatalf("fo/daemon:latest is %v, the response says %s", first, resp.Version.Digest)
	}
	for _, c := range []struct {
		reg *testenv.Registry
		ref string
	}{{a, "fo/daemon-mirror:latest"}, {b, "fo/daemon:latest"}} {
		sameManifest(t, c.reg, c.ref, first)
	}
	m, _ := manifestOf(t, a, "fo/daemon:latest")
	up := uploadCounts(registryRequests(t, b)[beforeB:])
	if len(up) != len(m.Layers)+1 {
		t.Errorf("registry b: %d blobs uploaded, want the %d of the image", len(up), len(m.Layers)+1)
	}
	for d, n := range up {
		if n != 1 {
			t.Errorf("registry b: %s uploaded %d times", d, n)
		}
	}
	if tr := trafficOf(registryRequests(t, a), "fo/daemon-mirror"); len(tr.uploaded) != 0 || len(tr.mounted) != len(m.Layers)+1 {
		t.Errorf("fo/daemon-mirror: uploaded %v, mounted %v; want every blob mounted from fo/daemon", tr.uploaded, tr.mounted)
	}
	// The order: the daemon's manifest, then every blob of the others,
	// then their manifests.
	reqs := append(timedRequests(t, a, start), timedRequests(t, b, start)...)
	additional := func(r timedRequest) bool { return !strings.HasPrefix(r.uri, "/v2/fo/daemon/") || r.host == b.Host }
	checkBlobsBeforeManifests(t, reqs, additional)
	var daemonManifest, firstOtherBlob time.Time
	for _, r := range reqs {
		if r.host == a.Host && r.manifestPut() && strings.HasPrefix(r.uri, "/v2/fo/daemon/manifests/") {
			daemonManifest = r.at
		}
		if r.blob() && r.host == b.Host && (firstOtherBlob.IsZero() || r.at.Before(firstOtherBlob)) {
			firstOtherBlob = r.at
		}
	}
	if daemonManifest.IsZero() || !firstOtherBlob.After(daemonManifest) {
		t.Errorf("the daemon's manifest at %s, registry b's first blob at %s: want the daemon's push first", daemonManifest, firstOtherBlob)
	}

	// Refused: the source's repository has its tag, the others none.
	r = runOut(t, e.srcDir, map[string]any{"source": e.source("fo/daemon2", false), "params": params(a.Host+"/fo/daemon2-mirror", b.Host+"/fo/daemon2")})
	want := "only " + a.Host + "/fo/daemon2 holds the new tags"
	if r.err == nil || !strings.Contains(r.err.Error(), b.Host+"/fo/daemon2") || !strings.Contains(r.err.Error(), want) {
		t.Fatalf("err %v, want one naming %s/fo/daemon2 and saying %q\n%s", r.err, b.Host, want, r.stderr)
	}
	if _, ok := rawManifest(t, a, "fo/daemon2:latest"); !ok {
		t.Errorf("the daemon's push of fo/daemon2:latest is missing")
	}
	absent(t, a, "fo/daemon2-mirror:latest")
	absent(t, b, "fo/daemon2:latest")
}

// TestPutFanOutECR: an additional repository on another ECR registry gets
// that registry's own token, fetched with the source's AWS keys before the
// build (both ECR names are one loopback registry here).
func TestPutFanOutECR(t *testing.T) {
	e := startECR(t)
	e.reg.Push(t, "other/base:1", testenv.BusyboxImage(t, testenv.ImageOptions{}))
	srcDir := t.TempDir()
	writeFiles(t, srcDir, map[string]string{"app/Dockerfile": "FROM " + ecrRepoHost + "/other/base:1\nRUN echo built > /built\n"})
	r := runOutECR(t, e, srcDir, map[string]any{"source": e.source("team/app", true, nil),
		"params": map[string]any{"build": "app", "additional_repositories": []string{ecrFromHost + "/team/mirror"}}})
	if r.err != nil {
		t.Fatalf("out: %v\n%s", r.err, r.stderr)
	}
	e.noMarkers(t, "out", r)
	resp := decodeResponse(t, r)
	if !strings.Contains(r.stderr, "push: also to "+ecrFromHost+"/team/mirror, with an ECR token for "+ecrFromHost) {
		t.Errorf("the log does not say the additional repository gets an ECR token:\n%s", r.stderr)
	}
	got := e.regions()
	slices.Sort(got)
	if !slices.Equal(got, []string{"eu-west-1", "us-east-1"}) {
		t.Errorf("token requests in %v, want one per ECR registry", got)
	}
	for _, repo := range []string{"team/app", "team/mirror"} {
		desc, err := remote.Head(e.reg.Ref(t, repo+":latest"), e.reg.RemoteOptions()...)
		if err != nil || desc.Digest.String() != resp.Version.Digest {
			t.Errorf("%s:latest is %v (%v), the put reported %s", repo, desc, err, resp.Version.Digest)
		}
	}
}

// TestPutFanOutPulledBase: a FROM the daemon pulled from the source's
// registry is pushed there as its original blobs (TestPushPulledBase);
// a repository on another registry gets those very blobs, read from the
// source's registry, so the manifest is the same.
func TestPutFanOutPulledBase(t *testing.T) {
	e := startFanOut(t)
	a, b := e.a, e.b
	beforeB := len(registryRequests(t, b))
	resp := putOK(t, e.srcDir, map[string]any{"source": e.source("fo/pulled", true), "params": map[string]any{
		"build": "app", "additional_repositories": []string{b.Host + "/fo/pulled"},
	}})
	first, _ := rawManifest(t, a, "fo/pulled:latest")
	other, ok := rawManifest(t, b, "fo/pulled:latest")
	if first == nil || !ok || first.Digest.String() != resp.Version.Digest || !bytes.Equal(first.Manifest, other.Manifest) {
		t.Fatalf("%s/fo/pulled:latest %v, %s/fo/pulled:latest %v; want both the put's %s", a.Host, first, b.Host, other, resp.Version.Digest)
	}
	m, _ := manifestOf(t, a, "fo/pulled:latest")
	for i, d := range e.baseBlobs {
		if m.Layers[i].Digest.String() != d {
			t.Errorf("layer %d is %s, not the base's original blob %s", i, m.Layers[i].Digest, d)
		}
	}
	up := uploadCounts(registryRequests(t, b)[beforeB:])
	if len(up) != len(m.Layers)+1 {
		t.Errorf("registry b: %d blobs uploaded, want the image's %d", len(up), len(m.Layers)+1)
	}
	readsBack(t, b, "fo/pulled:latest")
}
