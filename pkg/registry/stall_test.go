package registry

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/retry"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// TestStalledBodyTimesOut: a response whose body stops arriving fails with a
// StallError after the response timeout instead of hanging.
func TestStalledBodyTimesOut(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, strings.Repeat("x", 100))
		w.(http.Flusher).Flush()
		<-release
	}))
	defer srv.Close()
	defer close(release)
	c, err := New(Options{Retry: fastRetry, ResponseTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: c.Transport()}).Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	n, err := io.Copy(io.Discard, resp.Body)
	var se *StallError
	if !errors.As(err, &se) || n != 100 {
		t.Fatalf("read %d bytes, err %v; want 100 and a StallError", n, err)
	}
	if el := time.Since(start); el < 200*time.Millisecond || el > 2*time.Second {
		t.Errorf("stall noticed after %s, want about 200ms", el)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !retryOperation(err) {
		t.Errorf("a stall must count as a transient timeout: %v", err)
	}
	if !strings.Contains(Explain(err).Error(), "sent no data for 200ms") {
		t.Errorf("Explain: %q", Explain(err).Error())
	}
}

// TestRetryOperation: whole operations are retried after transient
// failures only, and never after the transport gave up.
func TestRetryOperation(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&transport.Error{StatusCode: http.StatusServiceUnavailable}, true},
		{&transport.Error{StatusCode: http.StatusTooManyRequests}, true},
		{&transport.Error{StatusCode: http.StatusUnauthorized}, false},
		{&transport.Error{StatusCode: http.StatusNotFound}, false},
		{&RetryError{Host: "h", Status: 503, Attempts: 6}, false},
		{io.ErrUnexpectedEOF, true},
		{errors.New("something else"), false},
		{nil, false},
	} {
		if got := retryOperation(c.err); got != c.want {
			t.Errorf("retryOperation(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// TestUploadRetryAfterWaits: a 429 to a request whose body cannot be
// replayed is handed back only after the Retry-After wait.
func TestUploadRetryAfterWaits(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()
	c, err := New(Options{Retry: retry.Policy{Attempts: 3, Initial: 10 * time.Millisecond, Max: 5 * time.Second, Budget: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPatch, srv.URL, io.NopCloser(strings.NewReader("body")))
	req.GetBody = nil
	start := time.Now()
	resp, err := c.Transport().RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("status %d", resp.StatusCode)
	}
	if el := time.Since(start); el < time.Second {
		t.Errorf("the 429 came back after %s, before the 1 s Retry-After", el)
	}
}

// TestStalledUploadTimesOut: a registry that stops taking an upload's body
// fails the request with an upload StallError after the timeout, instead of
// leaving it blocked in a write for ever.
func TestStalledUploadTimesOut(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.CopyN(io.Discard, r.Body, 1000)
		<-release
	}))
	defer srv.Close()
	defer close(release)
	c, err := New(Options{Retry: fastRetry, ResponseTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// More than any socket buffers take: the write blocks.
	body := io.NopCloser(io.LimitReader(zeros{}, 256<<20))
	req, _ := http.NewRequest(http.MethodPatch, srv.URL, body)
	start := time.Now()
	resp, err := c.Transport().RoundTrip(req)
	if resp != nil {
		resp.Body.Close()
	}
	var se *StallError
	if !errors.As(err, &se) || !se.Upload {
		t.Fatalf("err %v; want an upload StallError", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("noticed after %s", el)
	}
	if !retryOperation(err) {
		t.Error("a stalled upload must be retried as a whole")
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestDefaultBound: with the default policy a registry that answers 429
// (Retry-After: 50) or 503 for ever is given up on without waiting more
// than the two-minute budget in all.
func TestDefaultBound(t *testing.T) {
	for _, ra := range []string{"50", ""} {
		var tries int
		next := roundTripFunc(func(r *http.Request) (*http.Response, error) {
			tries++
			h := http.Header{}
			status := http.StatusServiceUnavailable
			if ra != "" {
				h.Set("Retry-After", ra)
				status = http.StatusTooManyRequests
			}
			return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
		})
		rt := newRetryTransport(next, DefaultRetry, nil)
		var waited time.Duration
		rt.sleep = func(_ *http.Request, d time.Duration) error { waited += d; return nil }
		rt.log = (&Options{}).log()
		req, _ := http.NewRequest(http.MethodGet, "http://registry.test/v2/", nil)
		_, err := rt.RoundTrip(req)
		var re *RetryError
		if !errors.As(err, &re) {
			t.Fatalf("Retry-After %q: err %v", ra, err)
		}
		t.Logf("Retry-After %q: gave up after %d tries, %s of waiting: %v", ra, tries, waited, err)
		if waited > DefaultRetry.Budget || tries > DefaultRetry.Attempts {
			t.Errorf("Retry-After %q: %d tries, %s waited; the bound is %d tries and %s", ra, tries, waited, DefaultRetry.Attempts, DefaultRetry.Budget)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
