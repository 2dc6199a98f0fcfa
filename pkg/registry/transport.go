package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// DefaultResponseTimeout is how long a response (its headers, or the next
// bytes of its body) may keep us waiting before the request counts as
// failed (and is retried).
const DefaultResponseTimeout = time.Minute

// hostTransports picks the TLS settings per registry host: client
// certificates are per host, and so is skipping verification for insecure
// registries. Every clone shares one CA pool: the system roots plus ca_certs.
type hostTransports struct {
	byHost   map[string]*http.Transport
	insecure func(host string) bool
	insec    *http.Transport
	def      *http.Transport
}

func (h *hostTransports) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Host
	if t, ok := h.byHost[host]; ok {
		return t.RoundTrip(req)
	}
	if t, ok := h.byHost[req.URL.Hostname()]; ok {
		return t.RoundTrip(req)
	}
	if h.insecure(host) {
		return h.insec.RoundTrip(req)
	}
	return h.def.RoundTrip(req)
}

// buildTransport assembles the stack: per-host TLS under our retries.
// go-containerregistry adds auth and the User-Agent on top; its own retries
// are switched off in Client.options so failures are not retried twice.
func buildTransport(o *Options, ins *insecureSet) (http.RoundTripper, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, ca := range o.CACerts {
		if !pool.AppendCertsFromPEM([]byte(ca.Cert)) {
			return nil, fmt.Errorf("ca_certs entry for %s holds no usable PEM certificate", ca.Domain)
		}
	}
	base := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: o.ResponseTimeout,
		ExpectContinueTimeout: time.Second,
		TLSClientConfig:       &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}
	if base.ResponseHeaderTimeout == 0 {
		base.ResponseHeaderTimeout = DefaultResponseTimeout
	}
	if len(o.Hosts) > 0 {
		// Test-only redirection: never let a proxy or DNS see these names.
		base.Proxy = nil
		dial := base.DialContext
		base.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if to, ok := o.Hosts[addr]; ok {
				addr = to
			}
			return dial(ctx, network, addr)
		}
	}
	h := &hostTransports{byHost: map[string]*http.Transport{}, insecure: ins.match, def: base}
	h.insec = base.Clone()
	h.insec.TLSClientConfig.InsecureSkipVerify = true
	for _, cc := range o.ClientCerts {
		pair, err := tls.X509KeyPair([]byte(cc.Cert), []byte(cc.Key))
		if err != nil {
			return nil, fmt.Errorf("client_certs entry for %s: certificate and key do not match or are not PEM", cc.Domain)
		}
		t := base.Clone()
		if ins.match(cc.Domain) {
			t.TLSClientConfig.InsecureSkipVerify = true
		}
		t.TLSClientConfig.Certificates = []tls.Certificate{pair}
		h.byHost[strings.TrimPrefix(strings.TrimPrefix(cc.Domain, "https://"), "http://")] = t
	}
	return newRetryTransport(&stallTransport{next: h, timeout: base.ResponseHeaderTimeout}, o.Retry, o.log()), nil
}

// insecureSet matches registry hosts against insecure_registries entries:
// host:port, bare host, or a CIDR containing the host's address.
type insecureSet struct {
	hosts   map[string]bool
	nets    []*net.IPNet
	resolve func(host string) []net.IP
}

func newInsecureSet(entries []string, resolve func(string) []net.IP) (*insecureSet, error) {
	s := &insecureSet{hosts: map[string]bool{}, resolve: resolve}
	for _, e := range entries {
		if strings.Contains(e, "/") {
			_, n, err := net.ParseCIDR(e)
			if err != nil {
				return nil, fmt.Errorf("insecure_registries: %q is not a valid CIDR", e)
			}
			s.nets = append(s.nets, n)
			continue
		}
		s.hosts[e] = true
	}
	return s, nil
}

func (s *insecureSet) match(hostport string) bool {
	if s.hosts[hostport] {
		return true
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if s.hosts[host] {
		return true
	}
	if len(s.nets) == 0 {
		return false
	}
	ips := []net.IP{net.ParseIP(host)}
	if ips[0] == nil {
		ips = s.resolve(host)
	}
	for _, ip := range ips {
		for _, n := range s.nets {
			if ip != nil && n.Contains(ip) {
				return true
			}
		}
	}
	return false
}
