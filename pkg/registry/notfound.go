package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// NotRegistryError is a 404 that is no registry's answer: the host is a web
// server, a proxy whose path does not lead to a registry, or a registry
// behind a proxy that does not route this repository. Reporting it as "not
// found" made check print [] and the pipeline wait for ever.
type NotRegistryError struct {
	Host   string
	Repo   string // set when /v2/ answered as a registry but the repository's path did not
	Detail string // what it answered, e.g. "GET /v2/ gave 404"
	Err    error  // the failed request
}

func (e *NotRegistryError) Error() string {
	what := e.Host + " does not answer as a registry"
	if e.Repo != "" {
		what += " for " + e.Repo
	}
	return fmt.Sprintf("%s (%s): check the host, port and path", what, e.Detail)
}

func (e *NotRegistryError) Unwrap() error { return e.Err }

// notFound decides what a failed manifest request for ref means. Only a
// registry's own answer that ref is unknown is ErrNotFound: a 404 for the
// manifest whose body carries a registry error code (distribution's
// MANIFEST_UNKNOWN, NAME_UNKNOWN...), from a host whose GET /v2/ answers as
// a registry does (200, or 401 with a Basic or Bearer challenge). docker
// too treats a 404 without a registry error in the body as an error ("error
// parsing HTTP 404 response body"), not as a missing image. Any other 404
// (of /v2/ itself, of an HTML page, of a token endpoint) stays an error.
func (c *Client) notFound(ctx context.Context, ref name.Reference, err error) error {
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusNotFound || te.Request == nil {
		return err
	}
	first := firstRequest(te.Request)
	host, u := ref.Context().RegistryStr(), first.URL
	switch {
	case u.Host != host:
		return err // another host's answer, a token realm's: Explain names it
	case u.Path == "/v2/" && first != te.Request:
		return &NotRegistryError{Host: host, Detail: "GET /v2/ gave 404 after a redirect to " + te.Request.URL.Redacted(), Err: err}
	case u.Path == "/v2/":
		return &NotRegistryError{Host: host, Detail: "GET /v2/ gave 404", Err: err}
	case !strings.Contains(u.Path, "/manifests/"):
		return err
	case te.Request.Method == http.MethodGet && !hasErrorCode(te):
		return &NotRegistryError{Host: host, Repo: ref.Context().RepositoryStr(),
			Detail: fmt.Sprintf("GET %s gave a 404 that is not a registry's error: its body names no error code", u.Path), Err: err}
	}
	if perr := c.answersAsRegistry(ctx, u.Scheme, host, err); perr != nil {
		return perr
	}
	return fmt.Errorf("%w: %w", ErrNotFound, err)
}

// firstRequest is r as go-containerregistry made it, before any redirect.
func firstRequest(r *http.Request) *http.Request {
	for r.Response != nil && r.Response.Request != nil {
		r = r.Response.Request
	}
	return r
}

func hasErrorCode(te *transport.Error) bool {
	for _, d := range te.Errors {
		if d.Code != "" {
			return true
		}
	}
	return false
}

// answersAsRegistry asks host for /v2/ the way registry clients ping it,
// anonymously, through the client's transport (TLS settings, retries).
// go-containerregistry pinged already, but it also accepts a 401 without a
// challenge, and it does not say what it saw.
func (c *Client) answersAsRegistry(ctx context.Context, scheme, host string, cause error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+host+"/v2/", nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", c.userAgent())
	resp, err := (&http.Client{Transport: c.transport}).Do(req)
	if err != nil {
		return err
	}
	drain(resp)
	switch {
	case resp.StatusCode == http.StatusOK:
		return nil
	case resp.StatusCode == http.StatusUnauthorized && registryChallenge(resp.Header):
		return nil
	case resp.StatusCode == http.StatusUnauthorized:
		return &NotRegistryError{Host: host, Detail: "GET /v2/ gave 401 without a Basic or Bearer challenge", Err: cause}
	}
	return &NotRegistryError{Host: host, Detail: fmt.Sprintf("GET /v2/ gave %d", resp.StatusCode), Err: cause}
}

// registryChallenge reports whether a 401 asks for Basic or Bearer auth, the
// two schemes registries use.
func registryChallenge(h http.Header) bool {
	for _, v := range h.Values("WWW-Authenticate") {
		scheme, _, _ := strings.Cut(strings.TrimSpace(v), " ")
		if strings.EqualFold(scheme, "basic") || strings.EqualFold(scheme, "bearer") {
			return true
		}
	}
	return false
}
