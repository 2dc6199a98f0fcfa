package registry

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/retry"
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
	if got := Explain(err); got != "context canceled" {
		t.Errorf("Explain = %q, want context canceled", got)
	}
}
