package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Explain turns a registry error into a sentence a person can act on. It
// never includes credentials: go-containerregistry's errors carry URLs and
// registry diagnostics, not auth headers, and URLs are redacted here. The
// result wraps err, so errors.Is and errors.As still see the cause (a
// cancellation, a *transport.Error's status); only its text is new. Nil
// stays nil.
func Explain(err error) error {
	if err == nil {
		return nil
	}
	return &explainedError{msg: explain(err, hostOf(err)), err: err}
}

// Explain is the package-level Explain, aware of whether credentials were
// configured: a 401 without them asks for them instead of doubting them.
func (c *Client) Explain(err error) error {
	var te *transport.Error
	if c.opts.Username == "" && errors.As(err, &te) && te.StatusCode == http.StatusUnauthorized {
		host := hostOf(err)
		return &explainedError{msg: fmt.Sprintf("%s requires credentials (401 Unauthorized): set source.username and source.password%s", host, hubUnknown(host)), err: err}
	}
	return Explain(err)
}

// explainedError is an error told in words a person can act on; it wraps
// the original. The original's text may hold a URL's password, which the
// sentence has masked: print the explained error, not what it unwraps to.
type explainedError struct {
	msg string
	err error
}

func (e *explainedError) Error() string { return e.msg }
func (e *explainedError) Unwrap() error { return e.err }

func explain(err error, host string) string {
	var (
		nr *NotRegistryError
		re *RetryError
		te *transport.Error
	)
	switch {
	case errors.Is(err, context.Canceled):
		// An aborted request, whatever else its attempts met (with
		// insecure_registries, the HTTPS attempt's error comes along).
		return context.Canceled.Error()
	case errors.As(err, &nr):
		return nr.Error()
	case errors.As(err, &re):
		if re.Status == 0 && re.Err != nil {
			return fmt.Sprintf("%s (%s over %s)", explain(re.Err, re.Host), attempts(re.Attempts), re.Elapsed.Round(100*time.Millisecond))
		}
		return re.Error()
	case errors.As(err, &te):
		return explainStatus(te, host)
	}
	if msg, ok := explainTLS(err, host); ok {
		return msg
	}
	return explainNetwork(err, host)
}

// explainTLS explains a failed TLS set-up: the registry's certificate, or
// the handshake (a client certificate it wants, plain HTTP on the port).
func explainTLS(err error, host string) (string, bool) {
	var (
		unknown x509.UnknownAuthorityError
		hostErr x509.HostnameError
		invalid x509.CertificateInvalidError
		verify  *tls.CertificateVerificationError
		recHdr  tls.RecordHeaderError
		opErr   *net.OpError
	)
	switch {
	case errors.As(err, &unknown), errors.As(err, &verify) && isUnknownAuthority(verify):
		return fmt.Sprintf("the TLS certificate of %s is signed by an unknown authority: add the registry's CA to source.ca_certs (domain %q), or list it in source.insecure_registries", host, host), true
	case errors.As(err, &hostErr):
		return fmt.Sprintf("the TLS certificate of %s is not valid for that name (%s)", host, hostErr.Error()), true
	case errors.As(err, &invalid):
		return fmt.Sprintf("the TLS certificate of %s is not valid: %s", host, invalid.Error()), true
	case errors.As(err, &opErr) && opErr.Op == "remote error" && opErr.Err != nil:
		// crypto/tls reports the server's alert as this OpError.
		return fmt.Sprintf("%s rejected the TLS handshake (%s): if it requires a client certificate, set source.client_certs for domain %q", host, opErr.Err.Error(), host), true
	case strings.Contains(err.Error(), "http2: client conn could not be established"):
		// TLS 1.3 reports a refused client certificate only on the first
		// read; over HTTP/2 that surfaces as this, an error net/http does
		// not export, so only its text tells it.
		return fmt.Sprintf("%s closed the TLS connection during set-up: if it requires a client certificate, set source.client_certs for domain %q", host, host), true
	case errors.As(err, &recHdr), errors.Is(err, http.ErrSchemeMismatch):
		return fmt.Sprintf("%s answered plain HTTP to an HTTPS request: if it really serves plain HTTP, list %q in source.insecure_registries", host, host), true
	}
	return "", false
}

// explainNetwork explains a failed connection, or gives the error's own
// words with URL passwords masked.
func explainNetwork(err error, host string) string {
	var (
		dnsErr   *net.DNSError
		urlErr   *url.Error
		netError net.Error
	)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("connection refused by %s: the registry is unreachable (check the host and port, and that it is running)", host)
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("cannot resolve the registry host %q: %s", dnsErr.Name, dnsErr.Err)
	case errors.As(err, new(*StallError)):
		return redactURLsIn(err.Error())
	case errors.As(err, &netError) && netError.Timeout():
		return fmt.Sprintf("timed out talking to %s", host)
	case errors.As(err, &urlErr):
		return fmt.Sprintf("%s %s: %s", urlErr.Op, redact(urlErr.URL), explain(urlErr.Err, host))
	}
	return redactURLsIn(err.Error())
}

func isUnknownAuthority(v *tls.CertificateVerificationError) bool {
	var u x509.UnknownAuthorityError
	return errors.As(v.Err, &u)
}

func explainStatus(te *transport.Error, host string) string {
	if te.Request != nil {
		host = te.Request.URL.Host
	}
	detail := ""
	for _, d := range te.Errors {
		if d.Message != "" {
			detail = fmt.Sprintf(" (%s: %s)", d.Code, d.Message)
			break
		}
	}
	switch te.StatusCode {
	case http.StatusUnauthorized:
		return fmt.Sprintf("%s refused the credentials (401 Unauthorized)%s: check source.username and source.password%s", host, detail, hubUnknown(host))
	case http.StatusForbidden:
		return fmt.Sprintf("%s denied access (403 Forbidden)%s: the credentials lack permission for this repository", host, detail)
	case http.StatusNotFound:
		return fmt.Sprintf("not found on %s (404)%s", host, detail)
	}
	return fmt.Sprintf("%s answered %d %s%s", host, te.StatusCode, http.StatusText(te.StatusCode), detail)
}

// hubUnknown is the hint a Docker Hub 401 needs: Docker Hub answers 401,
// not 404, for a repository that does not exist, so it cannot be told from
// refused credentials and is not reported as "no versions".
func hubUnknown(host string) string {
	if host == DockerHub || host == "registry-1.docker.io" {
		return " (Docker Hub answers 401 also for a repository that does not exist: check the name)"
	}
	return ""
}

func hostOf(err error) string {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		if u, perr := url.Parse(urlErr.URL); perr == nil {
			return u.Host
		}
	}
	var te *transport.Error
	if errors.As(err, &te) && te.Request != nil {
		return te.Request.URL.Host
	}
	return "the registry"
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Redacted()
}

// redactURLsIn hides userinfo passwords in any URL inside a message.
func redactURLsIn(msg string) string {
	words := strings.Fields(msg)
	for i, w := range words {
		if strings.Contains(w, "://") && strings.Contains(w, "@") {
			trimmed := strings.Trim(w, `"'(),`)
			words[i] = strings.Replace(w, trimmed, redact(trimmed), 1)
		}
	}
	return strings.Join(words, " ")
}
