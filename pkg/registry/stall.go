package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

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
