package protocol

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"runtime"
	"strings"

	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
)

// Defaults of the old resource.
const (
	DefaultTag                = "latest"
	DefaultMaxConcurrent      = 3
	DefaultStartupTimeoutSecs = 120
)

// Upper bounds of the numbers in source. Without them a huge value
// overflowed into nonsense: startup_timeout 2^63-1 seconds became a
// negative duration and silently the 120 s default.
const (
	// MaxStartupTimeoutSecs is a day: a dockerd that has not answered by
	// then never will, and the seconds stay far from overflowing a
	// time.Duration (292 years).
	MaxStartupTimeoutSecs = 86400
	// MaxConcurrent bounds max_concurrent_downloads and _uploads. dockerd
	// stores at most 125 layers of one image (its layer store's maximum
	// depth), so more parallel transfers than 128 can never be used.
	MaxConcurrent = 128
)

var (
	tagPattern    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	digestPattern = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
)

// TagOrDefault is source.tag, or "latest".
func (s *Source) TagOrDefault() string {
	if s.Tag == "" {
		return DefaultTag
	}
	return string(s.Tag)
}

// Downloads is max_concurrent_downloads with its default.
func (s *Source) Downloads() int { return intOr(s.MaxConcurrentDownloads, DefaultMaxConcurrent) }

// Uploads is max_concurrent_uploads with its default.
func (s *Source) Uploads() int { return intOr(s.MaxConcurrentUploads, DefaultMaxConcurrent) }

// StartupTimeoutSecs is startup_timeout with its default.
func (s *Source) StartupTimeoutSecs() int {
	return intOr(s.StartupTimeout, DefaultStartupTimeoutSecs)
}

func intOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

// Validate checks everything in source that can be checked without the
// network, so a typo fails before anything is fetched or pushed.
func (s *Source) Validate() error {
	if s.Repository == "" {
		return errors.New(`source.repository is required, e.g. "registry.example.com:5000/team/app" or "alpine"`)
	}
	if err := ValidateRepository("source.repository", s.Repository); err != nil {
		return err
	}
	if s.Tag != "" {
		if err := ValidateTag("source.tag", string(s.Tag)); err != nil {
			return err
		}
	}
	for _, check := range []func() error{
		s.validateCredentials,
		s.validateAdditionalRegistries,
		s.validateCACerts,
		s.validateClientCerts,
		s.validateInsecureRegistries,
		func() error { return validateMirror(s.RegistryMirror) },
		s.validateNumbers,
		s.validateTagTracking,
	} {
		if err := check(); err != nil {
			return err
		}
	}
	return s.Platform.validate("source.platform")
}

// validateCredentials wants username and password both set or both empty.
func (s *Source) validateCredentials() error {
	if (s.Username == "") == (s.Password == "") {
		return nil
	}
	if s.Username == "" {
		return errors.New("source.password is set but source.username is empty: set both, or neither for anonymous access")
	}
	return errors.New("source.username is set but source.password is empty: set both, or neither for anonymous access")
}

func (s *Source) validateAdditionalRegistries() error {
	for i, r := range s.AdditionalPrivateRegistries {
		f := fmt.Sprintf("source.additional_private_registries[%d]", i)
		switch {
		case r.Registry == "":
			return fmt.Errorf("%s.registry is required (the registry host, e.g. \"registry.example.com:5000\")", f)
		case r.Username == "":
			return fmt.Errorf("%s.username is required for registry %q", f, r.Registry)
		case r.Password == "":
			return fmt.Errorf("%s.password is required for registry %q", f, r.Registry)
		}
	}
	return nil
}

func (s *Source) validateCACerts() error {
	for i, c := range s.CACerts {
		f := fmt.Sprintf("source.ca_certs[%d]", i)
		if c.Domain == "" {
			return fmt.Errorf("%s.domain is required: the registry's host:port the CA is for", f)
		}
		if _, err := ParseCertificates(c.Cert); err != nil {
			return fmt.Errorf("%s.cert (domain %s): %w", f, c.Domain, err)
		}
	}
	return nil
}

func (s *Source) validateClientCerts() error {
	for i, c := range s.ClientCerts {
		f := fmt.Sprintf("source.client_certs[%d]", i)
		if c.Domain == "" {
			return fmt.Errorf("%s.domain is required: the registry's host:port the certificate is for", f)
		}
		if c.Cert == "" || c.Key == "" {
			return fmt.Errorf("%s (domain %s): both cert and key are required", f, c.Domain)
		}
		if _, err := tls.X509KeyPair([]byte(c.Cert), []byte(c.Key)); err != nil {
			return fmt.Errorf("%s (domain %s): cert and key do not form a usable pair: %s", f, c.Domain, tlsPairReason(err))
		}
	}
	return nil
}

func (s *Source) validateInsecureRegistries() error {
	for i, entry := range s.InsecureRegistries {
		if err := validateInsecureEntry(fmt.Sprintf("source.insecure_registries[%d]", i), entry); err != nil {
			return err
		}
	}
	return nil
}

// validateInsecureEntry wants host:port (no scheme) or a CIDR.
func validateInsecureEntry(f, entry string) error {
	if strings.Contains(entry, "://") {
		return fmt.Errorf("%s: %q must be host:port (no scheme) or a CIDR", f, logging.RedactURL(entry))
	}
	if strings.Contains(entry, "/") {
		if _, _, err := net.ParseCIDR(entry); err != nil {
			return fmt.Errorf("%s: %q is not a valid CIDR (e.g. \"10.0.0.0/8\") nor host:port", f, entry)
		}
		return nil
	}
	if entry == "" || strings.ContainsAny(entry, " \t") {
		return fmt.Errorf("%s: %q must be host:port (no scheme) or a CIDR", f, entry)
	}
	return nil
}

// validateNumbers bounds the numbers of source.
func (s *Source) validateNumbers() error {
	for _, n := range []struct {
		field string
		p     *int
		max   int
		unit  string
	}{
		{"source.max_concurrent_downloads", s.MaxConcurrentDownloads, MaxConcurrent, ""},
		{"source.max_concurrent_uploads", s.MaxConcurrentUploads, MaxConcurrent, ""},
		{"source.startup_timeout", s.StartupTimeout, MaxStartupTimeoutSecs, " (a day)"},
	} {
		switch {
		case n.p == nil:
		case *n.p <= 0:
			return fmt.Errorf("%s must be a positive number, got %d", n.field, *n.p)
		case *n.p > n.max:
			return fmt.Errorf("%s must be at most %d%s, got %d", n.field, n.max, n.unit, *n.p)
		}
	}
	return nil
}

// validateMirror checks registry_mirror. A username or password in it is
// refused, as dockerd refuses it ("username/password not allowed in URI"),
// without echoing either: check and get would ignore them and the put's
// dockerd would not start.
func validateMirror(mirror string) error {
	if mirror == "" {
		return nil
	}
	u, err := url.Parse(mirror)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("source.registry_mirror: %q is not a valid URL: use http://host[:port] or https://host[:port]", logging.RedactURL(mirror))
	}
	if u.User != nil {
		return fmt.Errorf("source.registry_mirror: a username or password in the URL is not supported (dockerd refuses them too): "+
			"write it as %s://%s and give the mirror's credentials as a source.additional_private_registries entry for %q (check and get use it)",
			u.Scheme, u.Host, u.Host)
	}
	return nil
}

// Validate checks put params that need no files.
func (p *OutParams) Validate() error {
	if err := p.validateVersion(); err != nil {
		return err
	}
	if err := p.validateFanOut(); err != nil {
		return err
	}
	if err := p.validateBuildCache(); err != nil {
		return err
	}
	if p.CacheTag != "" {
		if err := ValidateTag("params.cache_tag", string(p.CacheTag)); err != nil {
			return err
		}
	}
	if p.LoadTag != "" {
		if err := ValidateTag("params.load_tag", string(p.LoadTag)); err != nil {
			return err
		}
	}
	if p.PullTag != "" {
		if err := ValidateTag("params.pull_tag", string(p.PullTag)); err != nil {
			return err
		}
	}
	for _, id := range sortedKeys(p.Secrets) {
		if err := p.Secrets[id].validate("params.secrets." + id); err != nil {
			return err
		}
	}
	return nil
}

// validate wants exactly one way of giving the secret. It never quotes the
// value.
func (s Secret) validate(field string) error {
	set := 0
	for _, v := range []string{s.Value, s.Source, s.Env} {
		if v != "" {
			set++
		}
	}
	if set != 1 {
		return fmt.Errorf("%s: set exactly one of value (the secret itself, e.g. value: ((npm_token)) from your credential manager), "+
			"source (a file among the put's inputs, relative to SRC) or env (a variable of the put's own environment)", field)
	}
	return nil
}

func (p *Platform) validate(field string) error {
	if p == nil {
		return nil
	}
	if p.Variant != "" && p.Architecture == "" {
		return fmt.Errorf("%s.variant needs %s.architecture", field, field)
	}
	return nil
}

// Resolve fills a platform's blanks with linux and the resource's own
// architecture.
func (p *Platform) Resolve() Platform {
	out := Platform{OS: "linux", Architecture: runtime.GOARCH}
	if p != nil {
		if p.OS != "" {
			out.OS = p.OS
		}
		if p.Architecture != "" {
			out.Architecture = p.Architecture
			out.Variant = p.Variant
		}
	}
	return out
}

// ValidateRepository checks a repository name the way registries do.
func ValidateRepository(field, repo string) error {
	if strings.Contains(repo, "@") {
		return fmt.Errorf("%s: %q must not contain a digest; the version carries the digest", field, repo)
	}
	if last := repo[strings.LastIndex(repo, "/")+1:]; strings.Contains(last, ":") {
		return fmt.Errorf("%s: %q must not contain a tag; put it in source.tag", field, repo)
	}
	// Both grammars: go-containerregistry's (check, in, the direct push)
	// and distribution's, which dockerd applies to FROM, tag and push.
	// go-containerregistry alone lets "a..b" or "team/-app" through.
	_, err := name.NewRepository(repo)
	if err == nil {
		_, err = reference.ParseNormalizedNamed(repo)
	}
	if err != nil {
		if strings.ToLower(repo) != repo {
			return fmt.Errorf("%s: %q is not a valid repository: repository names must be lower case", field, repo)
		}
		return fmt.Errorf("%s: %q is not a valid repository: use [host[:port]/]path with lower-case letters, digits and . _ - separators", field, repo)
	}
	return nil
}

// ValidateTag checks a tag against the registry's grammar.
func ValidateTag(field, tag string) error {
	if !tagPattern.MatchString(tag) {
		return fmt.Errorf("%s: %q is not a valid tag: up to 128 letters, digits, _ . - and not starting with . or -", field, tag)
	}
	return nil
}

func validateDigest(field, d string) error {
	if !digestPattern.MatchString(d) {
		return fmt.Errorf("%s: %q is not a valid digest: expected sha256: followed by 64 lower-case hex digits", field, d)
	}
	return nil
}

// ParseCertificates decodes every PEM certificate in s; at least one is
// required.
func ParseCertificates(s string) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := []byte(s)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("a PEM certificate could not be parsed: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found: expected a block starting with -----BEGIN CERTIFICATE-----")
	}
	return certs, nil
}

// tlsPairReason turns tls.X509KeyPair's error into a hint without key bytes.
func tlsPairReason(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "does not match"):
		return "the private key does not match the certificate"
	case strings.Contains(msg, "failed to find any PEM data in certificate"):
		return "no PEM certificate found in cert"
	case strings.Contains(msg, "failed to find") && strings.Contains(msg, "key"):
		return "no PEM private key found in key"
	}
	return strings.TrimPrefix(msg, "tls: ")
}
