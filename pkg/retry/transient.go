package retry

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Transient reports whether err is a failure another attempt may well not
// meet: a registry's 429, 500, 502, 503 or 504, a connection reset, refused
// or closed early, a timeout (a stalled request included). A cancelled
// operation is not transient, nor one already retried to its bound.
// Whether the caller's own context has ended is the caller's to check: a
// network timeout compares equal to context.DeadlineExceeded.
func Transient(err error) bool { return classify(err) == transient }

// Permanent reports whether err is a failure another attempt will meet
// again: a cancellation, a request already retried to its bound, a status
// that is the registry's answer (401, 404, ...), or a full or read-only
// disk. What is neither transient nor permanent (a body cut off in the
// middle in a way no type says, or a corrupt one; a 408, or a 5xx the
// registry transport does not retry) is for the caller to retry or not.
func Permanent(err error) bool { return classify(err) == permanent }

// IsRateLimit reports whether err is a registry's 429 Too Many Requests,
// whoever passed it on: go-containerregistry's transport.Error, or an
// error that knows the status (pkg/engine's StreamError for dockerd).
func IsRateLimit(err error) bool {
	code, ok := status(err)
	return ok && code == http.StatusTooManyRequests
}

// TransientStatus reports whether a registry's HTTP status is worth
// another attempt.
func TransientStatus(code int) bool {
	switch code {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

type class int

const (
	unknown class = iota
	transient
	permanent
)

func classify(err error) class {
	switch {
	case err == nil:
		return unknown
	case errors.Is(err, context.Canceled), exhausted(err), localDisk(err):
		return permanent
	}
	if code, ok := status(err); ok {
		switch {
		case TransientStatus(code):
			return transient
		case code == http.StatusRequestTimeout || code >= 500:
			return unknown
		}
		return permanent
	}
	if transientNet(err) {
		return transient
	}
	return unknown
}

// exhausted is an error that says its request was retried already
// (registry.RetryError): another round would multiply the bound.
func exhausted(err error) bool {
	var ex interface{ RetriesExhausted() bool }
	return errors.As(err, &ex) && ex.RetriesExhausted()
}

// localDisk is the local disk failing, not the registry: another try
// fills it again.
func localDisk(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EROFS)
}

// status is the HTTP status err carries, if it carries one.
func status(err error) (int, bool) {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode, true
	}
	var sc interface{ HTTPStatus() int }
	if errors.As(err, &sc) && sc.HTTPStatus() != 0 {
		return sc.HTTPStatus(), true
	}
	return 0, false
}

func transientNet(err error) bool {
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
