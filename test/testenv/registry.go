package testenv

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/childproc"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// RegistryBinary is the distribution registry started by StartRegistry.
const RegistryBinary = "/usr/bin/docker-registry"

// RegistryOptions configures StartRegistry. The zero value is a plain-http
// registry on 127.0.0.1 with basic auth for "testuser" and a random password.
type RegistryOptions struct {
	TLS bool
	// Host is the loopback address to listen on. Default 127.0.0.1, or
	// 127.0.0.2 with TLS: go-containerregistry talks plain http to 127.0.0.1
	// and localhost without being asked, which would hide TLS problems.
	Host               string
	Username, Password string
	NoAuth             bool
	// ClientCA, when set, makes the registry require client certificates
	// issued by it (mutual TLS). Implies TLS.
	ClientCA *CA
	// ExtraNames are extra DNS SANs for the server cert, e.g. "index.docker.io".
	ExtraNames []string
	// NetHost runs the registry inside that test host's namespace, at its
	// address (for daemon-side TLS tests: dockerd ignores certs.d for 127.x).
	NetHost *NetHost
}

// Registry is a running distribution registry.
type Registry struct {
	Host               string // "127.0.0.2:40123"
	Username, Password string // empty with NoAuth
	CA                 *CA    // issued the server cert; nil without TLS
	// ClientCertPEM and ClientKeyPEM are a client cert from opts.ClientCA,
	// used by Transport when mutual TLS is on.
	ClientCertPEM, ClientKeyPEM []byte
	// Dir holds the config, htpasswd, certs, log and the storage root (Dir/data).
	Dir string

	opts      RegistryOptions
	proc      *childproc.Proc
	logPath   string
	transport *http.Transport
	stopOnce  sync.Once
}

// StartRegistry starts a real registry and waits until /v2/ answers. It is
// stopped on test cleanup; its log is printed only when the test failed.
func StartRegistry(t testing.TB, opts RegistryOptions) *Registry {
	t.Helper()
	if _, err := os.Stat(RegistryBinary); err != nil {
		t.Skipf("testenv: %s not installed (apt-get install docker-registry): %v", RegistryBinary, err)
	}
	if opts.ClientCA != nil {
		opts.TLS = true
	}
	host := opts.Host
	if opts.NetHost != nil {
		host = opts.NetHost.IP
	}
	if host == "" {
		host = "127.0.0.1"
		if opts.TLS {
			host = "127.0.0.2"
		}
	}
	if ip := net.ParseIP(host); ip != nil && !ip.IsLoopback() && opts.NetHost == nil {
		t.Fatalf("testenv: registry host %s is not a loopback address", host)
	}

	r := &Registry{opts: opts, Dir: t.TempDir()}
	r.logPath = filepath.Join(r.Dir, "registry.log")
	if !opts.NoAuth {
		r.Username, r.Password = opts.Username, opts.Password
		if r.Username == "" {
			r.Username = "testuser"
		}
		if r.Password == "" {
			r.Password = randHex(t, 12)
		}
		writeHtpasswd(t, filepath.Join(r.Dir, "htpasswd"), r.Username, r.Password)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.TLS {
		r.CA = NewCA(t)
		certPEM, keyPEM := r.CA.Issue(t, append([]string{host, "localhost"}, opts.ExtraNames...)...)
		writeFile(t, filepath.Join(r.Dir, "server.crt"), certPEM)
		writeFile(t, filepath.Join(r.Dir, "server.key"), keyPEM)
		tlsCfg.RootCAs = r.CA.Pool()
		if opts.ClientCA != nil {
			writeFile(t, filepath.Join(r.Dir, "client-ca.crt"), opts.ClientCA.CertPEM)
			r.ClientCertPEM, r.ClientKeyPEM = opts.ClientCA.Issue(t, "testenv-client")
			pair, err := tls.X509KeyPair(r.ClientCertPEM, r.ClientKeyPEM)
			if err != nil {
				t.Fatalf("testenv: loading client key pair: %v", err)
			}
			tlsCfg.Certificates = []tls.Certificate{pair}
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // loopback only, never through an environment proxy
	tr.TLSClientConfig = tlsCfg
	r.transport = tr

	t.Cleanup(func() {
		r.Stop()
		tr.CloseIdleConnections()
		if t.Failed() {
			t.Logf("testenv: registry %s log tail:\n%s", r.Host, childproc.TailFile(r.logPath, 60))
		}
	})

	// A port found free can be taken before the registry binds it: retry.
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		var port int
		var err error
		if opts.NetHost != nil {
			port = 5000 + attempt // the namespace is ours alone
		} else if port, err = freePortOn(host); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		r.Host = net.JoinHostPort(host, strconv.Itoa(port))
		cfgPath := filepath.Join(r.Dir, "config.yml")
		writeFile(t, cfgPath, []byte(r.config(t)))
		bin, args := RegistryBinary, []string{"serve", cfgPath}
		if opts.NetHost != nil {
			bin, args = "ip", append([]string{"netns", "exec", opts.NetHost.Name, RegistryBinary}, args...)
		}
		r.proc, err = childproc.Start(bin, args, r.logPath, childproc.Options{DeathSignal: syscall.SIGKILL, Start: spawn})
		if err != nil {
			t.Fatalf("testenv: %v", err)
		}
		lastErr = r.waitReady(15 * time.Second)
		if lastErr == nil {
			return r
		}
		r.proc.Stop(context.Background(), 5*time.Second)
		if !strings.Contains(childproc.TailFile(r.logPath, 20), "address already in use") {
			break
		}
		r.proc = nil
	}
	t.Fatalf("testenv: registry on %s did not come up: %v\nlog tail:\n%s", r.Host, lastErr, childproc.TailFile(r.logPath, 60))
	return nil
}

func (r *Registry) config(t testing.TB) string {
	var b strings.Builder
	fmt.Fprintf(&b, `version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: %s
`, filepath.Join(r.Dir, "data"), r.Host, randHex(t, 16))
	if r.opts.TLS {
		fmt.Fprintf(&b, `  tls:
    certificate: %s
    key: %s
`, filepath.Join(r.Dir, "server.crt"), filepath.Join(r.Dir, "server.key"))
		if r.opts.ClientCA != nil {
			fmt.Fprintf(&b, "    clientcas:\n      - %s\n", filepath.Join(r.Dir, "client-ca.crt"))
		}
	}
	if !r.opts.NoAuth {
		fmt.Fprintf(&b, `auth:
  htpasswd:
    realm: testenv-registry
    path: %s
`, filepath.Join(r.Dir, "htpasswd"))
	}
	return b.String()
}

func (r *Registry) waitReady(timeout time.Duration) error {
	client := &http.Client{Transport: r.transport, Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		if r.proc.Exited() {
			return fmt.Errorf("registry exited: %v", r.proc.Err())
		}
		resp, err := client.Get(r.URL("/v2/"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
			err = fmt.Errorf("GET /v2/: status %d", resp.StatusCode)
		}
		lastErr = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("timed out after %s: %w", timeout, lastErr)
}

// Scheme is "https" with TLS, else "http".
func (r *Registry) Scheme() string {
	if r.opts.TLS {
		return "https"
	}
	return "http"
}

// URL returns the absolute URL of path on this registry ("/v2/").
func (r *Registry) URL(path string) string {
	return r.Scheme() + "://" + r.Host + path
}

// Transport trusts Registry.CA and presents the client cert when mutual TLS
// is on. It is shared; do not modify it.
func (r *Registry) Transport() http.RoundTripper { return r.transport }

// HTTPClient is a client using Transport, without credentials.
func (r *Registry) HTTPClient() *http.Client {
	return &http.Client{Transport: r.transport, Timeout: 30 * time.Second}
}

// Auth returns basic auth credentials, or anonymous with NoAuth.
func (r *Registry) Auth() authn.Authenticator {
	if r.opts.NoAuth {
		return authn.Anonymous
	}
	return &authn.Basic{Username: r.Username, Password: r.Password}
}

// RemoteOptions are the go-containerregistry options to talk to this registry.
func (r *Registry) RemoteOptions() []remote.Option {
	return []remote.Option{remote.WithAuth(r.Auth()), remote.WithTransport(r.transport)}
}

// NameOptions are the name options for references to this registry
// (name.Insecure for plain http, as only 127.0.0.1 is http by default).
func (r *Registry) NameOptions() []name.Option {
	if r.opts.TLS {
		return nil
	}
	return []name.Option{name.Insecure}
}

// Ref parses s relative to this registry: "base:1" is Host+"/base:1".
func (r *Registry) Ref(t testing.TB, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(r.Host+"/"+s, r.NameOptions()...)
	if err != nil {
		t.Fatalf("testenv: parsing reference %q: %v", s, err)
	}
	return ref
}

// Push writes img as repoTag ("base:1") and returns its manifest digest.
func (r *Registry) Push(t testing.TB, repoTag string, img v1.Image) v1.Hash {
	t.Helper()
	ref := r.Ref(t, repoTag)
	if err := remote.Write(ref, img, append(r.RemoteOptions(), remote.WithContext(ctxFor(t)))...); err != nil {
		t.Fatalf("testenv: pushing %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("testenv: digest of image pushed to %s: %v", ref, err)
	}
	return d
}

// PushIndex writes idx and all its images as repoTag and returns the index digest.
func (r *Registry) PushIndex(t testing.TB, repoTag string, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	ref := r.Ref(t, repoTag)
	if err := remote.WriteIndex(ref, idx, append(r.RemoteOptions(), remote.WithContext(ctxFor(t)))...); err != nil {
		t.Fatalf("testenv: pushing index %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatalf("testenv: digest of index pushed to %s: %v", ref, err)
	}
	return d
}

// Delete deletes the manifest repoAtDigest ("base@sha256:..."); tags that
// pointed at it then answer 404.
func (r *Registry) Delete(t testing.TB, repoAtDigest string) {
	t.Helper()
	ref, err := name.NewDigest(r.Host+"/"+repoAtDigest, r.NameOptions()...)
	if err != nil {
		t.Fatalf("testenv: parsing digest reference %q: %v", repoAtDigest, err)
	}
	if err := remote.Delete(ref, append(r.RemoteOptions(), remote.WithContext(ctxFor(t)))...); err != nil {
		t.Fatalf("testenv: deleting %s: %v", ref, err)
	}
}

// Log returns the registry's whole log so far: its access log says which
// requests it answered how.
func (r *Registry) Log(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(r.logPath)
	if err != nil {
		t.Fatalf("testenv: the registry's log: %v", err)
	}
	return string(b)
}

// LogTail returns the last n lines of the registry's log.
func (r *Registry) LogTail(n int) string { return childproc.TailFile(r.logPath, n) }

// Stop stops the registry; safe to call more than once.
func (r *Registry) Stop() {
	r.stopOnce.Do(func() {
		if r.proc != nil {
			r.proc.Stop(context.Background(), 5*time.Second)
		}
	})
}

func writeHtpasswd(t testing.TB, path, user, pass string) {
	t.Helper()
	// bcrypt is the only hash distribution's htpasswd accepts.
	out, err := exec.Command("htpasswd", "-Bbn", user, pass).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		t.Fatalf("testenv: htpasswd -Bbn (apt-get install apache2-utils): %v", err)
	}
	writeFile(t, path, out)
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatalf("testenv: writing %s: %v", path, err)
	}
}

func randHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("testenv: random bytes: %v", err)
	}
	return hex.EncodeToString(b)
}

// ctxFor is the test's context (canceled before cleanups run) with a bound,
// so a hung registry fails the test instead of the whole binary's timeout.
func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
