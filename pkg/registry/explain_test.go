package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/retry"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// aborted stands for the put's abort: a context cause that is a
// cancellation.
type aborted struct{}

func (aborted) Error() string        { return "aborted (SIGTERM)" }
func (aborted) Is(target error) bool { return target == context.Canceled }

// A request the abort cut short is explained as cancelled, not by what its
// other attempt met: with insecure_registries, the HTTPS attempt at a plain
// HTTP registry fails with "server gave HTTP response to HTTPS client".
func TestExplainCancelled(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	c, err := New(Options{Insecure: []string{host}, Retry: retry.Policy{Attempts: 1, Initial: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(100*time.Millisecond, func() { cancel(aborted{}) })
	_, err = c.Digest(ctx, host+"/x", "latest")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want a cancellation", err)
	}
	got := Explain(err)
	if got.Error() != "context canceled" {
		t.Errorf("Explain = %q, want context canceled", got)
	}
	if !errors.Is(got, context.Canceled) || !errors.As(got, new(aborted)) {
		t.Errorf("Explain(%v) lost the cancellation's chain", err)
	}
}

// Explain's sentence wraps the error it explains: a caller still finds the
// status and the cause by type, and the sentence masks what the original
// says in clear (a URL's password).
func TestExplainKeepsTheChain(t *testing.T) {
	if Explain(nil) != nil {
		t.Error("Explain(nil) is not nil")
	}
	limited := &transport.Error{StatusCode: http.StatusTooManyRequests,
		Request: httptest.NewRequest(http.MethodGet, "https://reg.example:5000/v2/a/manifests/1", nil)}
	err := Explain(fmt.Errorf("HEAD manifest: %w", limited))
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusTooManyRequests {
		t.Errorf("errors.As(Explain(429)) = %v, want the *transport.Error with its status", te)
	}
	if want := "reg.example:5000 answered 429 Too Many Requests"; err.Error() != want {
		t.Errorf("Explain(429) = %q, want %q", err, want)
	}

	secret := &url.Error{Op: "Get", URL: "https://user:pw-marker-1c9@reg.example/v2/", Err: syscall.EHOSTUNREACH}
	err = Explain(secret)
	if strings.Contains(err.Error(), "pw-marker-1c9") || !strings.Contains(err.Error(), "https://user:xxxxx@reg.example/v2/") {
		t.Errorf("Explain = %q, want the URL's password masked", err)
	}
	if !errors.Is(err, syscall.EHOSTUNREACH) || !strings.Contains(errors.Unwrap(err).Error(), "pw-marker-1c9") {
		t.Errorf("Explain(%v) does not wrap the original", secret)
	}
}

// TLS failures are told by their types: the alert crypto/tls reports as a
// "remote error" *net.OpError, and net/http's ErrSchemeMismatch.
func TestExplainTLSByType(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{&url.Error{Op: "Get", URL: "https://reg.example/v2/", Err: &net.OpError{Op: "remote error", Err: errors.New("tls: certificate required")}},
			`reg.example rejected the TLS handshake (tls: certificate required): if it requires a client certificate, set source.client_certs for domain "reg.example"`},
		{&url.Error{Op: "Get", URL: "https://reg.example/v2/", Err: http.ErrSchemeMismatch},
			`reg.example answered plain HTTP to an HTTPS request: if it really serves plain HTTP, list "reg.example" in source.insecure_registries`},
	} {
		if got := Explain(c.err).Error(); got != c.want {
			t.Errorf("Explain(%v)\n = %s\nwant %s", c.err, got, c.want)
		}
	}
}
