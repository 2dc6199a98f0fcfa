package registry

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/retry"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

var fastRetry = retry.Policy{Attempts: 4, Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond, Budget: 3 * time.Second}

// serve starts an in-process registry behind a handler wrapper and pushes
// one image as repo:tag; it returns host and digest.
func serve(t *testing.T, wrap func(http.Handler) http.Handler) (string, string) {
	t.Helper()
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	wrapped := wrap(reg)
	var armed atomic.Bool // faults start once the image is pushed
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if armed.Load() {
			wrapped.ServeHTTP(w, r)
		} else {
			reg.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(host + "/team/app:1.10")
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	armed.Store(true)
	return host, d.String()
}

func TestDigestRetriesHonouringRetryAfter(t *testing.T) {
	var seen, faulted atomic.Int32
	host, want := serve(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodHead {
				if !strings.Contains(r.UserAgent(), "docker-image-resource") {
					t.Errorf("user agent %q", r.UserAgent())
				}
			}
			if seen.Add(1) <= 2 && r.Method == http.MethodHead {
				faulted.Add(1)
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	c, err := New(Options{Retry: fastRetry})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, err := c.Digest(context.Background(), host+"/team/app", "1.10")
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != want {
		t.Errorf("digest %s want %s", got, want)
	}
	// Retry-After: 1 was honoured, not the 10 ms backoff.
	if faulted.Load() > 0 && time.Since(start) < time.Second {
		t.Errorf("retried after %s, before Retry-After", time.Since(start))
	}
}

func TestRetryGivesUpWithinBound(t *testing.T) {
	host, _ := serve(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
		})
	})
	c, _ := New(Options{Retry: fastRetry})
	_, err := c.Digest(context.Background(), host+"/team/app", "1.10")
	var re *RetryError
	if !errors.As(err, &re) || re.Status != 503 || re.Attempts != 4 {
		t.Fatalf("err %v", err)
	}
	if !strings.Contains(Explain(err).Error(), "503 Service Unavailable (4 attempts") {
		t.Errorf("explain: %s", Explain(err))
	}
}

func TestNotFound(t *testing.T) {
	host, _ := serve(t, func(h http.Handler) http.Handler { return h })
	c, _ := New(Options{})
	_, err := c.Digest(context.Background(), host+"/team/app", "missing")
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err %v", err)
	}
	ok, err := c.Exists(context.Background(), host+"/team/app", mustHash(t, "sha256:"+strings.Repeat("0", 64)))
	if ok || err != nil {
		t.Fatalf("exists %v %v", ok, err)
	}
}

func TestMirrorAndHostOverride(t *testing.T) {
	// "library/alpine" on Docker Hub is served by a loopback registry through
	// the test-only Hosts override; the mirror is a second one.
	var originHits atomic.Int32
	origin, _ := serve(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { originHits.Add(1); h.ServeHTTP(w, r) })
	})
	img, _ := random.Image(128, 1)
	ref, _ := name.ParseReference(origin + "/library/alpine:3")
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()

	mirrorSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer mirrorSrv.Close()

	c, err := New(Options{
		Mirror: mirrorSrv.URL,
		Retry:  retry.Policy{Attempts: 1},
		// The origin speaks plain http; Docker Hub is https. Point the
		// https port at a TLS-terminating stand-in instead: here a plain
		// listener is enough to prove the dial is redirected.
		Hosts:    map[string]string{"index.docker.io:443": origin, "index.docker.io:80": origin},
		Insecure: []string{"index.docker.io"},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Digest(context.Background(), "alpine", "3")
	if err != nil {
		t.Fatal(err)
	}
	if got != want || originHits.Load() == 0 {
		t.Errorf("digest %s want %s, origin hits %d", got, want, originHits.Load())
	}
}

func TestInsecureMatching(t *testing.T) {
	s, err := newInsecureSet([]string{"reg.local:5000", "10.1.0.0/16", "plain"}, func(h string) []net.IP {
		if h == "inside.example" {
			return []net.IP{net.ParseIP("10.1.2.3")}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{"reg.local:5000": true, "reg.local:5001": false, "10.1.9.9:443": true, "10.2.0.1": false, "plain:8080": true, "inside.example:5000": true, "other": false} {
		if got := s.match(host); got != want {
			t.Errorf("match(%s) = %v", host, got)
		}
	}
}

func TestNormalizeHost(t *testing.T) {
	for in, want := range map[string]string{"docker.io": DockerHub, "https://index.docker.io/v1/": DockerHub, "reg:5000": "reg:5000", "http://reg:5000/x": "reg:5000"} {
		if got := NormalizeHost(in); got != want {
			t.Errorf("%s: %s", in, got)
		}
	}
}

func TestExplainRefused(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	c, _ := New(Options{Retry: retry.Policy{Attempts: 2, Initial: time.Millisecond}})
	_, err := c.Digest(context.Background(), addr+"/x", "latest")
	if err == nil || !strings.Contains(Explain(err).Error(), "connection refused") {
		t.Fatalf("explain: %s", Explain(err))
	}
}

func mustHash(t *testing.T, s string) v1.Hash {
	h, err := v1.NewHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
