package test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	"github.com/concourse-docker/docker-image-resource/pkg/resource"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Fault tests run the commands in-process through testenv's fault proxy in
// front of a real registry. Retries are shortened (fastRetry: 5 attempts,
// 20 ms doubling to 100 ms, a 10 s budget; Retry-After is still honoured in
// full) and so is the response timeout, so a stall costs a second.

const faultResponseTimeout = time.Second

func faultHooks(o *registry.Options) {
	fastRetry(o)
	o.ResponseTimeout = faultResponseTimeout
}

// gapAfter is the time between the first faulted request matching method
// and path and the request that followed it with the same method and path.
func gapAfter(t *testing.T, p *testenv.FaultProxy, method, path string) time.Duration {
	t.Helper()
	reqs := p.RequestsMatching(method, path)
	for i, r := range reqs {
		if r.Fault != 0 && i+1 < len(reqs) {
			return reqs[i+1].At.Sub(r.At)
		}
	}
	t.Fatalf("no retry of a faulted %s %s: %v", method, path, reqs)
	return 0
}

// blobGETs counts the GETs of each blob through the proxy.
func blobGETs(p *testenv.FaultProxy, digests ...v1.Hash) map[string]int {
	out := map[string]int{}
	for _, d := range digests {
		out[d.Hex[:12]] = len(p.RequestsMatching("GET", "/blobs/"+d.String()))
	}
	return out
}

// assertNothingComplete: after a failed get, DEST holds nothing that looks
// like a finished get (no version files, no image, no rootfs.tar) and no
// temporary state.
func assertNothingComplete(t *testing.T, dest string) {
	t.Helper()
	ents, err := os.ReadDir(dest)
	if os.IsNotExist(err) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		switch n := e.Name(); {
		case n == "image" || n == "image-id" || n == "digest" || n == "repository" || n == "tag" || n == "rootfs.tar":
			t.Errorf("a failed get left %s in DEST", n)
		case strings.HasPrefix(n, "."):
			t.Errorf("a failed get left temporary state %s in DEST", n)
		}
	}
}

func TestFaultsCheck(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	d := reg.Push(t, "faults/check:latest", testenv.BusyboxImage(t, testenv.ImageOptions{})).String()
	req := func(p *testenv.FaultProxy) map[string]any {
		return map[string]any{"source": map[string]any{"repository": p.Host + "/faults/check", "username": reg.Username, "password": reg.Password}}
	}
	t.Run("429 with Retry-After: the retry waits as asked", func(t *testing.T) {
		p := testenv.StartFaultProxy(t, reg.Host, testenv.Fault{Kind: testenv.Fault429, Count: 1, RetryAfter: "2", PathContains: "/manifests/"})
		assertVersions(t, checkVersions(t, req(p), faultHooks), d)
		gap := gapAfter(t, p, "", "/manifests/")
		t.Logf("retried %s after the 429 (Retry-After: 2)", gap.Round(time.Millisecond))
		if gap < 2*time.Second {
			t.Errorf("retried after %s, before the 2 s the registry asked for", gap)
		}
	})
	t.Run("a burst of 500, 502 and 503", func(t *testing.T) {
		p := testenv.StartFaultProxy(t, reg.Host,
			testenv.Fault{Kind: testenv.Fault500, Count: 1}, testenv.Fault{Kind: testenv.Fault502, Count: 1}, testenv.Fault{Kind: testenv.Fault503, Count: 2})
		assertVersions(t, checkVersions(t, req(p), faultHooks), d)
		if p.Faulted() != 4 {
			t.Errorf("faulted %d, want 4", p.Faulted())
		}
	})
	t.Run("a connection reset", func(t *testing.T) {
		p := testenv.StartFaultProxy(t, reg.Host, testenv.Fault{Kind: testenv.FaultReset, Count: 2})
		assertVersions(t, checkVersions(t, req(p), faultHooks), d)
	})
	t.Run("a response that stalls past the timeout", func(t *testing.T) {
		p := testenv.StartFaultProxy(t, reg.Host, testenv.Fault{Kind: testenv.FaultStall, Count: 1, PathContains: "/manifests/"})
		start := time.Now()
		assertVersions(t, checkVersions(t, req(p), faultHooks), d)
		if el := time.Since(start); el < faultResponseTimeout {
			t.Errorf("done in %s, before the stalled request could time out", el)
		}
	})
	t.Run("a registry that never recovers fails within the bound", func(t *testing.T) {
		for _, f := range []testenv.Fault{{Kind: testenv.Fault503, Count: -1}, {Kind: testenv.FaultStall, Count: -1}} {
			p := testenv.StartFaultProxy(t, reg.Host, f)
			start := time.Now()
			r := checkFails(t, req(p), []string{"failed to fetch digest for image '" + p.Host + "/faults/check:latest'", "attempts over"}, faultHooks)
			el := time.Since(start)
			t.Logf("%s forever: failed after %s: %v", f.Kind, el.Round(time.Millisecond), r.err)
			// fastRetry's budget is 10 s; one more response timeout may follow.
			if el > 10*time.Second+faultResponseTimeout+2*time.Second {
				t.Errorf("%s forever: failed after %s, beyond the budget", f.Kind, el)
			}
			if !strings.Contains(r.stderr, "retrying in") {
				t.Errorf("retries are not logged:\n%s", r.stderr)
			}
		}
	})
}

func TestFaultsGet(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{2 << 20, 3 << 20}})
	digest := reg.Push(t, "faults/get:1", img).String()
	id, _ := img.ConfigName()
	m, _ := img.Manifest()
	var layers []v1.Hash
	for _, l := range m.Layers {
		layers = append(layers, l.Digest)
	}
	faulty := layers[len(layers)-1] // the 3 MiB layer
	req := func(p *testenv.FaultProxy) map[string]any {
		return map[string]any{
			"source":  map[string]any{"repository": p.Host + "/faults/get", "tag": "1", "username": reg.Username, "password": reg.Password},
			"version": map[string]any{"digest": digest},
			"params":  map[string]any{"save": true},
		}
	}
	// Every blob is fetched once, the faulted one as often as wanted.
	assertGETs := func(t *testing.T, p *testenv.FaultProxy, faultedGETs int) {
		t.Helper()
		got := blobGETs(p, layers...)
		for _, l := range layers {
			want := 1
			if l == faulty {
				want = faultedGETs
			}
			if got[l.Hex[:12]] != want {
				t.Errorf("blob GETs %v: %s fetched %d times, want %d", got, l.Hex[:12], got[l.Hex[:12]], want)
			}
		}
	}
	assertFiles := func(t *testing.T, dest string) {
		t.Helper()
		if got := strings.TrimSpace(readFile(t, filepath.Join(dest, "image-id"))); got != id.String() {
			t.Errorf("image-id %s, want %s", got, id)
		}
		if got := strings.TrimSpace(readFile(t, filepath.Join(dest, "digest"))); got != digest {
			t.Errorf("digest %s, want %s", got, digest)
		}
		if _, err := os.Stat(filepath.Join(dest, ".download")); !os.IsNotExist(err) {
			t.Errorf("the blob folder is still there: %v", err)
		}
	}
	blob := "/blobs/" + faulty.String()
	cases := []struct {
		name        string
		faults      []testenv.Fault
		faultedGETs int
	}{
		{"429 with Retry-After on a blob", []testenv.Fault{{Kind: testenv.Fault429, Count: 1, RetryAfter: "2", PathContains: blob}}, 2},
		{"a burst of 500, 502 and 503 on a blob", []testenv.Fault{
			{Kind: testenv.Fault500, Count: 1, PathContains: blob}, {Kind: testenv.Fault502, Count: 1, PathContains: blob}, {Kind: testenv.Fault503, Count: 1, PathContains: blob}}, 4},
		{"a connection reset in the middle of a blob", []testenv.Fault{{Kind: testenv.FaultResetMidBody, Count: 1, AfterBytes: 1 << 20, PathContains: blob}}, 2},
		{"a blob that stalls past the timeout", []testenv.Fault{{Kind: testenv.FaultStallMidBody, Count: 1, AfterBytes: 1 << 20, PathContains: blob}}, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := testenv.StartFaultProxy(t, reg.Host, c.faults...)
			dest := t.TempDir()
			start := time.Now()
			r := runIn(t, dest, req(p), faultHooks)
			if r.err != nil {
				t.Fatalf("in: %v\n%s", r.err, r.stderr)
			}
			t.Logf("done in %s; faulted %d", time.Since(start).Round(time.Millisecond), p.Faulted())
			if p.Faulted() != len(c.faults) {
				t.Errorf("faulted %d requests, want %d", p.Faulted(), len(c.faults))
			}
			assertGETs(t, p, c.faultedGETs)
			assertFiles(t, dest)
			if c.faults[0].Kind == testenv.Fault429 {
				if gap := gapAfter(t, p, "GET", blob); gap < 2*time.Second {
					t.Errorf("blob retried after %s, before the 2 s Retry-After", gap)
				}
			}
			if !strings.Contains(r.stderr, "retrying") {
				t.Errorf("the retry is not logged:\n%s", r.stderr)
			}
		})
	}
	t.Run("a registry that never recovers fails within the bound", func(t *testing.T) {
		for _, f := range []testenv.Fault{
			{Kind: testenv.Fault503, Count: -1, PathContains: blob},
			{Kind: testenv.FaultStallMidBody, Count: -1, AfterBytes: 1 << 20, PathContains: blob},
		} {
			p := testenv.StartFaultProxy(t, reg.Host, f)
			dest := t.TempDir()
			start := time.Now()
			r := runIn(t, dest, req(p), faultHooks)
			el := time.Since(start)
			if r.err == nil {
				t.Fatalf("%s forever: the get succeeded", f.Kind)
			}
			t.Logf("%s forever: failed after %s: %v", f.Kind, el.Round(time.Millisecond), r.err)
			if !strings.Contains(r.err.Error(), faulty.String()) {
				t.Errorf("the error does not name the layer %s", faulty)
			}
			// 503: fastRetry's 10 s budget, once. A stalled body: 4 blob
			// attempts (1+2+4 s apart), each cut after the 1 s timeout.
			if el > 20*time.Second {
				t.Errorf("%s forever: failed after %s", f.Kind, el)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q", r.stdout)
			}
			assertNothingComplete(t, dest)
		}
	})
}

// runOutWith runs out in-process with an isolated daemon and registry hooks.
// *took is set to its time without the wait for the dockerd lock.
func runOutWith(t *testing.T, srcDir string, req map[string]any, hooks func(*registry.Options), took *time.Duration) result {
	t.Helper()
	unlock := testenv.LockDockerd(t)
	defer unlock()
	start := time.Now()
	defer func() { *took = time.Since(start) }()
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var out, errb strings.Builder
	env := resource.Env{Stdin: strings.NewReader(string(b)), Stdout: &out, Stderr: &errb, Args: []string{"out", srcDir}}
	env.Hooks.Daemon = func(o *daemon.Options) { o.Isolated = true }
	env.Hooks.BuildNetwork = "none"
	env.Hooks.Registry = hooks
	err = resource.Out(t.Context(), env)
	return result{stdout: out.String(), stderr: errb.String(), err: err}
}

// assertComplete fails unless repo:tag names a manifest whose every blob
// the registry has.
func assertComplete(t *testing.T, reg *testenv.Registry, ref string) v1.Hash {
	t.Helper()
	img, err := remote.Image(reg.Ref(t, ref), reg.RemoteOptions()...)
	if err != nil {
		t.Fatalf("%s: %v", ref, err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	repo := reg.Ref(t, ref).Context()
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		hreq, _ := http.NewRequest(http.MethodHead, reg.URL("/v2/"+repo.RepositoryStr()+"/blobs/"+d.Digest.String()), nil)
		hreq.SetBasicAuth(reg.Username, reg.Password)
		resp, err := reg.HTTPClient().Do(hreq)
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("%s names blob %s, which the registry lacks (%v %v)", ref, d.Digest, resp, err)
		}
		if resp != nil {
			resp.Body.Close()
		}
	}
	dg, _ := img.Digest()
	return dg
}

func TestFaultsPut(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	base := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{1 << 20}})
	baseDigest := reg.Push(t, "faults/base:1", base).String()
	srcDir := t.TempDir()
	getOK(t, filepath.Join(srcDir, "base"), map[string]any{
		"source": source(reg, "faults/base", map[string]any{"tag": "1"}), "version": map[string]any{"digest": baseDigest},
		"params": map[string]any{"save": true, "rootfs": true},
	})
	writeFiles(t, srcDir, map[string]string{
		"app/Dockerfile": "FROM " + reg.Host + "/faults/base:1\nCOPY data /data\n",
		"app/data":       strings.Repeat("layer data\n", 200000),
		"more":           "second\n",
	})
	// The target is the proxy: a registry host of its own, so every base
	// blob is uploaded through it (no cross-repository mount).
	// One upload at a time, so the faults hit the requests in a known order.
	var took time.Duration // of the last put
	put := func(t *testing.T, p *testenv.FaultProxy, repo string, params map[string]any) result {
		src := map[string]any{"repository": p.Host + "/" + repo, "username": reg.Username, "password": reg.Password, "max_concurrent_uploads": 1}
		return runOutWith(t, srcDir, map[string]any{"source": src, "params": params}, faultHooks, &took)
	}
	direct := map[string]any{"build": "app", "load_base": "base", "additional_tags": "more"}
	daemonPush := map[string]any{"import_file": "base/rootfs.tar"}

	t.Run("direct push survives 429, 5xx, resets and stalls", func(t *testing.T) {
		p := testenv.StartFaultProxy(t, reg.Host,
			testenv.Fault{Kind: testenv.Fault429, Count: 1, RetryAfter: "2", Method: "PATCH"},
			testenv.Fault{Kind: testenv.Fault503, Count: 1, Method: "POST", PathContains: "/blobs/uploads/"},
			testenv.Fault{Kind: testenv.Fault502, Count: 1, Method: "PUT", PathContains: "/blobs/uploads/"},
			testenv.Fault{Kind: testenv.FaultResetMidBody, Count: 1, Method: "PATCH", AfterBytes: 256 << 10},
			testenv.Fault{Kind: testenv.FaultStallMidBody, Count: 1, Method: "PATCH", AfterBytes: 256 << 10},
			testenv.Fault{Kind: testenv.Fault500, Count: 1, Method: "PUT", PathContains: "/manifests/"},
		)
		r := put(t, p, "faults/direct", direct)
		if r.err != nil {
			t.Fatalf("out: %v\n%s", r.err, r.stderr)
		}
		t.Logf("put done in %s through %d faults", took.Round(time.Millisecond), p.Faulted())
		if !strings.Contains(r.stderr, "push: straight to the registry") {
			t.Errorf("not the direct push:\n%s", r.stderr)
		}
		if p.Faulted() != 6 {
			t.Errorf("faulted %d, want 6", p.Faulted())
		}
		if gap := gapAfter(t, p, "PATCH", "/blobs/uploads/"); gap < 2*time.Second {
			t.Errorf("upload retried after %s, before the 2 s Retry-After", gap)
		}
		resp := decodeResponse(t, r)
		for _, tag := range []string{"latest", "second"} {
			if got := assertComplete(t, reg, "faults/direct:"+tag); got.String() != resp.Version.Digest {
				t.Errorf("%s is %s, the put said %s", tag, got, resp.Version.Digest)
			}
		}
	})
	// Issue 12, item 11: a Retry-After of 2^63-1 s overflowed into a
	// negative wait, the upload was sent again at once and the put went on
	// against the registry's rate limit. A wait beyond the retry budget is
	// not waited for: the put fails at once, saying what was asked.
	t.Run("direct push gives up at once on a Retry-After beyond the budget", func(t *testing.T) {
		p := testenv.StartFaultProxy(t, reg.Host, testenv.Fault{Kind: testenv.Fault429, Count: 1, RetryAfter: "9223372036854775807", Method: "PATCH"})
		r := put(t, p, "faults/beyond", direct)
		if r.err == nil {
			t.Fatalf("the put succeeded after the registry asked it to wait 2^63-1 s:\n%s", r.stderr)
		}
		t.Logf("failed after %s: %v", took.Round(time.Millisecond), r.err)
		for _, w := range []string{"429 Too Many Requests", "it asked to retry after 9223372036854775807s, beyond the 10s retry budget"} {
			if !strings.Contains(r.err.Error(), w) {
				t.Errorf("the error does not say %q", w)
			}
		}
		if !strings.Contains(r.stderr, "are original blobs of the bases") || p.Faulted() != 1 {
			t.Errorf("not the direct push through one 429 (faulted %d):\n%s", p.Faulted(), r.stderr)
		}
		// Other blobs' uploads may have been under way; the refused one was
		// not sent again, and no manifest was written.
		for _, rq := range p.RequestsMatching("PATCH", "/blobs/uploads/") {
			if n := len(p.RequestsMatching("PATCH", rq.Path)); rq.Fault != 0 && n != 1 {
				t.Errorf("the upload refused with the 429 was sent %d times", n)
			}
		}
		for _, rq := range p.RequestsMatching("PUT", "/manifests/") {
			t.Errorf("a manifest was written: %v", rq)
		}
		if strings.Contains(r.stderr, "retrying in -") {
			t.Errorf("a negative wait:\n%s", r.stderr)
		}
	})
	// dockerd retries an upload 5 times, 5, 10, 15 and 20 s apart, and
	// ignores Retry-After.
	t.Run("daemon push survives a 429, a 503 and a reset", func(t *testing.T) {
		p := testenv.StartFaultProxy(t, reg.Host,
			testenv.Fault{Kind: testenv.Fault429, Count: 1, Method: "PATCH", RetryAfter: "1"},
			testenv.Fault{Kind: testenv.Fault503, Count: 1, Method: "PATCH"},
			testenv.Fault{Kind: testenv.FaultResetMidBody, Count: 1, Method: "PATCH", AfterBytes: 64 << 10},
		)
		r := put(t, p, "faults/daemon", daemonPush)
		if r.err != nil {
			t.Fatalf("out: %v\n%s", r.err, r.stderr)
		}
		t.Logf("put done in %s through %d faults", took.Round(time.Millisecond), p.Faulted())
		if !strings.Contains(r.stderr, "push: through the daemon") || p.Faulted() != 3 {
			t.Errorf("faulted %d, want 3; log:\n%s", p.Faulted(), r.stderr)
		}
		if got := assertComplete(t, reg, "faults/daemon:latest"); got.String() != decodeResponse(t, r).Version.Digest {
			t.Errorf("latest is %s", got)
		}
	})

	// The tag was a complete image before; a put that cannot upload a blob
	// fails, and the tag still names that complete image; a new tag does not
	// exist: manifests are written last.
	for _, c := range []struct {
		name, repo string
		params     map[string]any
		bound      time.Duration
	}{
		{"direct push to a registry that never recovers", "faults/never-direct", direct, 30 * time.Second},
		{"daemon push to a registry that never recovers", "faults/never-daemon", daemonPush, 120 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			old := reg.Push(t, c.repo+":latest", testenv.BusyboxImage(t, labelled(t, "old")))
			p := testenv.StartFaultProxy(t, reg.Host, testenv.Fault{Kind: testenv.Fault503, Count: -1, Method: "PATCH"})
			r := put(t, p, c.repo, c.params)
			el := took
			if r.err == nil {
				t.Fatalf("the put succeeded:\n%s", r.stderr)
			}
			t.Logf("failed after %s: %v", el.Round(time.Millisecond), r.err)
			if !strings.Contains(r.err.Error(), "503") {
				t.Errorf("the error does not name the 503")
			}
			if el > c.bound {
				t.Errorf("failed after %s, beyond %s", el, c.bound)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q", r.stdout)
			}
			if got := assertComplete(t, reg, c.repo+":latest"); got != old {
				t.Errorf("latest is %s, want the old complete image %s", got, old)
			}
			if _, err := remote.Head(reg.Ref(t, c.repo+":second"), reg.RemoteOptions()...); err == nil {
				t.Error("the failed put wrote the tag second")
			}
			for _, rq := range p.RequestsMatching("PUT", "/manifests/") {
				t.Errorf("a manifest was written: %v", rq)
			}
		})
	}
}
