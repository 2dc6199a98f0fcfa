package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sirupsen/logrus"
)

// RetryPolicy bounds how transient registry failures are retried: 429, 5xx,
// connection resets and timeouts. go-containerregistry's own retry ignores
// Retry-After, which registries such as Docker Hub use for rate limits.
type RetryPolicy struct {
	Attempts int           // total tries of one request, first included
	Initial  time.Duration // first backoff; doubles each retry
	Max      time.Duration // cap of one backoff
	Budget   time.Duration // total waiting allowed for one request
}

// DefaultRetry keeps a build alive through a registry restart or a burst of
// rate limiting, and still fails within about two minutes.
var DefaultRetry = RetryPolicy{Attempts: 6, Initial: 500 * time.Millisecond, Max: 15 * time.Second, Budget: 2 * time.Minute}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.Attempts <= 0 {
		p.Attempts = DefaultRetry.Attempts
	}
	if p.Initial <= 0 {
		p.Initial = DefaultRetry.Initial
	}
	if p.Max <= 0 {
		p.Max = DefaultRetry.Max
	}
	if p.Budget <= 0 {
		p.Budget = DefaultRetry.Budget
	}
	return p
}

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
	what := ""
	if e.Status != 0 {
		what = fmt.Sprintf("answered %d %s", e.Status, http.StatusText(e.Status))
	} else {
		what = fmt.Sprintf("failed: %v", e.Err)
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

// RetriesExhausted tells pkg/download not to retry the blob again: that
// would multiply the bound.
func (e *RetryError) RetriesExhausted() bool { return true }

// Temporary is false: the request was retried already; go-containerregistry
// must not retry it again.
func (e *RetryError) Temporary() bool { return false }

// retryOperation is go-containerregistry's retry predicate: it retries
// whole operations (a blob upload: POST, PATCH, PUT) whose request body could
// not be replayed by retryTransport, after transient failures only. Requests
// retryTransport already retried (RetryError) are not retried again.
func retryOperation(err error) bool {
	if err == nil {
		return false
	}
	var re *RetryError
	if errors.As(err, &re) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
			http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	var se *StallError
	return errors.As(err, &se) || isTransientNetError(err)
}

// operationBackoff is the backoff of those whole-operation retries.
func (p RetryPolicy) operationBackoff() remote.Backoff {
	p = p.withDefaults()
	return remote.Backoff{Duration: p.Initial, Factor: 2, Jitter: 0.25, Steps: p.Attempts, Cap: p.Max}
}

// StallError is a response body that sent nothing, or a request body the
// registry took nothing of, for the response timeout.
type StallError struct {
	Host   string
	After  time.Duration
	Upload bool // the registry stopped taking a request body
}

func (e *StallError) Error() string {
	if e.Upload {
		return fmt.Sprintf("registry %s took no data for %s (the upload stalled)", e.Host, e.After)
	}
	return fmt.Sprintf("registry %s sent no data for %s (the response stalled)", e.Host, e.After)
}

// Timeout and Temporary make a stall a transient network error.
func (e *StallError) Timeout() bool   { return true }
func (e *StallError) Temporary() bool { return true }

// stallTransport bounds the waits ResponseHeaderTimeout does not: for the
// registry to take the next bytes of a request body (an upload), and for
// the next bytes of a response body (a blob). A registry or proxy that stops
// in the middle of either would otherwise hang the get or the put for ever.
// An upload that stalls has its request cancelled; a response body that
// stalls is closed.
type stallTransport struct {
	next    http.RoundTripper
	timeout time.Duration
}

func (t *stallTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	upload := &StallError{Host: req.URL.Host, After: t.timeout, Upload: true}
	out := req.WithContext(ctx)
	var sb *sendBody
	if req.Body != nil && req.Body != http.NoBody {
		sb = &sendBody{rc: req.Body, timeout: t.timeout}
		sb.timer = time.AfterFunc(t.timeout, func() { cancel(upload) })
		out.Body = sb
	}
	resp, err := t.next.RoundTrip(out)
	if sb != nil {
		sb.stop()
	}
	if err != nil {
		if errors.Is(context.Cause(ctx), upload) {
			err = upload
		}
		cancel(nil)
		return resp, err
	}
	if resp.Body == nil || resp.Body == http.NoBody {
		cancel(nil)
		return resp, nil
	}
	b := &stallBody{rc: resp.Body, err: &StallError{Host: req.URL.Host, After: t.timeout}, timeout: t.timeout, cancel: cancel}
	b.timer = time.AfterFunc(time.Hour, func() { b.stalled.Store(true); _ = b.rc.Close() })
	b.timer.Stop()
	resp.Body = b
	return resp, nil
}

// sendBody restarts the upload's stall timer whenever the transport takes
// more of the body, and stops it at the end.
type sendBody struct {
	rc      io.ReadCloser
	timeout time.Duration
	mu      sync.Mutex
	timer   *time.Timer
	done    bool
}

func (b *sendBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if !b.done {
		b.timer.Reset(b.timeout)
	}
	b.mu.Unlock()
	n, err := b.rc.Read(p)
	if err != nil {
		b.stop() // the whole body is out: ResponseHeaderTimeout takes over
	}
	return n, err
}

func (b *sendBody) stop() {
	b.mu.Lock()
	b.done = true
	b.timer.Stop()
	b.mu.Unlock()
}

func (b *sendBody) Close() error {
	b.stop()
	return b.rc.Close()
}

type stallBody struct {
	rc      io.ReadCloser
	timer   *time.Timer
	timeout time.Duration
	stalled atomic.Bool
	err     *StallError
	cancel  context.CancelCauseFunc
}

func (b *stallBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.timeout)
	n, err := b.rc.Read(p)
	b.timer.Stop()
	if err != nil && b.stalled.Load() {
		return n, b.err
	}
	return n, err
}

func (b *stallBody) Close() error {
	b.timer.Stop()
	err := b.rc.Close()
	b.cancel(nil)
	return err
}

type retryTransport struct {
	next   http.RoundTripper
	policy RetryPolicy
	log    *logrus.Entry
	sleep  func(req *http.Request, d time.Duration) error
}

func newRetryTransport(next http.RoundTripper, p RetryPolicy, log *logrus.Entry) *retryTransport {
	return &retryTransport{next: next, policy: p.withDefaults(), log: log, sleep: sleepCtx}
}

func sleepCtx(req *http.Request, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-req.Context().Done():
		return req.Context().Err()
	}
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// A body that cannot be replayed cannot be retried here; the caller
	// (go-containerregistry's upload loop) retries whole operations.
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	start := time.Now()
	backoff := t.policy.Initial
	var waited time.Duration
	for attempt := 1; ; attempt++ {
		try := req
		if attempt > 1 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			try = req.Clone(req.Context())
			try.Body = body
		}
		resp, err := t.next.RoundTrip(try)
		transient, status := classify(resp, err)
		if transient && !replayable && req.Context().Err() == nil && resp != nil {
			// The caller retries the whole operation (go-containerregistry's
			// upload loop, see Client.options); make that retry wait as long
			// as the registry asked, capped at Max: the caller retries up
			// to Attempts times, so the waits stay within Attempts × Max.
			if ra, ok := retryAfter(resp.Header.Get("Retry-After")); ok && ra > 0 {
				wait := min(ra, t.policy.Max)
				capped := ""
				if wait < ra {
					capped = fmt.Sprintf("; waiting %s, the longest one wait may take", wait)
				}
				t.log.Warnf("registry %s answered %d %s to an upload; it asked to retry after %s%s", req.URL.Host, status, http.StatusText(status), describeRetryAfter(resp, ra), capped)
				if err := t.sleep(req, wait); err != nil {
					drain(resp)
					return nil, err
				}
			}
		}
		if !transient || !replayable || req.Context().Err() != nil {
			return resp, err
		}
		wait := backoff + time.Duration(rand.Int64N(int64(backoff)/4+1))
		backoff = min(backoff*2, t.policy.Max)
		reason := ""
		if resp != nil {
			if ra, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
				wait = ra
				if used := max(waited, time.Since(start)); ra > t.policy.Budget-used {
					reason = fmt.Sprintf("it asked to retry after %s, beyond the %s retry budget (%s used)", describeRetryAfter(resp, ra), t.policy.Budget, used.Round(100*time.Millisecond))
				}
			}
			drain(resp)
		}
		if reason == "" && attempt >= t.policy.Attempts {
			reason = "giving up"
		}
		// The budget bounds the time from the first try to the start of the
		// last one (waits and failed tries alike), so a registry that stalls
		// every request still fails within Budget plus one response timeout.
		if reason == "" && max(waited, time.Since(start))+wait > t.policy.Budget {
			reason = fmt.Sprintf("retry budget of %s used up", t.policy.Budget)
		}
		if reason != "" {
			return nil, &RetryError{Host: req.URL.Host, Status: status, Err: err, Attempts: attempt, Elapsed: time.Since(start), Reason: reason}
		}
		what := ""
		if status != 0 {
			what = fmt.Sprintf("answered %d %s", status, http.StatusText(status))
		} else {
			what = fmt.Sprintf("failed (%s)", shortNetError(err))
		}
		t.log.Warnf("registry %s %s; retrying in %s (attempt %d of %d)", req.URL.Host, what, wait.Round(100*time.Millisecond), attempt+1, t.policy.Attempts)
		if err := t.sleep(req, wait); err != nil {
			return nil, err
		}
		waited += wait
	}
}

// classify says whether a result is worth retrying, and its status.
func classify(resp *http.Response, err error) (bool, int) {
	if err != nil {
		return isTransientNetError(err), 0
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true, resp.StatusCode
	}
	return false, resp.StatusCode
}

func isTransientNetError(err error) bool {
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

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

// maxRetryAfter bounds what retryAfter returns: longer than any budget,
// and far from overflowing time.Duration in the sums it takes part in.
// Seconds used to be multiplied unchecked: 2^63-1 of them wrapped around to
// a negative wait, an immediate retry.
const maxRetryAfter = 24 * time.Hour

// retryAfter parses Retry-After as seconds or an HTTP date, clamped to
// [0, maxRetryAfter].
func retryAfter(v string) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if strings.Trim(v, "0123456789") == "" {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter, true // more digits than int64 holds: "never"
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(time.Until(t), 0), maxRetryAfter), true
	}
	return 0, false
}

// describeRetryAfter is what the registry asked for, in its own seconds
// when the wait was clamped.
func describeRetryAfter(resp *http.Response, d time.Duration) string {
	if d < maxRetryAfter {
		return d.String()
	}
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if strings.Trim(v, "0123456789") == "" {
		return v + "s"
	}
	return "more than " + maxRetryAfter.String() + " (until " + v + ")"
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}
