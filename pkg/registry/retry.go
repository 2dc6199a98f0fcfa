package registry

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/retry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sirupsen/logrus"
)

// DefaultRetry is the registry transport's policy (Options.Retry fills the
// fields it leaves at zero from it): it keeps a build alive through a
// registry restart or a burst of rate limiting, and still fails within
// about two minutes. go-containerregistry's own retry ignores Retry-After,
// which registries such as Docker Hub use for rate limits; this one honours
// it.
var DefaultRetry = retry.Policy{Attempts: 6, Initial: 500 * time.Millisecond, Max: 15 * time.Second, Jitter: 0.25, Budget: 2 * time.Minute}

// RetryError is returned when a request kept failing transiently until the
// policy gave up.
type RetryError struct {
	Host     string
	Status   int   // last HTTP status, 0 when the last failure was a network error
	Err      error // last network error
	Attempts int
	Elapsed  time.Duration
	Reason   string // why retrying stopped early, if it did
}

func (e *RetryError) Error() string {
	what := fmt.Sprintf("failed: %v", e.Err)
	if e.Status != 0 {
		what = answered(e.Status)
	}
	msg := fmt.Sprintf("registry %s %s (%s over %s)", e.Host, what, attempts(e.Attempts), e.Elapsed.Round(100*time.Millisecond))
	if e.Reason != "" {
		msg += "; " + e.Reason
	}
	return msg
}

func (e *RetryError) Unwrap() error { return e.Err }

func attempts(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return fmt.Sprintf("%d attempts", n)
}

func answered(status int) string {
	return fmt.Sprintf("answered %d %s", status, http.StatusText(status))
}

// failure is what a failed try met, for the retry log.
func failure(status int, err error) string {
	if status != 0 {
		return answered(status)
	}
	return "failed (" + shortNetError(err) + ")"
}

// RetriesExhausted tells retry.Permanent (for pkg/download) not to retry
// the request again: that would multiply the bound.
func (e *RetryError) RetriesExhausted() bool { return true }

// Temporary is false: the request was retried already; go-containerregistry
// must not retry it again.
func (e *RetryError) Temporary() bool { return false }

// retryOperation is go-containerregistry's retry predicate (see
// Client.options): it retries whole operations (a blob upload: POST, PATCH,
// PUT) whose request body retryTransport could not replay, after transient
// failures only. Requests retryTransport already retried (RetryError) are
// not retried again.
func retryOperation(err error) bool { return retry.Transient(err) }

// operationBackoff is the backoff of those whole-operation retries.
func operationBackoff(p retry.Policy) remote.Backoff {
	p = p.WithDefaults(DefaultRetry)
	return remote.Backoff{Duration: p.Initial, Factor: 2, Jitter: p.Jitter, Steps: p.Attempts, Cap: p.Max}
}

type retryTransport struct {
	next   http.RoundTripper
	policy retry.Policy
	log    *logrus.Entry
	sleep  func(req *http.Request, d time.Duration) error
}

func newRetryTransport(next http.RoundTripper, p retry.Policy, log *logrus.Entry) *retryTransport {
	return &retryTransport{next: next, policy: p.WithDefaults(DefaultRetry), log: log, sleep: sleepCtx}
}

func sleepCtx(req *http.Request, d time.Duration) error { return retry.Sleep(req.Context(), d) }

// RoundTrip tries req as the policy says, for as long as the answers are
// transient (see retry.Transient) and the request's context lasts.
func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		// A body that cannot be replayed cannot be retried here; the caller
		// (go-containerregistry's upload loop) retries whole operations.
		return t.once(req)
	}
	tries := t.policy.Start()
	try := req
	for {
		resp, err := t.next.RoundTrip(try)
		transient, status := classify(resp, err)
		if !transient || req.Context().Err() != nil {
			return resp, err
		}
		var asked retry.After
		if resp != nil {
			asked = retry.ParseAfter(resp.Header.Get("Retry-After"))
			drain(resp)
		}
		wait, stop := tries.Next(asked)
		if stop != "" {
			return nil, &RetryError{Host: req.URL.Host, Status: status, Err: err, Attempts: tries.Attempt(), Elapsed: tries.Elapsed(), Reason: stop}
		}
		t.log.Warnf("registry %s %s; retrying in %s (attempt %d of %d)", req.URL.Host, failure(status, err), wait.Round(100*time.Millisecond), tries.Attempt(), t.policy.Attempts)
		if err := t.sleep(req, wait); err != nil {
			return nil, err
		}
		if try, err = rewind(req); err != nil {
			return nil, err
		}
	}
}

// rewind is req again with a fresh copy of its body.
func rewind(req *http.Request) (*http.Request, error) {
	if req.GetBody == nil {
		return req, nil
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, err
	}
	try := req.Clone(req.Context())
	try.Body = body
	return try, nil
}

// once sends a request whose body cannot be replayed. The caller retries
// the whole operation (go-containerregistry's upload loop, see
// Client.options); a transient answer that asks for a wait (Retry-After) is
// handed back after that wait, capped at the policy's longest one: the
// caller retries up to Attempts times, so the waits stay within Attempts ×
// Max.
func (t *retryTransport) once(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	transient, status := classify(resp, err)
	if !transient || resp == nil || req.Context().Err() != nil {
		return resp, err
	}
	asked := retry.ParseAfter(resp.Header.Get("Retry-After"))
	if !asked.OK || asked.Wait <= 0 {
		return resp, err
	}
	wait := t.policy.Cap(asked.Wait)
	capped := ""
	if wait < asked.Wait {
		capped = fmt.Sprintf("; waiting %s, the longest one wait may take", wait)
	}
	t.log.Warnf("registry %s %s to an upload; it asked to retry after %s%s", req.URL.Host, answered(status), asked, capped)
	if err := t.sleep(req, wait); err != nil {
		drain(resp)
		return nil, err
	}
	return resp, err
}

// classify says whether a result is worth retrying, and its status.
func classify(resp *http.Response, err error) (bool, int) {
	if err != nil {
		return retry.Transient(err), 0
	}
	return retry.TransientStatus(resp.StatusCode), resp.StatusCode
}

// shortNetError words a network failure for the retry log.
func shortNetError(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed early"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timed out"
	}
	return err.Error()
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}
