// Package registry is this resource's access to image registries: reference
// normalisation (Docker Hub short names, mirrors, insecure hosts), the HTTP
// transport (CAs, client certificates, retries honouring Retry-After, proxies,
// User-Agent) and credentials, behind a small API over go-containerregistry.
package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/certs"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"

	"github.com/concourse-docker/docker-image-resource/pkg/retry"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sirupsen/logrus"
)

// DockerHub is the registry host go-containerregistry uses for Docker Hub.
const DockerHub = name.DefaultRegistry

// Options configure a Client. The zero value talks anonymously to public
// registries.
type Options struct {
	Username, Password string
	// Credentials for other registries (FROM images, cache pulls), keyed by
	// registry host as users write it ("docker.io" works for Docker Hub).
	Additional  map[string]authn.Basic
	Insecure    []string // host[:port] or CIDR: plain http or unverified TLS allowed
	Mirror      string   // URL of a Docker Hub mirror
	CACerts     []certs.CA
	ClientCerts []certs.ClientCert
	UserAgent   string
	Jobs        int // parallel blob transfers of one image (default 4)
	// Retry is the policy of every request; fields left at zero are
	// DefaultRetry's. Tests shorten it.
	Retry retry.Policy
	// ResponseTimeout bounds the wait for response headers and for every
	// read of a response body: a stalled response fails (and is retried)
	// after it (default DefaultResponseTimeout).
	ResponseTimeout time.Duration
	Log             *logrus.Entry

	// Hosts redirects dials of host:port to another address and disables
	// proxies. For tests only: it lets "index.docker.io:443" reach a
	// registry on loopback without DNS or /etc/hosts.
	Hosts map[string]string
}

func (o *Options) log() *logrus.Entry { return logging.OrDiscard(o.Log) }

// Client reads from and writes to registries for one resource configuration.
type Client struct {
	opts      Options
	transport http.RoundTripper
	insecure  *insecureSet
	mirror    *url.URL
}

// ErrNotFound is returned when the registry itself answers that a tag or
// digest does not exist (see notFound); a 404 of anything else is an error.
var ErrNotFound = errors.New("not found")

// New builds a Client; it does no network I/O.
func New(o Options) (*Client, error) {
	c := &Client{opts: o}
	ins, err := newInsecureSet(o.Insecure, c.resolve)
	if err != nil {
		return nil, err
	}
	c.insecure = ins
	if o.Mirror != "" {
		u, err := url.Parse(o.Mirror)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, errors.New("registry_mirror must be an http:// or https:// URL")
		}
		c.mirror = u
	}
	c.transport, err = buildTransport(&c.opts, ins)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Client) resolve(host string) []net.IP {
	for from, to := range c.opts.Hosts {
		if h, _, err := net.SplitHostPort(from); err == nil && h == host {
			if th, _, err := net.SplitHostPort(to); err == nil {
				return []net.IP{net.ParseIP(th)}
			}
		}
	}
	if len(c.opts.Hosts) > 0 {
		return nil // tests never reach real DNS
	}
	ips, _ := net.DefaultResolver.LookupIP(context.Background(), "ip", host)
	return ips
}

// Repository parses a repository as users write it ("alpine",
// "host:5000/team/app"), marking it insecure when insecure_registries says so.
func (c *Client) Repository(repo string) (name.Repository, error) {
	r, err := name.NewRepository(repo)
	if err != nil {
		return name.Repository{}, fmt.Errorf("invalid repository %q: %w", repo, err)
	}
	if c.insecure.match(r.RegistryStr()) {
		r, err = name.NewRepository(repo, name.Insecure)
	}
	return r, err
}

// candidates lists where to look for repo: the mirror first for Docker Hub
// names when one is configured, then the origin.
func (c *Client) candidates(repo name.Repository) []name.Repository {
	if c.mirror == nil || repo.RegistryStr() != DockerHub {
		return []name.Repository{repo}
	}
	var opts []name.Option
	if c.mirror.Scheme == "http" || c.insecure.match(c.mirror.Host) {
		opts = append(opts, name.Insecure)
	}
	m, err := name.NewRepository(c.mirror.Host+"/"+repo.RepositoryStr(), opts...)
	if err != nil {
		return []name.Repository{repo}
	}
	return []name.Repository{m, repo}
}

// keychain hands the source credentials to the target registry (and the
// Docker Hub mirror, as dockerd does, unless additional credentials name the
// mirror's host), additional ones to their hosts, and nothing to anyone else.
type keychain struct{ c *Client }

func (k keychain) Resolve(res authn.Resource) (authn.Authenticator, error) {
	if b, ok := lookupAdditional(k.c.opts.Additional, res.RegistryStr()); ok {
		return authn.FromConfig(authn.AuthConfig{Username: b.Username, Password: b.Password}), nil
	}
	return authn.Anonymous, nil
}

// authFor gives the source credentials to the registries of repos, and
// the additional ones to theirs.
func (c *Client) authFor(repos ...name.Repository) remote.Option {
	if c.opts.Username == "" {
		return remote.WithAuthFromKeychain(keychain{c})
	}
	hosts := map[string]bool{}
	for _, r := range repos {
		h := r.RegistryStr()
		if _, own := lookupAdditional(c.opts.Additional, h); own && c.mirror != nil && h == c.mirror.Host {
			continue // the mirror's own credentials, from additional_private_registries
		}
		hosts[h] = true
	}
	return remote.WithAuthFromKeychain(targetKeychain{hosts: hosts, user: c.opts.Username, pass: c.opts.Password, next: keychain{c}})
}

type targetKeychain struct {
	hosts      map[string]bool
	user, pass string
	next       authn.Keychain
}

func (k targetKeychain) Resolve(res authn.Resource) (authn.Authenticator, error) {
	if k.hosts[res.RegistryStr()] {
		return authn.FromConfig(authn.AuthConfig{Username: k.user, Password: k.pass}), nil
	}
	return k.next.Resolve(res)
}

func lookupAdditional(m map[string]authn.Basic, host string) (authn.Basic, bool) {
	for k, v := range m {
		if NormalizeHost(k) == host {
			return v, true
		}
	}
	return authn.Basic{}, false
}

// NormalizeHost maps the ways users write Docker Hub ("docker.io",
// "https://index.docker.io/v1/") to the one host name, and strips schemes and
// paths from others.
func NormalizeHost(h string) string {
	h = strings.TrimPrefix(strings.TrimPrefix(h, "https://"), "http://")
	h, _, _ = strings.Cut(h, "/")
	switch h {
	case "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return DockerHub
	}
	return h
}

// RemoteOptions are the go-containerregistry options for reaching repos:
// the transport, and credentials for their registries.
func (c *Client) RemoteOptions(ctx context.Context, repos ...name.Repository) []remote.Option {
	return c.options(ctx, repos...)
}

// Transport is the round tripper RemoteOptions uses (per-host TLS under our
// retries). pkg/push wraps it to see which blobs a push skipped, mounted or
// uploaded; pass the wrapper with remote.WithTransport after RemoteOptions.
func (c *Client) Transport() http.RoundTripper { return c.transport }

func (c *Client) options(ctx context.Context, repos ...name.Repository) []remote.Option {
	jobs := c.opts.Jobs
	if jobs <= 0 {
		jobs = 4
	}
	return []remote.Option{
		remote.WithJobs(jobs),
		remote.WithContext(ctx),
		remote.WithTransport(c.transport),
		c.authFor(repos...),
		remote.WithUserAgent(c.userAgent()),
		// Our transport retries every request it can replay; go-containerregistry
		// retries only whole operations whose bodies it cannot (blob uploads),
		// and only after transient failures (retryOperation), while ctx lasts.
		remote.WithRetryStatusCodes(),
		remote.WithRetryPredicate(func(err error) bool { return ctx.Err() == nil && retryOperation(err) }),
		remote.WithRetryBackoff(operationBackoff(c.opts.Retry)),
	}
}

func (c *Client) userAgent() string {
	if c.opts.UserAgent != "" {
		return c.opts.UserAgent
	}
	return "docker-image-resource"
}

// Digest returns the manifest digest the registry holds for repo:tag (an
// index digest for multi-platform images). ErrNotFound when the tag is
// missing.
func (c *Client) Digest(ctx context.Context, repo, tag string) (v1.Hash, error) {
	r, err := c.Repository(repo)
	if err != nil {
		return v1.Hash{}, err
	}
	return c.firstOf(ctx, r, func(cand name.Repository) (v1.Hash, error) {
		return c.headDigest(ctx, cand.Tag(tag), r)
	})
}

// Exists reports whether repo@digest is still in the registry.
func (c *Client) Exists(ctx context.Context, repo string, digest v1.Hash) (bool, error) {
	r, err := c.Repository(repo)
	if err != nil {
		return false, err
	}
	_, err = c.firstOf(ctx, r, func(cand name.Repository) (v1.Hash, error) {
		return c.headDigest(ctx, cand.Digest(digest.String()), r)
	})
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Get fetches the descriptor of repo@digest (a manifest or an index).
func (c *Client) Get(ctx context.Context, repo string, digest v1.Hash) (*remote.Descriptor, error) {
	r, err := c.Repository(repo)
	if err != nil {
		return nil, err
	}
	var desc *remote.Descriptor
	_, err = c.firstOf(ctx, r, func(cand name.Repository) (v1.Hash, error) {
		ref := cand.Digest(digest.String())
		d, err := remote.Get(ref, c.options(ctx, cand, r)...)
		if err != nil {
			return v1.Hash{}, c.notFound(ctx, ref, err)
		}
		desc = d
		return d.Digest, nil
	})
	return desc, err
}

// firstOf tries the mirror (if any) then the origin; a mirror failure of any
// kind falls back, as dockerd does.
func (c *Client) firstOf(ctx context.Context, origin name.Repository, f func(name.Repository) (v1.Hash, error)) (v1.Hash, error) {
	cands := c.candidates(origin)
	for i, cand := range cands {
		h, err := f(cand)
		if err == nil || i == len(cands)-1 || ctx.Err() != nil {
			return h, err
		}
		c.opts.log().Warnf("mirror %s: %s; falling back to %s", cand.RegistryStr(), Explain(err), origin.RegistryStr())
	}
	panic("unreachable")
}

func (c *Client) headDigest(ctx context.Context, ref name.Reference, origin name.Repository) (v1.Hash, error) {
	opts := c.options(ctx, ref.Context(), origin)
	desc, err := remote.Head(ref, opts...)
	if err == nil {
		return desc.Digest, nil
	}
	var te *transport.Error
	switch {
	case errors.As(err, &te) && te.StatusCode == http.StatusNotFound && te.Request != nil && firstRequest(te.Request).URL.Path == "/v2/":
		return v1.Hash{}, c.notFound(ctx, ref, err) // the ping's 404: no registry there
	case errors.As(err, &te) && te.StatusCode == http.StatusNotFound,
		// Some registries answer HEAD without Docker-Content-Digest;
		// go-containerregistry says so only in an untyped error's text
		// ("response did not include ... header"), so the text it is.
		strings.Contains(err.Error(), "did not include"):
		// A HEAD's 404 has no body to tell a registry's answer from a web
		// page's; the GET's has (and hashes the manifest when HEAD gave no
		// digest).
		d, gerr := remote.Get(ref, opts...)
		if gerr != nil {
			return v1.Hash{}, c.notFound(ctx, ref, gerr)
		}
		return d.Digest, nil
	}
	return v1.Hash{}, err
}
