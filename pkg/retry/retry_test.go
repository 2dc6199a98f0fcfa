package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// TestRetryAfterClamped: Retry-After values that overflowed time.Duration
// (2^63-1 seconds became a negative wait) are clamped, never negative.
func TestRetryAfterClamped(t *testing.T) {
	for v, want := range map[string]time.Duration{
		"0": 0, "2": 2 * time.Second, " 7 ": 7 * time.Second, "86400": MaxAfter,
		"9223372036854775807": MaxAfter, "18446744074": MaxAfter, "99999999999999999999999": MaxAfter,
		"Fri, 31 Dec 9999 23:59:59 GMT": MaxAfter, "Mon, 01 Jan 2001 00:00:00 GMT": 0,
	} {
		a := ParseAfter(v)
		if !a.OK || a.Wait != want {
			t.Errorf("Retry-After %q: %s %v, want %s", v, a.Wait, a.OK, want)
		}
	}
	for _, v := range []string{"", "-5", "soon", "1.5"} {
		if a := ParseAfter(v); a.OK {
			t.Errorf("Retry-After %q: %s, want ignored", v, a.Wait)
		}
	}
}

// TestAfterString: a clamped wait is told as the server asked for it.
func TestAfterString(t *testing.T) {
	for v, want := range map[string]string{
		"2":                             "2s",
		"9223372036854775807":           "9223372036854775807s",
		"Fri, 31 Dec 9999 23:59:59 GMT": "more than 24h0m0s (until Fri, 31 Dec 9999 23:59:59 GMT)",
	} {
		if got := ParseAfter(v).String(); got != want {
			t.Errorf("Retry-After %q: %q, want %q", v, got, want)
		}
	}
}

// waits drives p through failures with no Retry-After until it gives up,
// counting the waits as slept (as a fake clock would).
func waits(p Policy, asked After) ([]time.Duration, string, int) {
	tries := p.Start()
	var ws []time.Duration
	for {
		w, stop := tries.Next(asked)
		if stop != "" {
			return ws, stop, tries.Attempt()
		}
		ws = append(ws, w)
	}
}

// TestPolicies: the three policies in use wait what the documents say.
func TestPolicies(t *testing.T) {
	for _, c := range []struct {
		name string
		p    Policy
		want []time.Duration
	}{
		{"blob downloads: 4 attempts, 1 s doubling", Policy{Attempts: 4, Initial: time.Second}, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}},
		{"daemon push: 5, 10, 20 s", Policy{Attempts: 4, Initial: 5 * time.Second}, []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second}},
		{"capped", Policy{Attempts: 5, Initial: time.Second, Max: 3 * time.Second}, []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 3 * time.Second}},
	} {
		ws, stop, n := waits(c.p, After{})
		if fmt.Sprint(ws) != fmt.Sprint(c.want) || stop != "giving up" || n != c.p.Attempts {
			t.Errorf("%s: waits %v, %q after attempt %d; want %v, giving up after %d", c.name, ws, stop, n, c.want, c.p.Attempts)
		}
	}
}

// TestJitter: a wait is the backoff plus at most Jitter of it.
func TestJitter(t *testing.T) {
	p := Policy{Attempts: 6, Initial: 500 * time.Millisecond, Max: 15 * time.Second, Jitter: 0.25}
	ws, _, _ := waits(p, After{})
	b := p.Initial
	for i, w := range ws {
		if w < b || w > b+b/4 {
			t.Errorf("wait %d: %s, want %s to %s", i+1, w, b, b+b/4)
		}
		b = min(2*b, p.Max)
	}
}

// TestBudget: a wait beyond the budget ends the tries, saying so; a
// Retry-After beyond what is left of it ends them at once.
func TestBudget(t *testing.T) {
	ws, stop, n := waits(Policy{Attempts: 10, Initial: time.Second, Budget: 5 * time.Second}, After{})
	if fmt.Sprint(ws) != "[1s 2s]" || stop != "retry budget of 5s used up" || n != 3 {
		t.Errorf("waits %v, %q after attempt %d", ws, stop, n)
	}
	ws, stop, n = waits(Policy{Attempts: 10, Initial: time.Second, Budget: 2 * time.Minute}, ParseAfter("50"))
	if fmt.Sprint(ws) != "[50s 50s]" || stop != "it asked to retry after 50s, beyond the 2m0s retry budget (1m40s used)" || n != 3 {
		t.Errorf("waits %v, %q after attempt %d", ws, stop, n)
	}
	ws, stop, _ = waits(Policy{Attempts: 10, Initial: time.Second, Budget: 2 * time.Minute}, ParseAfter("9223372036854775807"))
	if len(ws) != 0 || !strings.HasPrefix(stop, "it asked to retry after 9223372036854775807s, beyond") {
		t.Errorf("waits %v, %q", ws, stop)
	}
}

type statusErr int

func (e statusErr) Error() string   { return fmt.Sprintf("status %d", int(e)) }
func (e statusErr) HTTPStatus() int { return int(e) }

type exhaustedErr struct{}

func (exhaustedErr) Error() string          { return "retried already" }
func (exhaustedErr) RetriesExhausted() bool { return true }

// TestClassify: the one decision of what is transient, permanent or
// neither.
func TestClassify(t *testing.T) {
	te := func(code int) error { return fmt.Errorf("get: %w", &transport.Error{StatusCode: code}) }
	for _, c := range []struct {
		err                  error
		transient, permanent bool
	}{
		{te(http.StatusServiceUnavailable), true, false},
		{te(http.StatusTooManyRequests), true, false},
		{te(http.StatusUnauthorized), false, true},
		{te(http.StatusNotFound), false, true},
		{te(http.StatusRequestTimeout), false, false},
		{te(http.StatusNotImplemented), false, false},
		{statusErr(http.StatusTooManyRequests), true, false},
		{fmt.Errorf("download: %w", exhaustedErr{}), false, true},
		{io.ErrUnexpectedEOF, true, false},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), true, false},
		{fmt.Errorf("write: %w", syscall.ENOSPC), false, true},
		{context.Canceled, false, true},
		{errors.New("digest mismatch"), false, false},
		{nil, false, false},
	} {
		if got := Transient(c.err); got != c.transient {
			t.Errorf("Transient(%v) = %v", c.err, got)
		}
		if got := Permanent(c.err); got != c.permanent {
			t.Errorf("Permanent(%v) = %v", c.err, got)
		}
	}
}

func TestIsRateLimit(t *testing.T) {
	for err, want := range map[error]bool{
		fmt.Errorf("push: %w", statusErr(429)):                   true,
		&transport.Error{StatusCode: http.StatusTooManyRequests}: true,
		statusErr(503): false,
		statusErr(0):   false,
		errors.New("toomanyrequests: the words alone"): false,
	} {
		if got := IsRateLimit(err); got != want {
			t.Errorf("IsRateLimit(%v) = %v", err, got)
		}
	}
}

func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
		t.Errorf("err %v after %s", err, time.Since(start))
	}
}
