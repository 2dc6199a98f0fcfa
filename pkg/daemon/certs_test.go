package daemon_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/certs"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/docker/api/types/image"
	"github.com/google/go-containerregistry/pkg/name"
)

// CA and client certificates given to Start are what dockerd uses to talk
// to a registry with its own CA that requires mutual TLS. The registry runs
// on a test host of our own (a network namespace): dockerd treats every
// 127.x address as insecure and would never read certs.d for it.
func TestCertsUsedForRegistryPulls(t *testing.T) {
	requireDockerd(t)
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"} {
		t.Setenv(k, "")
	}
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{NetHost: testenv.NewNetHost(t), ClientCA: testenv.NewCA(t), NoAuth: true})
	host, ca := reg.Host, reg.CA
	certPEM, keyPEM := reg.ClientCertPEM, reg.ClientKeyPEM
	ref, err := name.NewTag(host + "/test/busybox:1")
	if err != nil {
		t.Fatal(err)
	}
	reg.Push(t, "test/busybox:1", testenv.BusyboxImage(t, testenv.ImageOptions{}))

	unlock := testenv.LockDockerd(t)
	defer unlock()
	pull := func(o daemon.Options) error {
		t.Helper()
		ctx := context.Background()
		o.Isolated = true
		o.Log, _ = testLog(t)
		d, err := daemon.Start(ctx, o)
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
	if err := pull(daemon.Options{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("pull without certificates: err = %v, want a certificate error", err)
	} else {
		t.Logf("without certificates: %v", err)
	}
	err = pull(daemon.Options{CACerts: []certs.CA{{Domain: host, Cert: string(ca.CertPEM)}}})
	if err == nil {
		t.Error("pull with the CA but no client certificate worked")
	} else {
		t.Logf("with the CA only: %v", err)
	}
	err = pull(daemon.Options{
		CACerts:     []certs.CA{{Domain: host, Cert: string(ca.CertPEM)}},
		ClientCerts: []certs.ClientCert{{Domain: host, Cert: string(certPEM), Key: string(keyPEM)}},
	})
	if err != nil {
		t.Errorf("pull with CA and client certificate: %v", err)
	}
	var se *daemon.StartError
	if errors.As(err, &se) {
		t.Log(se.LogTail)
	}
}
