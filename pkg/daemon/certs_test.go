package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/docker/api/types/image"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// nonLoopbackIPv4 is an address of this host that dockerd does not treat as
// an insecure registry (it always does for 127.0.0.0/8), or "".
func nonLoopbackIPv4() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return ""
}

// mTLSRegistry serves an in-memory registry on ip with a certificate from
// its own CA, and requires client certificates from clientCA.
func mTLSRegistry(t *testing.T, ip string, clientCA *testenv.CA) (host string, ca *testenv.CA) {
	t.Helper()
	ca = testenv.NewCA(t)
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: registry.New(registry.Logger(stdlog.New(io.Discard, "", 0))),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{ca.IssueTLS(t, ip)},
			ClientCAs:    clientCA.Pool(),
			ClientAuth:   tls.RequireAndVerifyClientCert,
			MinVersion:   tls.VersionTLS12,
		},
		ErrorLog: stdlog.New(io.Discard, "", 0), // the refused handshakes are expected
	}
	go func() { _ = srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String(), ca
}

// CA and client certificates given to Start are what dockerd uses to talk
// to a registry with its own CA that requires mutual TLS.
func TestCertsUsedForRegistryPulls(t *testing.T) {
	requireDockerd(t)
	ip := nonLoopbackIPv4()
	if ip == "" {
		t.Skip("no non-loopback address: dockerd would treat the registry as insecure and ignore certs.d")
	}
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"} {
		t.Setenv(k, "")
	}
	clientCA := testenv.NewCA(t)
	host, ca := mTLSRegistry(t, ip, clientCA)
	certPEM, keyPEM := clientCA.Issue(t, "dockerd-client")
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}

	ref, err := name.NewTag(host + "/test/busybox:1")
	if err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.TLSClientConfig = &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{pair}}
	if err := remote.Write(ref, testenv.BusyboxImage(t, testenv.ImageOptions{}), remote.WithTransport(tr)); err != nil {
		t.Fatalf("pushing the test image: %v", err)
	}

	unlock := testenv.LockDockerd(t)
	defer unlock()
	pull := func(o Options) error {
		t.Helper()
		ctx := context.Background()
		o.Isolated = true
		o.Log, _ = testLog(t)
		d, err := Start(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := d.Stop(ctx); err != nil {
				t.Error(err)
			}
		}()
		pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		rc, err := d.Client().ImagePull(pctx, ref.String(), image.PullOptions{})
		if err != nil {
			return err
		}
		defer rc.Close()
		_, err = testenv.ReadJSONStream(rc)
		return err
	}
	if err := pull(Options{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("pull without certificates: err = %v, want a certificate error", err)
	} else {
		t.Logf("without certificates: %v", err)
	}
	err = pull(Options{CACerts: []CA{{Domain: host, PEM: string(ca.CertPEM)}}})
	if err == nil {
		t.Error("pull with the CA but no client certificate worked")
	} else {
		t.Logf("with the CA only: %v", err)
	}
	err = pull(Options{
		CACerts:     []CA{{Domain: host, PEM: string(ca.CertPEM)}},
		ClientCerts: []ClientCert{{Domain: host, Cert: string(certPEM), Key: string(keyPEM)}},
	})
	if err != nil {
		t.Errorf("pull with CA and client certificate: %v", err)
	}
	var se *StartError
	if errors.As(err, &se) {
		t.Log(se.LogTail)
	}
}
