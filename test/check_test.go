package test

import (
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

// checkVersions runs check in-process and decodes its stdout; it fails the
// test if check failed.
func checkVersions(t *testing.T, req map[string]any, hooks ...func(*registry.Options)) []protocol.Version {
	t.Helper()
	r := runCheck(t, req, hooks...)
	if r.err != nil {
		t.Fatalf("check failed: %v\nstderr:\n%s", r.err, r.stderr)
	}
	var vs []protocol.Version
	if err := json.Unmarshal([]byte(r.stdout), &vs); err != nil {
		t.Fatalf("stdout is not a version list: %q: %v", r.stdout, err)
	}
	return vs
}

func digests(vs []protocol.Version) []string {
	out := []string{}
	for _, v := range vs {
		out = append(out, v.Digest)
	}
	return out
}

func assertVersions(t *testing.T, got []protocol.Version, want ...string) {
	t.Helper()
	g := digests(got)
	if want == nil {
		want = []string{}
	}
	if strings.Join(g, ",") != strings.Join(want, ",") {
		t.Fatalf("versions %v, want %v", g, want)
	}
}

// checkFails runs check expecting failure: nothing on stdout, and an error
// containing every wanted fragment.
func checkFails(t *testing.T, req map[string]any, want []string, hooks ...func(*registry.Options)) result {
	t.Helper()
	r := runCheck(t, req, hooks...)
	if r.err == nil {
		t.Fatalf("check succeeded, want failure; stdout %q", r.stdout)
	}
	t.Logf("error: %v", r.err)
	if r.stdout != "" {
		t.Errorf("stdout must be empty on failure, got %q", r.stdout)
	}
	for _, w := range want {
		if !strings.Contains(r.err.Error(), w) {
			t.Errorf("error %q\n does not contain %q", r.err, w)
		}
	}
	return r
}

func source(reg *testenv.Registry, repo string, extra map[string]any) map[string]any {
	s := map[string]any{"repository": reg.Host + "/" + repo, "username": reg.Username, "password": reg.Password}
	for k, v := range extra {
		s[k] = v
	}
	return s
}

func labelled(t *testing.T, v string) testenv.ImageOptions {
	return testenv.ImageOptions{Labels: map[string]string{"v": v}}
}

func TestCheckVersions(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	d1 := reg.Push(t, "team/app:1.10", testenv.BusyboxImage(t, labelled(t, "one"))).String()
	// A different image under "1.1" proves a numeric 1.10 is not read as 1.1.
	reg.Push(t, "team/app:1.1", testenv.BusyboxImage(t, labelled(t, "other")))

	t.Run("first check reports the latest", func(t *testing.T) {
		vs := checkVersions(t, map[string]any{"source": source(reg, "team/app", map[string]any{"tag": json.Number("1.10")})})
		assertVersions(t, vs, d1)
	})

	d2 := reg.Push(t, "team/app:1.10", testenv.BusyboxImage(t, labelled(t, "two"))).String()
	if d1 == d2 {
		t.Fatal("test images must differ")
	}

	t.Run("cursor kept before the latest", func(t *testing.T) {
		vs := checkVersions(t, map[string]any{"source": source(reg, "team/app", map[string]any{"tag": "1.10"}), "version": map[string]any{"digest": d1}})
		assertVersions(t, vs, d1, d2)
	})
	t.Run("cursor equal to latest", func(t *testing.T) {
		vs := checkVersions(t, map[string]any{"source": source(reg, "team/app", map[string]any{"tag": "1.10"}), "version": map[string]any{"digest": d2}})
		assertVersions(t, vs, d2)
	})
	t.Run("cursor deleted", func(t *testing.T) {
		reg.Delete(t, "team/app@"+d1)
		vs := checkVersions(t, map[string]any{"source": source(reg, "team/app", map[string]any{"tag": "1.10"}), "version": map[string]any{"digest": d1}})
		assertVersions(t, vs, d2)
	})
	t.Run("missing tag gives no versions", func(t *testing.T) {
		vs := checkVersions(t, map[string]any{"source": source(reg, "team/app", map[string]any{"tag": "nope"})})
		assertVersions(t, vs)
	})
	t.Run("missing repository gives no versions", func(t *testing.T) {
		vs := checkVersions(t, map[string]any{"source": source(reg, "team/none", nil)})
		assertVersions(t, vs)
	})
	t.Run("default tag is latest", func(t *testing.T) {
		d := reg.Push(t, "team/app:latest", testenv.BusyboxImage(t, labelled(t, "latest"))).String()
		vs := checkVersions(t, map[string]any{"source": source(reg, "team/app", nil)})
		assertVersions(t, vs, d)
	})
	t.Run("wrong password", func(t *testing.T) {
		src := source(reg, "team/app", nil)
		src["password"] = "not-the-password-4711"
		r := checkFails(t, map[string]any{"source": src}, []string{
			"failed to fetch digest for image '" + reg.Host + "/team/app:latest':",
			"refused the credentials", "source.username and source.password",
		})
		if strings.Contains(r.err.Error()+r.stderr, "not-the-password-4711") {
			t.Error("the password leaked into the output")
		}
	})
	t.Run("no credentials", func(t *testing.T) {
		checkFails(t, map[string]any{"source": map[string]any{"repository": reg.Host + "/team/app"}}, []string{"requires credentials (401 Unauthorized): set source.username"})
	})
}

func TestCheckMediaTypes(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	oci := reg.Push(t, "m/oci:1", testenv.BusyboxImage(t, testenv.ImageOptions{MediaType: "oci"})).String()
	idx := reg.PushIndex(t, "m/index:1", testenv.MultiPlatformIndex(t, nil, testenv.ImageOptions{})).String()
	assertVersions(t, checkVersions(t, map[string]any{"source": source(reg, "m/oci", map[string]any{"tag": 1})}), oci)
	assertVersions(t, checkVersions(t, map[string]any{"source": source(reg, "m/index", map[string]any{"tag": "1"})}), idx)
}

func TestCheckTLS(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{TLS: true})
	d := reg.Push(t, "secure/app:latest", testenv.BusyboxImage(t, testenv.ImageOptions{})).String()

	t.Run("ca_certs trusts the registry", func(t *testing.T) {
		src := source(reg, "secure/app", map[string]any{"ca_certs": []map[string]any{{"domain": reg.Host, "cert": string(reg.CA.CertPEM)}}})
		assertVersions(t, checkVersions(t, map[string]any{"source": src}), d)
	})
	t.Run("unknown CA is a clear error", func(t *testing.T) {
		checkFails(t, map[string]any{"source": source(reg, "secure/app", nil)}, []string{"unknown authority", "source.ca_certs"})
	})
	t.Run("insecure_registries skips verification", func(t *testing.T) {
		src := source(reg, "secure/app", map[string]any{"insecure_registries": []string{reg.Host}})
		assertVersions(t, checkVersions(t, map[string]any{"source": src}), d)
	})
	t.Run("insecure_registries by CIDR", func(t *testing.T) {
		src := source(reg, "secure/app", map[string]any{"insecure_registries": []string{"127.0.0.0/30"}})
		assertVersions(t, checkVersions(t, map[string]any{"source": src}), d)
	})
}

func TestCheckMutualTLS(t *testing.T) {
	clientCA := testenv.NewCA(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{ClientCA: clientCA})
	d := reg.Push(t, "mtls/app:latest", testenv.BusyboxImage(t, testenv.ImageOptions{})).String()
	ca := []map[string]any{{"domain": reg.Host, "cert": string(reg.CA.CertPEM)}}

	src := source(reg, "mtls/app", map[string]any{"ca_certs": ca, "client_certs": []map[string]any{{
		"domain": reg.Host, "cert": string(reg.ClientCertPEM), "key": string(reg.ClientKeyPEM),
	}}})
	assertVersions(t, checkVersions(t, map[string]any{"source": src}), d)

	r := checkFails(t, map[string]any{"source": source(reg, "mtls/app", map[string]any{"ca_certs": ca})}, []string{"failed to fetch digest", "source.client_certs"}, fastRetry)
	if strings.Contains(r.stderr, "PRIVATE KEY") {
		t.Error("key material in logs")
	}
}

func TestCheckPlainHTTPRegistry(t *testing.T) {
	// On 127.0.0.2 go-containerregistry insists on https unless told.
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{Host: "127.0.0.2"})
	d := reg.Push(t, "plain/app:latest", testenv.BusyboxImage(t, testenv.ImageOptions{})).String()
	src := source(reg, "plain/app", map[string]any{"insecure_registries": []string{reg.Host}})
	assertVersions(t, checkVersions(t, map[string]any{"source": src}), d)
	checkFails(t, map[string]any{"source": source(reg, "plain/app", nil)}, []string{"plain HTTP", "insecure_registries"})
}

func TestCheckDockerHubMirror(t *testing.T) {
	// The origin plays Docker Hub: "index.docker.io:443" dials it through the
	// test-only Hosts hook; its cert names index.docker.io.
	origin := testenv.StartRegistry(t, testenv.RegistryOptions{TLS: true, ExtraNames: []string{"index.docker.io"}})
	mirror := testenv.StartRegistry(t, testenv.RegistryOptions{NoAuth: true})
	fromOrigin := origin.Push(t, "library/busybox:1", testenv.BusyboxImage(t, labelled(t, "origin"))).String()
	fromMirror := mirror.Push(t, "library/busybox:1", testenv.BusyboxImage(t, labelled(t, "mirror"))).String()
	onlyOrigin := origin.Push(t, "library/busybox:2", testenv.BusyboxImage(t, labelled(t, "two"))).String()
	hub := func(o *registry.Options) {
		o.Hosts = map[string]string{"index.docker.io:443": origin.Host}
	}
	src := func(tag string) map[string]any {
		return map[string]any{
			"repository": "busybox", "tag": tag, "username": origin.Username, "password": origin.Password,
			"registry_mirror": "http://" + mirror.Host,
			"ca_certs":        []map[string]any{{"domain": "index.docker.io", "cert": string(origin.CA.CertPEM)}},
		}
	}
	t.Run("mirror answers for Docker Hub names", func(t *testing.T) {
		assertVersions(t, checkVersions(t, map[string]any{"source": src("1")}, hub), fromMirror)
	})
	t.Run("falls back to the origin when the mirror lacks the tag", func(t *testing.T) {
		assertVersions(t, checkVersions(t, map[string]any{"source": src("2")}, hub), onlyOrigin)
	})
	t.Run("falls back when the mirror is down", func(t *testing.T) {
		mirror.Stop()
		assertVersions(t, checkVersions(t, map[string]any{"source": src("1")}, hub, fastRetry), fromOrigin)
	})
	t.Run("mirror is never used for an explicit host", func(t *testing.T) {
		s := source(origin, "library/busybox", map[string]any{"tag": "1", "registry_mirror": "http://" + mirror.Host,
			"ca_certs": []map[string]any{{"domain": origin.Host, "cert": string(origin.CA.CertPEM)}}})
		assertVersions(t, checkVersions(t, map[string]any{"source": s}), fromOrigin)
	})
}

func TestCheckRegistryFaults(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	d := reg.Push(t, "flaky/app:latest", testenv.BusyboxImage(t, testenv.ImageOptions{})).String()
	through := func(p *testenv.FaultProxy) map[string]any {
		return map[string]any{"source": map[string]any{"repository": p.Host + "/flaky/app", "username": reg.Username, "password": reg.Password}}
	}
	t.Run("429 with Retry-After, then success", func(t *testing.T) {
		p := testenv.StartFaultProxy(t, reg.Host, testenv.Fault{Kind: testenv.Fault429, Count: 2, RetryAfter: "1"})
		r := runCheck(t, through(p), fastRetry)
		if r.err != nil {
			t.Fatalf("%v\n%s", r.err, r.stderr)
		}
		if p.Faulted() != 2 || !strings.Contains(r.stderr, "429") {
			t.Errorf("faulted %d; stderr %s", p.Faulted(), r.stderr)
		}
		if !strings.Contains(r.stdout, d) {
			t.Errorf("stdout %s", r.stdout)
		}
	})
	t.Run("503, then success", func(t *testing.T) {
		p := testenv.StartFaultProxy(t, reg.Host, testenv.Fault{Kind: testenv.Fault503, Count: 3})
		assertVersions(t, checkVersions(t, through(p), fastRetry), d)
		if p.Faulted() != 3 {
			t.Errorf("faulted %d", p.Faulted())
		}
	})
	t.Run("connection resets, then success", func(t *testing.T) {
		p := testenv.StartFaultProxy(t, reg.Host, testenv.Fault{Kind: testenv.FaultReset, Count: 2})
		assertVersions(t, checkVersions(t, through(p), fastRetry), d)
	})
	t.Run("faults that never stop fail within the bound", func(t *testing.T) {
		p := testenv.StartFaultProxy(t, reg.Host, testenv.Fault{Kind: testenv.Fault503, Count: -1})
		checkFails(t, through(p), []string{"failed to fetch digest", "503 Service Unavailable", "attempts"}, fastRetry)
	})
	// Issue 12, item 11: a Retry-After of 2^63-1 seconds overflowed into a
	// negative wait (an immediate retry); one beyond the retry budget gives
	// up at once, saying what the registry asked.
	for _, ra := range []string{"9223372036854775807", "99999999999999999999999", "Fri, 31 Dec 9999 23:59:59 GMT"} {
		t.Run("Retry-After "+ra+" gives up at once", func(t *testing.T) {
			p := testenv.StartFaultProxy(t, reg.Host, testenv.Fault{Kind: testenv.Fault429, Count: 1, RetryAfter: ra, PathContains: "/manifests/"})
			start := time.Now()
			r := checkFails(t, through(p), []string{"failed to fetch digest", "429 Too Many Requests", "(1 attempt ", "beyond the 10s retry budget"}, fastRetry)
			if el := time.Since(start); el > 2*time.Second {
				t.Errorf("gave up after %s", el)
			}
			if n := len(p.RequestsMatching("HEAD", "/manifests/")); n != 1 {
				t.Errorf("%d manifest requests, want 1 (no retry)", n)
			}
			if strings.Contains(r.stderr, "retrying in -") {
				t.Errorf("a negative wait:\n%s", r.stderr)
			}
		})
	}
	t.Run("unreachable registry", func(t *testing.T) {
		checkFails(t, map[string]any{"source": map[string]any{"repository": "127.0.0.1:1/x"}}, []string{"failed to fetch digest for image '127.0.0.1:1/x:latest'", "unreachable"}, fastRetry)
	})
}

func TestCheckBadRequests(t *testing.T) {
	for _, c := range []struct{ name, stdin, want string }{
		{"unknown key", `{"source":{"repository":"r","usrename":"u"}}`, `unknown source key "usrename" — did you mean "username"?`},
		{"malformed JSON", `{"source":`, `malformed request on stdin`},
		{"empty stdin", ``, `no request on stdin`},
		{"missing repository", `{"source":{}}`, `source.repository is required`},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := runRaw(t, checkCmd, c.stdin, nil)
			if r.err == nil || !strings.Contains(r.err.Error(), c.want) {
				t.Errorf("err %v, want %q", r.err, c.want)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q", r.stdout)
			}
		})
	}
}

// notARegistry is a loopback web server that is no registry: every path
// gets an HTML 404 page, as a wrong host, port or proxy path answers.
func notARegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(htmlNotFound))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func htmlNotFound(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusNotFound)
	fmt.Fprintf(w, "<html><body><h1>404 Not Found</h1><p>%s</p></body></html>\n", html.EscapeString(r.URL.Path))
}

// registryProxy is a reverse proxy in front of reg that hands it only the
// requests route accepts (rewriting the path it returns) and answers every
// other one with an HTML 404 page.
func registryProxy(t *testing.T, reg *testenv.Registry, route func(path string) (string, bool)) string {
	t.Helper()
	target, err := url.Parse(reg.URL("/"))
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := route(r.URL.Path)
		if !ok {
			htmlNotFound(w, r)
			return
		}
		r.URL.Path, r.URL.RawPath = p, ""
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestCheckNotARegistry: only a registry's own answer that a tag or
// repository is unknown gives no versions (issue 12, item 3). A host that
// is no registry, or a proxy path that does not reach one, used to give []
// and exit 0, so the pipeline waited for ever.
func TestCheckNotARegistry(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	d := reg.Push(t, "team/app:1", testenv.BusyboxImage(t, testenv.ImageOptions{})).String()
	web := notARegistry(t)
	// The registry mounted under /registry/ of a proxy: its /v2/ is the
	// proxy's own 404 page.
	mounted := registryProxy(t, reg, func(p string) (string, bool) {
		rest, ok := strings.CutPrefix(p, "/registry")
		return rest, ok && strings.HasPrefix(rest, "/v2/")
	})
	// A proxy that routes /v2/ and the team/ repositories to the registry,
	// and nothing else: /v2/ answers as a registry, other/app does not.
	routed := registryProxy(t, reg, func(p string) (string, bool) {
		return p, p == "/v2/" || strings.HasPrefix(p, "/v2/team/")
	})
	src := func(host, repo, tag string) map[string]any {
		return map[string]any{"source": map[string]any{"repository": host + "/" + repo, "tag": tag, "username": reg.Username, "password": reg.Password}}
	}

	t.Run("a web server's 404 page fails the check", func(t *testing.T) {
		checkFails(t, src(web, "team/app", "1"), []string{
			"failed to fetch digest for image '" + web + "/team/app:1': ",
			web + " does not answer as a registry (GET /v2/ gave 404)",
		})
	})
	t.Run("the registry under a proxy path fails the check", func(t *testing.T) {
		checkFails(t, src(mounted, "team/app", "1"), []string{
			"failed to fetch digest for image '" + mounted + "/team/app:1': ",
			mounted + " does not answer as a registry (GET /v2/ gave 404)",
		})
	})
	t.Run("a repository path the proxy does not route fails the check", func(t *testing.T) {
		checkFails(t, src(routed, "other/app", "1"), []string{
			"failed to fetch digest for image '" + routed + "/other/app:1': ",
			routed + " does not answer as a registry for other/app",
			"404", "not a registry's error",
		})
	})
	t.Run("through the proxy the registry's own answers count", func(t *testing.T) {
		assertVersions(t, checkVersions(t, src(routed, "team/app", "1")), d)
		assertVersions(t, checkVersions(t, src(routed, "team/app", "nope")))
		assertVersions(t, checkVersions(t, src(routed, "team/none", "1")))
	})
	t.Run("the real registry: an unknown tag or repository gives no versions", func(t *testing.T) {
		assertVersions(t, checkVersions(t, src(reg.Host, "team/app", "nope")))
		assertVersions(t, checkVersions(t, src(reg.Host, "team/none", "1")))
	})
	t.Run("a cursor on a host that is no registry fails", func(t *testing.T) {
		req := src(web, "team/app", "1")
		req["version"] = map[string]any{"digest": d}
		checkFails(t, req, []string{"does not answer as a registry (GET /v2/ gave 404)"})
	})
	t.Run("the get from a web server says it is no registry", func(t *testing.T) {
		dest := t.TempDir()
		req := src(web, "team/app", "1")
		req["version"] = map[string]any{"digest": d}
		r := runIn(t, dest, req)
		if r.err == nil {
			t.Fatalf("the get succeeded: %s", r.stdout)
		}
		t.Logf("error: %v", r.err)
		if !strings.Contains(r.err.Error(), web+" does not answer as a registry (GET /v2/ gave 404)") {
			t.Errorf("error %q does not say the host is no registry", r.err)
		}
		if strings.Contains(r.err.Error(), "not found") {
			t.Errorf("error %q still calls it not found", r.err)
		}
		assertNoCompleteGet(t, dest)
	})
	t.Run("the get of a digest the registry does not have says not found", func(t *testing.T) {
		req := src(reg.Host, "team/app", "1")
		missing := "sha256:" + strings.Repeat("0", 64)
		req["version"] = map[string]any{"digest": missing}
		r := runIn(t, t.TempDir(), req)
		if r.err == nil || !strings.Contains(r.err.Error(), "image "+reg.Host+"/team/app@"+missing+" not found") {
			t.Errorf("err %v", r.err)
		}
	})
}

// TestCheckDockerHubMirrorAnswers: a Docker Hub name goes to the mirror
// first; a mirror that is no registry is a warning and the origin's answer
// counts, and the mirror's own credentials come from an
// additional_private_registries entry for its host (issue 12, items 2, 3).
func TestCheckDockerHubMirrorAnswers(t *testing.T) {
	origin := testenv.StartRegistry(t, testenv.RegistryOptions{TLS: true, ExtraNames: []string{"index.docker.io"}})
	// The mirror has users of its own: the Docker Hub credentials do not
	// open it.
	mirror := testenv.StartRegistry(t, testenv.RegistryOptions{Username: "mirror-user"})
	fromOrigin := origin.Push(t, "library/busybox:1", testenv.BusyboxImage(t, labelled(t, "origin"))).String()
	fromMirror := mirror.Push(t, "library/busybox:1", testenv.BusyboxImage(t, labelled(t, "mirror"))).String()
	web := notARegistry(t)
	hub := func(o *registry.Options) { o.Hosts = map[string]string{"index.docker.io:443": origin.Host} }
	src := func(mirrorURL, tag string, extra map[string]any) map[string]any {
		s := map[string]any{
			"repository": "busybox", "tag": tag, "username": origin.Username, "password": origin.Password,
			"registry_mirror": mirrorURL,
			"ca_certs":        []map[string]any{{"domain": "index.docker.io", "cert": string(origin.CA.CertPEM)}},
		}
		for k, v := range extra {
			s[k] = v
		}
		return map[string]any{"source": s}
	}
	mirrorCreds := map[string]any{"additional_private_registries": []map[string]any{
		{"registry": mirror.Host, "username": mirror.Username, "password": mirror.Password},
	}}

	t.Run("a mirror that is no registry: the origin answers", func(t *testing.T) {
		r := runCheck(t, src("http://"+web, "1", nil), hub)
		if r.err != nil {
			t.Fatalf("%v\n%s", r.err, r.stderr)
		}
		if !strings.Contains(r.stdout, fromOrigin) {
			t.Errorf("stdout %s, want the origin's %s", r.stdout, fromOrigin)
		}
		if !strings.Contains(r.stderr, "mirror "+web+": "+web+" does not answer as a registry (GET /v2/ gave 404)") || !strings.Contains(r.stderr, "; falling back to index.docker.io") {
			t.Errorf("no warning about the mirror:\n%s", r.stderr)
		}
	})
	t.Run("a mirror that is no registry and a tag the origin lacks: no versions", func(t *testing.T) {
		assertVersions(t, checkVersions(t, src("http://"+web, "nope", nil), hub))
	})
	t.Run("the mirror's credentials from additional_private_registries", func(t *testing.T) {
		r := runCheck(t, src("http://"+mirror.Host, "1", mirrorCreds), hub)
		if r.err != nil {
			t.Fatalf("%v\n%s", r.err, r.stderr)
		}
		if !strings.Contains(r.stdout, fromMirror) || strings.Contains(r.stderr, "falling back") {
			t.Errorf("stdout %s, want the mirror's %s without a fallback; stderr:\n%s", r.stdout, fromMirror, r.stderr)
		}
		for _, secret := range []string{mirror.Password, origin.Password} {
			if strings.Contains(r.stderr, secret) {
				t.Error("a password is in the log")
			}
		}
	})
	t.Run("without them the mirror refuses and the origin answers", func(t *testing.T) {
		r := runCheck(t, src("http://"+mirror.Host, "1", nil), hub)
		if r.err != nil || !strings.Contains(r.stdout, fromOrigin) || !strings.Contains(r.stderr, "falling back") {
			t.Errorf("err %v stdout %s stderr:\n%s", r.err, r.stdout, r.stderr)
		}
	})
	t.Run("the get uses the mirror's credentials", func(t *testing.T) {
		dest := t.TempDir()
		req := src("http://"+mirror.Host, "1", mirrorCreds)
		req["version"] = map[string]any{"digest": fromMirror}
		getOK(t, dest, req, hub)
		if got := strings.TrimSpace(readFile(t, filepath.Join(dest, "digest"))); got != fromMirror {
			t.Errorf("digest %s, want %s", got, fromMirror)
		}
	})
}
