package registry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/retry"
)

// fakeRegistry answers /v2/ with ping and every other path with manifest.
func fakeRegistry(t *testing.T, ping, manifest http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			ping(w, r)
			return
		}
		manifest(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func status(code int, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Add(header[i], header[i+1])
		}
		w.WriteHeader(code)
	}
}

func registryError(code string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"errors":[{"code":"`+code+`","message":"unknown"}]}`)
	}
}

func htmlPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(http.StatusNotFound)
	io.WriteString(w, "<html>404 Not Found</html>")
}

// TestNotFoundOnlyFromARegistry: a 404 means "no such tag" only when the
// host answers /v2/ as a registry and the 404 carries a registry error.
func TestNotFoundOnlyFromARegistry(t *testing.T) {
	for _, c := range []struct {
		name           string
		ping, manifest http.HandlerFunc
		notFound       bool
		want           string
	}{
		{"registry, anonymous", status(200), registryError("MANIFEST_UNKNOWN"), true, ""},
		{"registry, basic auth", status(401, "WWW-Authenticate", `Basic realm="r"`), registryError("NAME_UNKNOWN"), true, ""},
		{"web server", htmlPage, htmlPage, false, "does not answer as a registry (GET /v2/ gave 404)"},
		{"500 on /v2/", status(500), registryError("MANIFEST_UNKNOWN"), false, "500"},
		{"401 without a challenge", status(401), registryError("MANIFEST_UNKNOWN"), false, "GET /v2/ gave 401 without a Basic or Bearer challenge"},
		{"401 with another challenge", status(401, "WWW-Authenticate", "Negotiate"), registryError("MANIFEST_UNKNOWN"), false, "without a Basic or Bearer challenge"},
		{"HTML 404 behind a registry's /v2/", status(200), htmlPage, false, "does not answer as a registry for team/app (GET /v2/team/app/manifests/1 gave a 404 that is not a registry's error"},
		{"empty 404 behind a registry's /v2/", status(200), status(404), false, "not a registry's error"},
		{"302 to a 404 page", status(302, "Location", "/nowhere"), htmlPage, false, "GET /v2/ gave 404"},
	} {
		t.Run(c.name, func(t *testing.T) {
			host := fakeRegistry(t, c.ping, c.manifest)
			cl, _ := New(Options{Retry: fastRetry})
			_, err := cl.Digest(context.Background(), host+"/team/app", "1")
			if errors.Is(err, ErrNotFound) != c.notFound {
				t.Fatalf("err %v; want not found: %v", err, c.notFound)
			}
			if c.want != "" && !strings.Contains(cl.Explain(err).Error(), c.want) {
				t.Errorf("explained %q, want %q", cl.Explain(err), c.want)
			}
			var nr *NotRegistryError
			if !c.notFound && c.ping != nil && strings.Contains(c.want, "answer as a registry") && !errors.As(err, &nr) {
				t.Errorf("err %T %v is no NotRegistryError", err, err)
			}
		})
	}
}

// TestTokenEndpoint404IsNoNotFound: a 404 of the token realm says nothing
// about the tag.
func TestTokenEndpoint404IsNoNotFound(t *testing.T) {
	realm := httptest.NewServer(http.HandlerFunc(htmlPage))
	defer realm.Close()
	host := fakeRegistry(t, status(401, "WWW-Authenticate", `Bearer realm="`+realm.URL+`/token",service="r"`), registryError("MANIFEST_UNKNOWN"))
	cl, _ := New(Options{Retry: fastRetry})
	_, err := cl.Digest(context.Background(), host+"/team/app", "1")
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("err %v", err)
	}
}

// TestUploadRetryAfterCapped: an upload's 429 asking for more than Max
// waits Max (it used to wait nothing at all), and a huge one no negative
// or endless wait.
func TestUploadRetryAfterCapped(t *testing.T) {
	for _, ra := range []string{"3600", "9223372036854775807"} {
		next := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			h := http.Header{"Retry-After": {ra}}
			return &http.Response{StatusCode: http.StatusTooManyRequests, Header: h, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
		})
		policy := retry.Policy{Attempts: 3, Initial: 10 * time.Millisecond, Max: 5 * time.Second, Budget: 10 * time.Second}
		rt := newRetryTransport(next, policy, (&Options{}).log())
		var waits []time.Duration
		rt.sleep = func(_ *http.Request, d time.Duration) error { waits = append(waits, d); return nil }
		req, _ := http.NewRequest(http.MethodPatch, "http://registry.test/v2/x/blobs/uploads/1", io.NopCloser(strings.NewReader("body")))
		req.GetBody = nil
		resp, err := rt.RoundTrip(req)
		if err != nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("Retry-After %s: %v %v", ra, resp, err)
		}
		if len(waits) != 1 || waits[0] != policy.Max {
			t.Errorf("Retry-After %s: waits %v, want one of %s", ra, waits, policy.Max)
		}
	}
}

// TestOperationBackoffCapped: go-containerregistry's whole-upload retries
// wait at most Max too.
func TestOperationBackoffCapped(t *testing.T) {
	b := operationBackoff(retry.Policy{Attempts: 10, Initial: time.Second, Max: 3 * time.Second, Budget: time.Minute})
	if b.Cap != 3*time.Second {
		t.Errorf("cap %s", b.Cap)
	}
}
