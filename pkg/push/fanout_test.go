package push

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// wire records the requests of several in-memory registries in one order:
// each request when it starts and when its answer is complete.
type wire struct {
	mu     sync.Mutex
	events []event
}

type event struct {
	end          bool
	host, method string
	path, query  string
	status       int
}

func (e event) blob() bool { return strings.Contains(e.path, "/blobs/") && e.method != http.MethodGet }
func (e event) manifest() bool {
	return e.method == http.MethodPut && strings.Contains(e.path, "/manifests/")
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) { w.status = code; w.ResponseWriter.WriteHeader(code) }

// registry starts an in-memory registry whose requests w records; deny,
// when it gives a status, answers a request with that instead.
func (w *wire) registry(t *testing.T, deny func(*http.Request) int) string {
	t.Helper()
	h := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		e := event{host: r.Host, method: r.Method, path: r.URL.Path, query: r.URL.RawQuery}
		w.add(e)
		sw := &statusWriter{ResponseWriter: rw, status: http.StatusOK}
		if code := deny(r); code != 0 {
			sw.WriteHeader(code)
			fmt.Fprintf(sw, `{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`)
		} else {
			h.ServeHTTP(sw, r)
		}
		e.end, e.status = true, sw.status
		w.add(e)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func (w *wire) add(e event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.events = append(w.events, e)
}

func (w *wire) all() []event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.events)
}

// checkBlobsFirst: no manifest PUT starts, at any registry, before the
// last blob request has been answered.
func (w *wire) checkBlobsFirst(t *testing.T) {
	t.Helper()
	ev := w.all()
	lastBlob, firstManifest := -1, -1
	for i, e := range ev {
		if e.end && e.blob() {
			lastBlob = i
		}
		if !e.end && e.manifest() && firstManifest < 0 {
			firstManifest = i
		}
	}
	if lastBlob < 0 || firstManifest < 0 || firstManifest < lastBlob {
		t.Errorf("last blob request answered at event %d, first manifest PUT started at %d: want every blob before any manifest", lastBlob, firstManifest)
	}
}

// uploads counts committed blob uploads (PUT ?digest=) at host, by digest.
func (w *wire) uploads(host string) map[string]int {
	n := map[string]int{}
	for _, e := range w.all() {
		if e.end && e.host == host && e.method == http.MethodPut && strings.Contains(e.path, "/blobs/uploads/") && e.status == http.StatusCreated {
			if i := strings.Index(e.query, "digest="); i >= 0 {
				n[strings.ReplaceAll(e.query[i+len("digest="):], "%3A", ":")]++
			}
		}
	}
	return n
}

func (w *wire) manifestPuts() []string {
	var out []string
	for _, e := range w.all() {
		if e.end && e.manifest() && e.status < 300 {
			out = append(out, e.host+e.path)
		}
	}
	return out
}

// fanOutBuild is a build on a saved base whose blobs are on no registry
// the push writes to, ready for Push.
func fanOutBuild(t *testing.T) (Options, [][]byte) {
	t.Helper()
	base := randomImage(t)
	d, _ := base.Digest()
	dir := savedFolder(t, base, d.String())
	raws := builtOn(t, base, 50000)
	config := configFor(raws)
	rc, err := registry.New(registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return Options{Daemon: &saveDaemon{config: config, stream: saveStream(t, config, raws, false)}, Registry: rc,
		Image: sha256Hash(config).String(), Tags: []string{"1", "latest"}, Bases: []string{dir}, Jobs: 3, TempDir: t.TempDir()}, raws
}

func never(*http.Request) int { return 0 }

// TestPushFansOut: the primary and a second repository on one registry, a
// third on another. Every blob reaches every repository before the first
// manifest PUT, each registry gets each blob once, every repository holds
// the same manifest bytes under every tag.
func TestPushFansOut(t *testing.T) {
	var w wire
	a, b := w.registry(t, never), w.registry(t, never)
	o, raws := fanOutBuild(t)
	o.Repository, o.Additional = a+"/team/app", []string{a + "/team/mirror", b + "/other/app"}
	res, err := Push(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	w.checkBlobsFirst(t)
	blobs := len(raws) + 1 // the layers and the config
	for _, host := range []string{a, b} {
		up := w.uploads(host)
		if len(up) != blobs {
			t.Errorf("%s: %d blobs uploaded, want %d", host, len(up), blobs)
		}
		for d, n := range up {
			if n != 1 {
				t.Errorf("%s: blob %s uploaded %d times, want once per registry", host, d, n)
			}
		}
	}
	var want []byte
	for _, repo := range append([]string{o.Repository}, o.Additional...) {
		for _, tag := range o.Tags {
			desc, err := remote.Get(mustRef(t, repo+":"+tag))
			if err != nil {
				t.Fatalf("%s:%s: %v", repo, tag, err)
			}
			if want == nil {
				want = desc.Manifest
			}
			if desc.Digest != res.Digest || !bytes.Equal(desc.Manifest, want) {
				t.Errorf("%s:%s is %s; want the same manifest bytes, %s, everywhere", repo, tag, desc.Digest, res.Digest)
			}
		}
	}
	if got := len(w.manifestPuts()); got != 6 || res.Manifests != 6 {
		t.Errorf("%d manifest PUTs (result says %d), want 2 tags x 3 repositories", got, res.Manifests)
	}
	if len(res.Repositories) != 3 || res.Repositories[0].Repository != o.Repository || res.Repositories[2].Repository != b+"/other/app" {
		t.Fatalf("repositories %+v", res.Repositories)
	}
	// The in-memory registry keeps blobs across repositories, so the
	// second repository of a registry finds what its lead uploaded.
	if r := res.Repositories[1]; r.Uploaded.Blobs != 0 || r.Reused().Blobs != blobs || r.Manifests != 2 {
		t.Errorf("%s: %+v, want every blob found and 2 manifests", r.Repository, r)
	}
	if r := res.Repositories[2]; r.Uploaded.Blobs != blobs || r.Manifests != 2 {
		t.Errorf("%s: %+v, want every blob uploaded and 2 manifests", r.Repository, r)
	}
}

// TestPushFanOutRefusedLeavesNoTag: a repository that refuses blobs fails
// the push, naming it, and no manifest is written anywhere.
func TestPushFanOutRefusedLeavesNoTag(t *testing.T) {
	var w wire
	a := w.registry(t, never)
	b := w.registry(t, func(r *http.Request) int {
		if strings.HasPrefix(r.URL.Path, "/v2/locked/") {
			return http.StatusForbidden
		}
		return 0
	})
	o, _ := fanOutBuild(t)
	o.Repository, o.Additional = a+"/team/app", []string{a + "/team/mirror", b + "/locked/app"}
	_, err := Push(t.Context(), o)
	if err == nil || !strings.Contains(err.Error(), "to "+b+"/locked/app") || !strings.Contains(err.Error(), "no repository holds the new tags") {
		t.Fatalf("err %v, want one naming %s/locked/app and saying nothing is tagged", err, b)
	}
	if puts := w.manifestPuts(); len(puts) != 0 {
		t.Errorf("manifests written: %v", puts)
	}
	for _, ref := range []string{o.Repository + ":1", o.Repository + ":latest", a + "/team/mirror:1"} {
		if _, err := remote.Head(mustRef(t, ref)); err == nil {
			t.Errorf("%s is tagged", ref)
		}
	}
}

// TestPushFanOutManifestFailure: a manifest write refused after others
// succeeded names the references that hold the new image.
func TestPushFanOutManifestFailure(t *testing.T) {
	var w wire
	a := w.registry(t, never)
	b := w.registry(t, func(r *http.Request) int {
		if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/manifests/latest") {
			return http.StatusForbidden
		}
		return 0
	})
	o, _ := fanOutBuild(t)
	o.Repository, o.Additional = a+"/team/app", []string{b + "/other/app", a + "/team/mirror"}
	_, err := Push(t.Context(), o)
	var me *ManifestError
	if !errors.As(err, &me) {
		t.Fatalf("err %v, want a *ManifestError", err)
	}
	written := []string{a + "/team/app:1", a + "/team/app:latest", b + "/other/app:1"}
	notWritten := []string{a + "/team/mirror:1", a + "/team/mirror:latest"}
	if me.Ref != b+"/other/app:latest" || !slices.Equal(me.Written, written) || !slices.Equal(me.NotWritten, notWritten) {
		t.Errorf("failed %s, written %v, not written %v", me.Ref, me.Written, me.NotWritten)
	}
	if !strings.Contains(err.Error(), "the new image is tagged in "+strings.Join(written, ", ")) {
		t.Errorf("the message does not name where the tags are: %v", err)
	}
}

// TestCopyAfterTheDaemon: an image in the primary (as the daemon leaves
// it) goes on to the others: blobs first, the same manifest bytes.
func TestCopyAfterTheDaemon(t *testing.T) {
	var w wire
	a, b := w.registry(t, never), w.registry(t, never)
	img := randomImage(t)
	if err := remote.Write(mustRef(t, a+"/team/app:1"), img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	raw, _ := img.RawManifest()
	w.events = nil
	rc, _ := registry.New(registry.Options{})
	res, err := Copy(t.Context(), CopyOptions{Registry: rc, Repository: a + "/team/app", Digest: d.String(), Tags: []string{"1"},
		Additional: []string{a + "/team/mirror", b + "/other/app", b + "/other/two"}})
	if err != nil {
		t.Fatal(err)
	}
	w.checkBlobsFirst(t)
	if up := w.uploads(a); len(up) != 0 {
		t.Errorf("uploads to %s, which holds every blob: %v", a, up)
	}
	for dg, n := range w.uploads(b) {
		if n != 1 {
			t.Errorf("%s: %s uploaded %d times", b, dg, n)
		}
	}
	if len(w.uploads(b)) != 4 || res.Manifests != 3 || res.Digest != d {
		t.Errorf("%s got %d blobs, %d manifests, digest %s", b, len(w.uploads(b)), res.Manifests, res.Digest)
	}
	for _, repo := range []string{a + "/team/mirror", b + "/other/app", b + "/other/two"} {
		desc, err := remote.Get(mustRef(t, repo+":1"))
		if err != nil || !bytes.Equal(desc.Manifest, raw) {
			t.Errorf("%s:1: %v; want the primary's manifest bytes", repo, err)
		}
	}

	// A refused repository: the error says only the primary has the tags.
	c := w.registry(t, func(r *http.Request) int {
		if r.Method != http.MethodGet && r.URL.Path != "/v2/" {
			return http.StatusUnauthorized
		}
		return 0
	})
	_, err = Copy(t.Context(), CopyOptions{Registry: rc, Repository: a + "/team/app", Digest: d.String(), Tags: []string{"2"},
		Additional: []string{b + "/other/three", c + "/x/y"}})
	if err == nil || !strings.Contains(err.Error(), c+"/x/y") || !strings.Contains(err.Error(), "only "+a+"/team/app holds the new tags") {
		t.Errorf("err %v", err)
	}
	if _, err := remote.Head(mustRef(t, b+"/other/three:2")); err == nil {
		t.Errorf("%s/other/three:2 was tagged although %s refused", b, c)
	}
}

func TestDestinationsGroupByRegistry(t *testing.T) {
	rc, _ := registry.New(registry.Options{})
	d, err := newDestinations(rc, "r1.example/a", []string{"r2.example/b", "r1.example/c", "alpine", "r2.example/d"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range d.groups {
		var names []string
		for _, r := range g {
			names = append(names, d.name(r))
		}
		got = append(got, strings.Join(names, " "))
	}
	want := []string{"r1.example/a r1.example/c", "r2.example/b r2.example/d", "alpine"}
	if !slices.Equal(got, want) {
		t.Errorf("groups %q, want %q", got, want)
	}
	// A mount is kept only within its registry.
	lead, _ := name.NewRepository("r1.example/base")
	ml := &remote.MountableLayer{Layer: &blob{}, Reference: lead.Tag("1")}
	if forRepo(ml, d.all[2]) != ml || forRepo(ml, d.all[1]) == ml || forRepo(ml, lead) == ml {
		t.Error("forRepo keeps a mount outside its registry or from the repository itself")
	}
}
