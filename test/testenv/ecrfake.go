package testenv

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// ECRTarget is the X-Amz-Target of ECR's GetAuthorizationToken.
const ECRTarget = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"

// FakeECROptions configures StartFakeECR.
type FakeECROptions struct {
	// The only AWS credentials accepted; a request signed with anything
	// else is answered as AWS does (400 UnrecognizedClientException or
	// InvalidSignatureException).
	AccessKeyID, SecretAccessKey, SessionToken string
	// Username and Password are what the token decodes to (Username
	// default "AWS", as ECR's).
	Username, Password string
}

// FakeECR is an ECR endpoint on loopback speaking the JSON protocol of
// GetAuthorizationToken, with SigV4 signatures checked against the one
// accepted key. Point the AWS SDK at it with ECREnv.
type FakeECR struct {
	URL  string
	opts FakeECROptions

	mu    sync.Mutex
	calls []ECRCall
}

// ECRCall is one request the fake answered.
type ECRCall struct {
	Region, AccessKeyID string
	Status              int
}

// StartFakeECR starts the fake; it is closed on cleanup.
func StartFakeECR(t testing.TB, opts FakeECROptions) *FakeECR {
	t.Helper()
	if opts.Username == "" {
		opts.Username = "AWS"
	}
	f := &FakeECR{opts: opts}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// Calls lists the requests answered so far.
func (f *FakeECR) Calls() []ECRCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ECRCall(nil), f.calls...)
}

var credentialPattern = regexp.MustCompile(`^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]+)$`)

func (f *FakeECR) serve(w http.ResponseWriter, r *http.Request) {
	call := ECRCall{}
	reply := func(status int, v any) {
		call.Status = status
		f.mu.Lock()
		f.calls = append(f.calls, call)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	fail := func(status int, typ, msg string) {
		w.Header().Set("X-Amzn-ErrorType", typ)
		reply(status, map[string]string{"__type": typ, "message": msg})
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		fail(400, "SerializationException", err.Error())
		return
	}
	if r.Method != http.MethodPost || r.Header.Get("X-Amz-Target") != ECRTarget {
		fail(400, "UnknownOperationException", fmt.Sprintf("the fake answers only POST %s, not %s %q", ECRTarget, r.Method, r.Header.Get("X-Amz-Target")))
		return
	}
	m := credentialPattern.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil {
		fail(400, "MissingAuthenticationTokenException", "Missing Authentication Token")
		return
	}
	call.AccessKeyID, call.Region = m[1], m[3]
	if m[4] != "ecr" {
		fail(400, "InvalidSignatureException", "Credential should be scoped to correct service: 'ecr'.")
		return
	}
	if m[1] != f.opts.AccessKeyID || r.Header.Get("X-Amz-Security-Token") != f.opts.SessionToken {
		fail(400, "UnrecognizedClientException", "The security token included in the request is invalid.")
		return
	}
	if !f.signatureOK(r, body, m[3], strings.Split(m[5], ";"), m[6]) {
		fail(400, "InvalidSignatureException", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")
		return
	}
	token := base64.StdEncoding.EncodeToString([]byte(f.opts.Username + ":" + f.opts.Password))
	reply(200, map[string]any{"authorizationData": []map[string]any{{
		"authorizationToken": token,
		"expiresAt":          float64(time.Now().Add(12 * time.Hour).Unix()),
		"proxyEndpoint":      "https://123456789012.dkr.ecr." + call.Region + ".amazonaws.com",
	}}})
}

// signatureOK signs a copy of the request's signed headers with the
// accepted secret (the SDK's own signer) and compares the signatures.
func (f *FakeECR) signatureOK(r *http.Request, body []byte, region string, signed []string, got string) bool {
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return false
	}
	c, err := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return false
	}
	c.Header = http.Header{}
	c.ContentLength = 0
	for _, h := range signed {
		switch h {
		case "host":
		case "content-length":
			c.ContentLength = r.ContentLength
		default:
			c.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: f.opts.AccessKeyID, SecretAccessKey: f.opts.SecretAccessKey, SessionToken: f.opts.SessionToken}
	if err := v4.NewSigner().SignHTTP(r.Context(), creds, c, hex.EncodeToString(sum[:]), "ecr", region, when); err != nil {
		return false
	}
	m := credentialPattern.FindStringSubmatch(c.Header.Get("Authorization"))
	return m != nil && m[6] == got
}

// ECREnv points the AWS SDK of this process at the fake and away from
// everything else: no shared config or credentials files of the machine,
// no profile, no AWS_* credentials, no web identity or container
// credentials, and no EC2 metadata (169.254.169.254). Restored on cleanup.
func ECREnv(t testing.TB, f *FakeECR) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "AWS_") {
			unsetenv(t, k)
		}
	}
	dir := t.TempDir()
	for _, name := range []string{"config", "credentials"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_ENDPOINT_URL_ECR", f.URL)
	// Retries of a refused request would only slow the failure tests.
	t.Setenv("AWS_MAX_ATTEMPTS", "1")
}

// unsetenv unsets k for the test, restoring it on cleanup.
func unsetenv(t testing.TB, k string) {
	t.Helper()
	t.Setenv(k, "") // registers the restore
	os.Unsetenv(k)
}

// ForwardPort listens on a fresh loopback address (127.x.y.z, random) at
// port and copies every connection to target. It lets a daemon reach a
// registry on a random port under a name whose port is fixed (an ECR host
// is always :443). It returns the address's IP; closed on cleanup.
func ForwardPort(t testing.TB, port int, target string) string {
	t.Helper()
	var ln net.Listener
	var err error
	for range 10 {
		var b [3]byte
		if _, err = rand.Read(b[:]); err != nil {
			t.Fatal(err)
		}
		ip := net.IPv4(127, 100+b[0]%100, b[1], 1+b[2]%250)
		if ln, err = net.Listen("tcp", net.JoinHostPort(ip.String(), fmt.Sprint(port))); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("testenv: listening on a loopback address at port %d: %v", port, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	track := func(c net.Conn, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			open[c] = true
		} else {
			delete(open, c)
		}
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close() // idle keep-alive connections would wait forever
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c, true)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer track(c, false)
				defer c.Close()
				u, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer u.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).IP.String()
}
