package testenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/childproc"
	"github.com/docker/docker/api/types/container"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// fastRetry keeps go-containerregistry's retries (1s, 3s, ...) out of test time.
var fastRetry = remote.WithRetryBackoff(remote.Backoff{Duration: 10 * time.Millisecond, Factor: 1, Steps: 5})

func TestFreePortAndShortTempDir(t *testing.T) {
	p := FreePort(t)
	if p <= 0 || p > 65535 {
		t.Fatalf("FreePort = %d", p)
	}
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatalf("port %d from FreePort is not bindable: %v", p, err)
	}
	l.Close()

	var dir string
	t.Run("make", func(t *testing.T) {
		dir = ShortTempDir(t, "te-")
		if !strings.HasPrefix(dir, "/tmp/te-") || len(dir) > 30 {
			t.Fatalf("ShortTempDir = %q, want short path under /tmp", dir)
		}
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ShortTempDir %s not removed on cleanup: %v", dir, err)
	}
}

func TestCA(t *testing.T) {
	ca := NewCA(t)
	certPEM, keyPEM := ca.Issue(t, "127.0.0.2", "registry.test", "::1")
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("issued pair does not load: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.2")) || !reflect.DeepEqual(leaf.DNSNames, []string{"registry.test"}) {
		t.Fatalf("SANs: IPs %v DNS %v", leaf.IPAddresses, leaf.DNSNames)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		for _, host := range []string{"127.0.0.2", "registry.test", "::1"} {
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: host, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				t.Errorf("verify %s for usage %v: %v", host, usage, err)
			}
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "other.test"}); err == nil {
		t.Error("cert verified for a name it does not carry")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: NewCA(t).Pool(), DNSName: "registry.test"}); err == nil {
		t.Error("cert verified against another CA")
	}
	if !bytes.Contains(ca.CertPEM, []byte("BEGIN CERTIFICATE")) {
		t.Error("CertPEM is not PEM")
	}
}

func get(t *testing.T, c *http.Client, u, user, pass string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestRegistryPlainAuth(t *testing.T) {
	t.Parallel()
	r := StartRegistry(t, RegistryOptions{})
	if !strings.HasPrefix(r.Host, "127.0.0.1:") || r.Username != "testuser" || len(r.Password) < 8 || r.CA != nil {
		t.Fatalf("unexpected registry %+v", r)
	}
	c := r.HTTPClient()
	if got := get(t, c, r.URL("/v2/"), "", ""); got != http.StatusUnauthorized {
		t.Errorf("anonymous GET /v2/ = %d, want 401", got)
	}
	if got := get(t, c, r.URL("/v2/"), r.Username, "wrong"); got != http.StatusUnauthorized {
		t.Errorf("wrong password GET /v2/ = %d, want 401", got)
	}
	if got := get(t, c, r.URL("/v2/"), r.Username, r.Password); got != http.StatusOK {
		t.Errorf("right password GET /v2/ = %d, want 200", got)
	}

	img := BusyboxImage(t, ImageOptions{Labels: map[string]string{"a": "b"}})
	d := r.Push(t, "base:1", img)
	desc, err := remote.Head(r.Ref(t, "base:1"), r.RemoteOptions()...)
	if err != nil {
		t.Fatalf("HEAD after push: %v", err)
	}
	if desc.Digest != d || desc.MediaType != types.DockerManifestSchema2 {
		t.Fatalf("HEAD = %s %s, want %s docker v2", desc.Digest, desc.MediaType, d)
	}
	pulled, err := remote.Image(r.Ref(t, "base:1"), r.RemoteOptions()...)
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	assertSameImage(t, img, pulled)

	_, err = remote.Head(r.Ref(t, "base:1"), remote.WithAuth(&authn.Basic{Username: r.Username, Password: "wrong"}), remote.WithTransport(r.Transport()))
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusUnauthorized {
		t.Fatalf("HEAD with wrong password: %v, want 401", err)
	}

	r.Stop()
	r.Stop() // idempotent
	if _, err := c.Get(r.URL("/v2/")); err == nil {
		t.Fatal("registry still answers after Stop")
	}
}

func TestRegistryNoAuthAndSeveralAtOnce(t *testing.T) {
	t.Parallel()
	var regs [3]*Registry
	var wg sync.WaitGroup
	for i := range regs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			regs[i] = StartRegistry(t, RegistryOptions{NoAuth: true, Host: "127.0.0." + strconv.Itoa(3+i)})
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	img := BusyboxImage(t, ImageOptions{})
	for i, r := range regs {
		if r.Username != "" || !strings.HasPrefix(r.Host, "127.0.0."+strconv.Itoa(3+i)+":") {
			t.Fatalf("registry %d: %+v", i, r)
		}
		if got := get(t, r.HTTPClient(), r.URL("/v2/"), "", ""); got != http.StatusOK {
			t.Errorf("registry %d: anonymous GET /v2/ = %d, want 200", i, got)
		}
		r.Push(t, "x/y:"+strconv.Itoa(i), img)
	}
	for i, r := range regs {
		for j := range regs {
			_, err := remote.Head(r.Ref(t, "x/y:"+strconv.Itoa(j)), r.RemoteOptions()...)
			if (i == j) != (err == nil) {
				t.Errorf("registry %d tag %d: HEAD err = %v", i, j, err)
			}
		}
	}
}

func TestRegistryTLS(t *testing.T) {
	t.Parallel()
	r := StartRegistry(t, RegistryOptions{TLS: true, ExtraNames: []string{"index.docker.io"}})
	if !strings.HasPrefix(r.Host, "127.0.0.2:") || r.CA == nil || r.Scheme() != "https" {
		t.Fatalf("unexpected TLS registry %+v", r)
	}
	img := BusyboxImage(t, ImageOptions{})
	d := r.Push(t, "tls/base:1", img)
	desc, err := remote.Head(r.Ref(t, "tls/base:1"), r.RemoteOptions()...)
	if err != nil || desc.Digest != d {
		t.Fatalf("HEAD over TLS = %v, %v", desc, err)
	}

	// A client that does not trust the CA must fail on the certificate.
	_, err = remote.Head(r.Ref(t, "tls/base:1"), remote.WithAuth(r.Auth()), remote.WithTransport(&http.Transport{}), fastRetry)
	var uae x509.UnknownAuthorityError
	var cve *tls.CertificateVerificationError
	if err == nil || !(errors.As(err, &uae) || errors.As(err, &cve)) {
		t.Fatalf("untrusting client: err = %v, want a certificate error", err)
	}

	// The server cert carries the extra name.
	tr := r.Transport().(*http.Transport).Clone()
	tr.TLSClientConfig.ServerName = "index.docker.io"
	if got := get(t, &http.Client{Transport: tr}, r.URL("/v2/"), r.Username, r.Password); got != http.StatusOK {
		t.Fatalf("GET /v2/ as index.docker.io = %d", got)
	}
	// Plain http to the TLS port does not work.
	if code := get(t, &http.Client{}, "http://"+r.Host+"/v2/", "", ""); code != http.StatusBadRequest {
		t.Fatalf("plain http to TLS registry = %d, want 400", code)
	}
}

func TestRegistryMutualTLS(t *testing.T) {
	t.Parallel()
	clientCA := NewCA(t)
	r := StartRegistry(t, RegistryOptions{ClientCA: clientCA})
	if len(r.ClientCertPEM) == 0 {
		t.Fatal("no client cert issued")
	}
	r.Push(t, "m/base:1", BusyboxImage(t, ImageOptions{}))

	// Trusting the server but without a client cert: the handshake fails.
	noCert := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.CA.Pool()}}
	if _, err := remote.Head(r.Ref(t, "m/base:1"), remote.WithAuth(r.Auth()), remote.WithTransport(noCert), fastRetry); err == nil {
		t.Fatal("HEAD without a client cert succeeded")
	}
	// A client cert from another CA fails too.
	other := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.CA.Pool(), Certificates: []tls.Certificate{NewCA(t).IssueTLS(t, "x")}}}
	if _, err := remote.Head(r.Ref(t, "m/base:1"), remote.WithAuth(r.Auth()), remote.WithTransport(other), fastRetry); err == nil {
		t.Fatal("HEAD with a foreign client cert succeeded")
	}
	// One from the client CA works.
	good := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.CA.Pool(), Certificates: []tls.Certificate{clientCA.IssueTLS(t, "y")}}}
	if _, err := remote.Head(r.Ref(t, "m/base:1"), remote.WithAuth(r.Auth()), remote.WithTransport(good)); err != nil {
		t.Fatalf("HEAD with a good client cert: %v", err)
	}
}

func TestRegistryDelete(t *testing.T) {
	t.Parallel()
	r := StartRegistry(t, RegistryOptions{})
	d := r.Push(t, "del:1", BusyboxImage(t, ImageOptions{Labels: map[string]string{"del": "1"}}))
	if _, err := remote.Head(r.Ref(t, "del:1"), r.RemoteOptions()...); err != nil {
		t.Fatalf("HEAD before delete: %v", err)
	}
	r.Delete(t, "del@"+d.String())
	for _, ref := range []string{"del:1", "del@" + d.String()} {
		_, err := remote.Head(r.Ref(t, ref), r.RemoteOptions()...)
		var te *transport.Error
		if !errors.As(err, &te) || te.StatusCode != http.StatusNotFound {
			t.Errorf("HEAD %s after delete: %v, want 404", ref, err)
		}
	}
}

func assertSameImage(t *testing.T, want, got v1.Image) {
	t.Helper()
	wd, _ := want.Digest()
	gd, err := got.Digest()
	if err != nil || wd != gd {
		t.Fatalf("digest %s, want %s (%v)", gd, wd, err)
	}
	wc, _ := want.RawConfigFile()
	gc, err := got.RawConfigFile()
	if err != nil || !bytes.Equal(wc, gc) {
		t.Fatalf("config differs (%v)", err)
	}
	wl, _ := want.Layers()
	gl, err := got.Layers()
	if err != nil || len(wl) != len(gl) {
		t.Fatalf("layers %d, want %d (%v)", len(gl), len(wl), err)
	}
	for i := range wl {
		a, _ := wl[i].DiffID()
		b, err := gl[i].DiffID()
		if err != nil || a != b {
			t.Fatalf("layer %d diffID %s, want %s (%v)", i, b, a, err)
		}
		// The registry must hand back the same bytes.
		rc, err := gl[i].Compressed()
		if err != nil {
			t.Fatal(err)
		}
		h, _, err := v1.SHA256(rc)
		rc.Close()
		wdg, _ := wl[i].Digest()
		if err != nil || h != wdg {
			t.Fatalf("layer %d blob hash %s, want %s (%v)", i, h, wdg, err)
		}
	}
}

type entry struct {
	hdr  tar.Header
	data []byte
}

func layerEntries(t *testing.T, l v1.Layer) []entry {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var out []entry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading layer tar: %v", err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{*h, b})
	}
}

func entryMap(es []entry) map[string]entry {
	m := map[string]entry{}
	for _, e := range es {
		m[e.hdr.Name] = e
	}
	return m
}

func TestBusyboxImage(t *testing.T) {
	t.Parallel()
	host, err := os.ReadFile(HostBusybox)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2023, 5, 6, 7, 8, 9, 0, time.UTC)
	img := BusyboxImage(t, ImageOptions{
		Env:          []string{"PATH=/bin", "FOO=bar"},
		User:         "app",
		Labels:       map[string]string{"k": "v"},
		RandomLayers: []int64{100_000, 3},
		Platform:     &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"},
		Created:      created,
	})
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != "arm64" || cf.Variant != "v8" || cf.OS != "linux" || !cf.Created.Time.Equal(created) ||
		cf.Config.User != "app" || !reflect.DeepEqual(cf.Config.Env, []string{"PATH=/bin", "FOO=bar"}) ||
		cf.Config.Labels["k"] != "v" || !reflect.DeepEqual(cf.Config.Cmd, []string{"sh"}) {
		t.Fatalf("config: %+v", cf)
	}
	if mt, _ := img.MediaType(); mt != types.DockerManifestSchema2 {
		t.Fatalf("media type %s", mt)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 3 || len(cf.RootFS.DiffIDs) != 3 || len(cf.History) != 3 {
		t.Fatalf("layers %d diffIDs %d history %d (%v)", len(layers), len(cf.RootFS.DiffIDs), len(cf.History), err)
	}
	m := entryMap(layerEntries(t, layers[0]))
	bb := m["bin/busybox"]
	if bb.hdr.Mode != 0o755 || !bytes.Equal(bb.data, host) {
		t.Fatalf("bin/busybox mode %o, %d bytes (host %d)", bb.hdr.Mode, len(bb.data), len(host))
	}
	for _, l := range BusyboxLinks {
		if e := m["bin/"+l]; e.hdr.Typeflag != tar.TypeSymlink || e.hdr.Linkname != "busybox" {
			t.Errorf("bin/%s: %+v", l, e.hdr)
		}
	}
	if e := m["etc/passwd"]; !strings.Contains(string(e.data), "root:x:0:0:root:/root:/bin/sh\n") || !strings.Contains(string(e.data), "app:x:1000:1000:app:/home/app:/bin/sh\n") {
		t.Errorf("etc/passwd = %q", e.data)
	}
	if e := m["etc/group"]; !strings.Contains(string(e.data), "app:x:1000:") {
		t.Errorf("etc/group = %q", e.data)
	}
	if e := m["tmp/"]; e.hdr.Typeflag != tar.TypeDir || e.hdr.Mode != 0o1777 {
		t.Errorf("tmp/: %+v", e.hdr)
	}
	if e := m["home/app/"]; e.hdr.Uid != 1000 || e.hdr.Gid != 1000 {
		t.Errorf("home/app/: %+v", e.hdr)
	}
	if e := m["root/"]; e.hdr.Typeflag != tar.TypeDir {
		t.Errorf("root/: %+v", e.hdr)
	}

	// Random layers: the right size, incompressible, deterministic.
	r0 := entryMap(layerEntries(t, layers[1]))["data/random-0"]
	if int64(len(r0.data)) != 100_000 {
		t.Fatalf("data/random-0 has %d bytes", len(r0.data))
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write(r0.data)
	zw.Close()
	if gz.Len() < 99_000 {
		t.Fatalf("random layer compresses to %d bytes: not random", gz.Len())
	}
	if r1 := entryMap(layerEntries(t, layers[2]))["data/random-1"]; len(r1.data) != 3 {
		t.Fatalf("data/random-1 has %d bytes", len(r1.data))
	}
	again := BusyboxImage(t, ImageOptions{
		Env: []string{"PATH=/bin", "FOO=bar"}, User: "app", Labels: map[string]string{"k": "v"},
		RandomLayers: []int64{100_000, 3}, Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, Created: created,
	})
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Fatalf("same options gave digests %s and %s", d1, d2)
	}
	otherSeed := BusyboxImage(t, ImageOptions{RandomLayers: []int64{100_000}, RandomSeed: 7})
	ol, _ := otherSeed.Layers()
	a, _ := ol[1].DiffID()
	b, _ := layers[1].DiffID()
	if a == b {
		t.Fatal("RandomSeed did not change the random layer")
	}

	// Defaults, OCI and NoPasswd.
	def := BusyboxImage(t, ImageOptions{MediaType: "oci", NoPasswd: true})
	dcf, _ := def.ConfigFile()
	if dcf.Architecture != "amd64" || dcf.OS != "linux" || !reflect.DeepEqual(dcf.Config.Env, []string{DefaultPath}) || dcf.Config.User != "" {
		t.Fatalf("default config: %+v", dcf.Config)
	}
	if mt, _ := def.MediaType(); mt != types.OCIManifestSchema1 {
		t.Fatalf("oci image media type %s", mt)
	}
	man, _ := def.Manifest()
	if man.Config.MediaType != types.OCIConfigJSON || man.Layers[0].MediaType != types.OCILayer {
		t.Fatalf("oci manifest: %+v", man)
	}
	dl, _ := def.Layers()
	if _, ok := entryMap(layerEntries(t, dl[0]))["etc/passwd"]; ok {
		t.Fatal("NoPasswd image has /etc/passwd")
	}
}

func TestMultiPlatformIndexPushPull(t *testing.T) {
	t.Parallel()
	r := StartRegistry(t, RegistryOptions{TLS: true})
	plats := []v1.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64", Variant: "v8"},
		{OS: "linux", Architecture: "arm", Variant: "v7"},
	}
	for _, mt := range []string{"docker", "oci"} {
		idx := MultiPlatformIndex(t, plats, ImageOptions{MediaType: mt, Labels: map[string]string{"set": mt}})
		d := r.PushIndex(t, "multi:"+mt, idx)
		pulled, err := remote.Index(r.Ref(t, "multi:"+mt), r.RemoteOptions()...)
		if err != nil {
			t.Fatalf("pull index: %v", err)
		}
		pd, _ := pulled.Digest()
		im, _ := pulled.IndexManifest()
		wantMT := types.DockerManifestList
		if mt == "oci" {
			wantMT = types.OCIImageIndex
		}
		if pd != d || im.MediaType != wantMT || len(im.Manifests) != len(plats) {
			t.Fatalf("%s index: digest %s want %s, media type %s, %d manifests", mt, pd, d, im.MediaType, len(im.Manifests))
		}
		for i, p := range plats {
			if got := im.Manifests[i].Platform; got == nil || !got.Equals(p) {
				t.Fatalf("manifest %d platform %v, want %v", i, got, p)
			}
			img, err := remote.Image(r.Ref(t, "multi:"+mt), append(r.RemoteOptions(), remote.WithPlatform(p))...)
			if err != nil {
				t.Fatalf("pull %s: %v", PlatformString(p), err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cf.Config.Labels["platform"] != PlatformString(p) || cf.Config.Labels["set"] != mt || cf.Architecture != p.Architecture {
				t.Fatalf("image for %s has labels %v arch %s", PlatformString(p), cf.Config.Labels, cf.Architecture)
			}
		}
	}
}

func TestLayerFromFilesExact(t *testing.T) {
	t.Parallel()
	mt := time.Date(2022, 2, 2, 2, 2, 2, 0, time.UTC)
	files := []File{
		{Name: "etc/.wh.passwd"},
		{Name: "var/.wh..wh..opq"},
		{Name: "dir/", Type: tar.TypeDir, Mode: 0o750, Uid: 5, Gid: 6},
		{Name: "dir/file", Mode: 0o4755, Uid: 1000, Gid: 1000, Content: []byte("hello"), ModTime: mt},
		{Name: "dir/hard", Type: tar.TypeLink, Linkname: "dir/file"},
		{Name: "dir/sym", Type: tar.TypeSymlink, Linkname: "../../../etc/shadow"},
		{Name: "dev/null", Type: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		{Name: "../x", Content: []byte("escape")},
		{Name: "/abs", Content: []byte("absolute")},
		{Name: "./dot//double", Content: []byte("unclean")},
		{Name: "zero", Mode: ModeZero},
		{Name: "xattr", PAXRecords: map[string]string{"SCHILY.xattr.user.k": "v"}},
		{Name: "fifo", Type: tar.TypeFifo},
	}
	for _, comp := range []string{"", "gzip", "none", "zstd"} {
		l := LayerFromFiles(t, files, comp)
		es := layerEntries(t, l)
		if len(es) != len(files) {
			t.Fatalf("%s: %d entries, want %d", comp, len(es), len(files))
		}
		for i, f := range files {
			h := es[i].hdr
			wantType := f.Type
			if wantType == 0 {
				wantType = tar.TypeReg
			}
			wantMode := f.Mode
			switch {
			case f.Mode == ModeZero:
				wantMode = 0
			case f.Mode == 0 && wantType == tar.TypeDir:
				wantMode = 0o755
			case f.Mode == 0 && wantType == tar.TypeSymlink:
				wantMode = 0o777
			case f.Mode == 0:
				wantMode = 0o644
			}
			wantTime := f.ModTime
			if wantTime.IsZero() {
				wantTime = DefaultCreated
			}
			if h.Name != f.Name || h.Typeflag != wantType || h.Mode != wantMode || h.Uid != f.Uid || h.Gid != f.Gid ||
				h.Linkname != f.Linkname || h.Devmajor != f.Devmajor || h.Devminor != f.Devminor || !h.ModTime.Equal(wantTime) ||
				!bytes.Equal(es[i].data, f.Content) {
				t.Errorf("%s entry %d: got %+v %q, want %+v", comp, i, h, es[i].data, f)
			}
			for k, v := range f.PAXRecords {
				if h.PAXRecords[k] != v {
					t.Errorf("%s entry %d: PAX %s = %q, want %q", comp, i, k, h.PAXRecords[k], v)
				}
			}
		}
		rc, _ := l.Compressed()
		head := make([]byte, 4)
		io.ReadFull(rc, head)
		rc.Close()
		lmt, _ := l.MediaType()
		switch comp {
		case "", "gzip":
			if lmt != types.DockerLayer || head[0] != 0x1f || head[1] != 0x8b {
				t.Errorf("gzip layer: %s % x", lmt, head)
			}
		case "zstd":
			if lmt != types.OCILayerZStd || !bytes.Equal(head, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
				t.Errorf("zstd layer: %s % x", lmt, head)
			}
		case "none":
			if lmt != types.DockerUncompressedLayer || string(head) != "etc/" {
				t.Errorf("uncompressed layer: %s % x", lmt, head)
			}
		}
	}
}

func TestZstdRoundTrip(t *testing.T) {
	t.Parallel()
	r := StartRegistry(t, RegistryOptions{})
	img := BusyboxImage(t, ImageOptions{Compression: "zstd", RandomLayers: []int64{50_000}})
	extra := LayerFromFiles(t, []File{{Name: "hello.txt", Content: []byte("zstd says hi")}}, "zstd")
	img = AppendLayers(t, img, extra)
	man, _ := img.Manifest()
	if man.MediaType != types.OCIManifestSchema1 || len(man.Layers) != 3 {
		t.Fatalf("manifest %s with %d layers", man.MediaType, len(man.Layers))
	}
	for i, l := range man.Layers {
		if l.MediaType != types.OCILayerZStd {
			t.Fatalf("layer %d media type %s", i, l.MediaType)
		}
	}
	r.Push(t, "zstd:1", img)
	pulled, err := remote.Image(r.Ref(t, "zstd:1"), r.RemoteOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	assertSameImage(t, img, pulled)
	pl, _ := pulled.Layers()
	host, _ := os.ReadFile(HostBusybox)
	if e := entryMap(layerEntries(t, pl[0]))["bin/busybox"]; !bytes.Equal(e.data, host) {
		t.Fatal("busybox did not survive the zstd round trip")
	}
	if e := entryMap(layerEntries(t, pl[2]))["hello.txt"]; string(e.data) != "zstd says hi" {
		t.Fatalf("hello.txt = %q", e.data)
	}

	// AppendLayers moves gzip layers to the base's media type family.
	oci := AppendLayers(t, BusyboxImage(t, ImageOptions{MediaType: "oci"}), LayerFromFiles(t, []File{{Name: "a"}}, "gzip"))
	om, _ := oci.Manifest()
	if om.Layers[1].MediaType != types.OCILayer {
		t.Fatalf("appended gzip layer on oci base has %s", om.Layers[1].MediaType)
	}
}

// statusRecorder records the status of every response a client sees.
type statusRecorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen []int
	hdrs []http.Header
}

func (s *statusRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.next.RoundTrip(req)
	if err == nil {
		s.mu.Lock()
		s.seen = append(s.seen, resp.StatusCode)
		s.hdrs = append(s.hdrs, resp.Header.Clone())
		s.mu.Unlock()
	}
	return resp, err
}

func TestFaultProxy429ThenSuccess(t *testing.T) {
	t.Parallel()
	r := StartRegistry(t, RegistryOptions{})
	r.Push(t, "fp:1", BusyboxImage(t, ImageOptions{}))
	p := StartFaultProxy(t, r.Host, Fault{Kind: Fault429, Count: 2, RetryAfter: "1"})

	rec := &statusRecorder{next: &http.Transport{Proxy: nil}}
	ref, err := name.ParseReference(p.Host+"/fp:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(ref, remote.WithAuth(r.Auth()), remote.WithTransport(rec), fastRetry)
	if err != nil {
		t.Fatalf("HEAD through proxy: %v", err)
	}
	if want, _ := remote.Head(r.Ref(t, "fp:1"), r.RemoteOptions()...); want == nil || desc.Digest != want.Digest {
		t.Fatalf("digest through proxy %s differs", desc.Digest)
	}
	var n429 int
	for i, s := range rec.seen {
		if s == http.StatusTooManyRequests {
			n429++
			if rec.hdrs[i].Get("Retry-After") != "1" {
				t.Errorf("429 without Retry-After: %v", rec.hdrs[i])
			}
		}
	}
	if n429 != 2 || p.Faulted() != 2 || p.Requests() < 3 {
		t.Fatalf("client saw %v; proxy faulted %d of %d", rec.seen, p.Faulted(), p.Requests())
	}

	// 503 and 500 with a path filter, set at run time.
	p.SetFaults(Fault{Kind: Fault503, Count: 1, PathContains: "/manifests/", RetryAfter: "2"}, Fault{Kind: Fault500, Count: 1})
	c := &http.Client{}
	if got := get(t, c, "http://"+p.Host+"/v2/", r.Username, r.Password); got != http.StatusOK {
		t.Fatalf("non-matching path = %d, want pass-through 200", got)
	}
	resp, err := c.Head("http://" + p.Host + "/v2/fp/manifests/1")
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "2" {
		t.Fatalf("manifest HEAD = %v %v", resp, err)
	}
	if got := get(t, c, "http://"+p.Host+"/v2/", r.Username, r.Password); got != http.StatusInternalServerError {
		t.Fatalf("second fault = %d, want 500", got)
	}
	if got := get(t, c, "http://"+p.Host+"/v2/", r.Username, r.Password); got != http.StatusOK {
		t.Fatalf("after faults = %d, want 200", got)
	}
}

func TestFaultProxyPassThroughPushWithAuth(t *testing.T) {
	t.Parallel()
	r := StartRegistry(t, RegistryOptions{})
	// One 503 on a blob upload: the upload URLs must come back through the proxy.
	p := StartFaultProxy(t, r.Host, Fault{Kind: Fault503, Count: 1, PathContains: "/blobs/uploads/"})
	ref, err := name.ParseReference(p.Host+"/pt:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img := BusyboxImage(t, ImageOptions{RandomLayers: []int64{200_000}})
	if err := remote.Write(ref, img, remote.WithAuth(r.Auth()), fastRetry); err != nil {
		t.Fatalf("push through proxy: %v", err)
	}
	if p.Faulted() != 1 {
		t.Fatalf("faulted %d, want 1", p.Faulted())
	}
	// Upload URLs come from the registry's Location headers: they must
	// lead back through the proxy.
	var puts int
	for _, l := range p.Log() {
		if strings.HasPrefix(l, "PUT /v2/pt/blobs/uploads/") && len(l) > len("PUT /v2/pt/blobs/uploads/") {
			puts++
		}
	}
	if puts < 3 { // two layers and a config
		t.Fatalf("%d blob upload PUTs through the proxy; log: %v", puts, p.Log())
	}
	before := p.Requests()
	pulled, err := remote.Image(r.Ref(t, "pt:1"), r.RemoteOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	assertSameImage(t, img, pulled)
	if p.Requests() != before {
		t.Fatal("direct pull went through the proxy")
	}
	if _, err := remote.Head(ref, remote.WithAuth(&authn.Basic{Username: r.Username, Password: "nope"})); err == nil {
		t.Fatal("wrong password accepted through the proxy")
	}
}

func TestFaultProxyReset(t *testing.T) {
	t.Parallel()
	r := StartRegistry(t, RegistryOptions{NoAuth: true})
	p := StartFaultProxy(t, r.Host, Fault{Kind: FaultReset, Count: 1})
	c := &http.Client{Transport: &http.Transport{Proxy: nil}}
	_, err := c.Get("http://" + p.Host + "/v2/")
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("GET with reset fault: %v, want ECONNRESET", err)
	}
	if got := get(t, c, "http://"+p.Host+"/v2/", "", ""); got != http.StatusOK {
		t.Fatalf("after reset = %d", got)
	}
	if p.Requests() != 2 || p.Faulted() != 1 {
		t.Fatalf("requests %d faulted %d", p.Requests(), p.Faulted())
	}
}

func TestFaultProxyStall(t *testing.T) {
	t.Parallel()
	r := StartRegistry(t, RegistryOptions{NoAuth: true})
	p := StartFaultProxy(t, r.Host, Fault{Kind: FaultStall, Count: 1})
	c := &http.Client{Timeout: 300 * time.Millisecond, Transport: &http.Transport{Proxy: nil}}
	start := time.Now()
	_, err := c.Get("http://" + p.Host + "/v2/")
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("stalled GET: %v after %s, want a client timeout", err, time.Since(start))
	}
	if got := get(t, c, "http://"+p.Host+"/v2/", "", ""); got != http.StatusOK {
		t.Fatalf("after stall = %d", got)
	}

	// A stall forever is released by Stop.
	p.SetFaults(Fault{Kind: FaultStall, Count: -1})
	done := make(chan error, 1)
	go func() {
		_, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Get("http://" + p.Host + "/v2/")
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("stalled request returned early: %v", err)
	default:
	}
	p.Stop()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("stalled request succeeded after Stop")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Stop did not release a stalled request")
	}
	p.Stop()
}

func TestFaultProxyOnlyForwardsToTarget(t *testing.T) {
	t.Parallel()
	r := StartRegistry(t, RegistryOptions{NoAuth: true})
	p := StartFaultProxy(t, r.Host)
	// A decoy that must never be reached.
	var decoyHits int
	var mu sync.Mutex
	decoy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		decoyHits++
		mu.Unlock()
	})}
	go srv.Serve(decoy)
	t.Cleanup(func() { srv.Close() })

	// Use the fault proxy as a forward proxy towards the decoy.
	pu, _ := url.Parse("http://" + p.Host)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	resp, err := c.Get("http://" + decoy.Addr().String() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	mu.Lock()
	defer mu.Unlock()
	if decoyHits != 0 || resp.Header.Get("Docker-Distribution-Api-Version") == "" {
		t.Fatalf("decoy hits %d, response headers %v", decoyHits, resp.Header)
	}
}

// The test environment's dockerd loads and runs images, keeps to itself
// (its own containerd, mount namespace, state and data root), and leaves
// nothing on the host after Stop.
func TestDockerdLoadAndCleanup(t *testing.T) {
	// Snapshots under the lock: no other test's dockerd is changing things.
	unlock := LockDockerd(t)
	before := hostSnapshot(t)
	daemonsBefore := dockerdProcesses()
	unlock()
	var dir string
	t.Run("run", func(t *testing.T) {
		start := time.Now()
		d := StartDockerd(t)
		t.Logf("dockerd up in %s", time.Since(start))
		dir = d.Dir
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		checkDockerdIsolated(t, ctx, d)
		checkDockerdLoadsAndRuns(t, ctx, d)
		checkStopLeavesNothing(t, ctx, d)
	})
	if dir == "" {
		t.Fatal("dockerd did not start")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state dir %s left after cleanup: %v", dir, err)
	}
	if mps, err := mountsUnder(dir); err != nil || len(mps) > 0 {
		t.Fatalf("mounts left under %s: %v %v", dir, mps, err)
	}
	unlock = LockDockerd(t)
	defer unlock()
	if left := childproc.Mentioning("/tmp/dk-"); len(left) > 0 {
		t.Fatalf("processes of a testenv dockerd left: %v", left)
	}
	// Daemons not started by this test (a system dockerd) may exist.
	for _, p := range dockerdProcesses() {
		if !slices.Contains(daemonsBefore, p) {
			t.Fatalf("dockerd or containerd process left: %s", p)
		}
	}
	after := hostSnapshot(t)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("host changed:\nbefore %v\nafter  %v", before, after)
	}
}

// checkDockerdIsolated: dockerd runs with no bridge and no iptables, with a
// containerd of its own and everything in the state dir, in a mount
// namespace that is not the test's.
func checkDockerdIsolated(t *testing.T, ctx context.Context, d *Dockerd) {
	t.Helper()
	if len(d.Host) > 100 || !strings.HasPrefix(d.Host, "unix://"+d.Dir+"/") || !strings.HasPrefix(d.Dir, "/tmp/dk-") {
		t.Fatalf("Host %q, Dir %q", d.Host, d.Dir)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", d.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	for _, f := range []string{"--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false"} {
		if !slices.Contains(args, f) {
			t.Errorf("dockerd runs without %s: %q", f, args)
		}
	}
	i := slices.Index(args, "--containerd")
	if i < 0 || i+1 == len(args) || !strings.HasPrefix(args[i+1], d.Dir+"/") {
		t.Fatalf("dockerd is not given a containerd of its own in %s: %q", d.Dir, args)
	}
	if fi, err := os.Stat(args[i+1]); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("containerd socket %s: %v %v", args[i+1], fi, err)
	}
	self, _ := os.Readlink("/proc/self/ns/mnt")
	dns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", d.Pid()))
	if dns == "" || dns == self {
		t.Fatalf("dockerd mount namespace %q, test %q", dns, self)
	}
	if keys, _ := filepath.Glob(filepath.Join(d.Dir, "dkd-*", "key.json")); len(keys) != 1 {
		t.Errorf("trust key not in the state dir (then it went to /etc/docker): %v", keys)
	}
	info, err := d.Client().Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.DockerRootDir != d.DataRoot {
		t.Fatalf("daemon data root %s, want %s", info.DockerRootDir, d.DataRoot)
	}
}

// checkDockerdLoadsAndRuns: images load (ReadJSONStream reports a broken
// one), LoadImage checks the ID, and an image runs with its users.
func checkDockerdLoadsAndRuns(t *testing.T, ctx context.Context, d *Dockerd) {
	t.Helper()
	cli := d.Client()
	img := BusyboxImage(t, ImageOptions{RandomLayers: []int64{1 << 20}, Labels: map[string]string{"loaded": "yes"}})
	var buf bytes.Buffer
	tag, _ := name.NewTag("testenv/busybox:load")
	if err := tarball.Write(tag, img, &buf); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.ImageLoad(ctx, &buf)
	if err != nil {
		t.Fatalf("ImageLoad: %v", err)
	}
	msgs, err := ReadJSONStream(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("load stream: %v", err)
	}
	ins, err := cli.ImageInspect(ctx, "testenv/busybox:load")
	if err != nil {
		t.Fatalf("inspect loaded image: %v (load said %+v)", err, msgs)
	}
	want, _ := img.ConfigName()
	if ins.ID != want.String() || ins.Config.Labels["loaded"] != "yes" || len(ins.RootFS.Layers) != 2 {
		t.Fatalf("loaded image ID %s labels %v layers %d, want %s", ins.ID, ins.Config.Labels, len(ins.RootFS.Layers), want)
	}
	// The helper does the same and checks the ID itself.
	if id := d.LoadImage(t, "testenv/other:1", BusyboxImage(t, ImageOptions{User: "app"})); !strings.HasPrefix(id, "sha256:") {
		t.Fatalf("LoadImage ID %q", id)
	}
	// A broken tarball is reported through the stream.
	resp, err = cli.ImageLoad(ctx, strings.NewReader("not a tarball"))
	if err == nil {
		_, err = ReadJSONStream(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Fatal("loading garbage did not fail")
	}
	if out := runContainer(t, ctx, d, "testenv/other:1", []string{"sh", "-c", "id -u; id -un; echo $PATH; test -d /home/app -a -k /tmp && echo ok"}); out != "1000\napp\n"+strings.TrimPrefix(DefaultPath, "PATH=")+"\nok\n" {
		t.Fatalf("container output %q", out)
	}
}

// checkStopLeavesNothing: a container left running does not outlive Stop,
// nor do its cgroups, dockerd, processes or mounts of the state dir; Stop
// is idempotent and releases the dockerd lock.
func checkStopLeavesNothing(t *testing.T, ctx context.Context, d *Dockerd) {
	t.Helper()
	cli := d.Client()
	cr, err := cli.ContainerCreate(ctx, &container.Config{Image: "testenv/busybox:load", Cmd: []string{"/bin/busybox", "sleep", "300"}}, &container.HostConfig{NetworkMode: "none"}, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.ContainerStart(ctx, cr.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	ci, err := cli.ContainerInspect(ctx, cr.ID)
	if err != nil || ci.State == nil || ci.State.Pid == 0 {
		t.Fatalf("inspect running container: %v", err)
	}
	cpid, pid := ci.State.Pid, d.Pid()
	parent := cgroupParentOf(t, cpid)

	if err := d.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := syscall.Kill(cpid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("container process %d still exists after Stop: %v", cpid, err)
	}
	v1, _ := filepath.Glob("/sys/fs/cgroup/*/" + parent)
	v2, _ := filepath.Glob("/sys/fs/cgroup/" + parent)
	if left := append(v1, v2...); len(left) > 0 {
		t.Fatalf("cgroups left: %v", left)
	}
	if err := d.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("dockerd pid %d still exists after Stop: %v", pid, err)
	}
	if left := childproc.Mentioning(d.Dir); len(left) > 0 {
		t.Fatalf("processes left from %s: %v", d.Dir, left)
	}
	if mps, err := mountsUnder(d.Dir); err != nil || len(mps) > 0 {
		t.Fatalf("mounts left under %s: %v %v", d.Dir, mps, err)
	}
	// A benchmark starts one dockerd after another in one test.
	if holdsDockerdLock(t) {
		t.Fatal("this process still holds the dockerd lock after Stop")
	}
}

// holdsDockerdLock reports whether this process has the lock's socket open
// (another test binary may have taken the lock meanwhile).
func holdsDockerdLock(t *testing.T) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		t.Fatal(err)
	}
	mine := map[string]bool{}
	fds, _ := filepath.Glob("/proc/self/fd/*")
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil {
			mine[l] = true
		}
	}
	for _, l := range strings.Split(string(b), "\n") {
		// Num RefCount Protocol Flags Type St Inode Path
		if f := strings.Fields(l); len(f) == 8 && f[7] == dockerdLockName && mine["socket:["+f[6]+"]"] {
			return true
		}
	}
	return false
}

// cgroupParentOf is the top cgroup of a container's process, the daemon's
// parent for its containers ("dkd-123").
func cgroupParentOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 {
			if top, _, _ := strings.Cut(strings.TrimPrefix(f[2], "/"), "/"); strings.HasPrefix(top, "dkd-") {
				return top
			}
		}
	}
	t.Fatalf("container process %d is in no cgroup of the daemon:\n%s", pid, b)
	return ""
}

// runContainer runs cmd in image with no network as a test user would, and
// returns its output.
func runContainer(t *testing.T, ctx context.Context, d *Dockerd, image string, cmd []string) string {
	t.Helper()
	cli := d.Client()
	cr, err := cli.ContainerCreate(ctx, &container.Config{Image: image, Cmd: cmd, Tty: true}, &container.HostConfig{NetworkMode: "none"}, nil, nil, "")
	if err != nil {
		t.Fatalf("create container: %v", err)
	}
	defer cli.ContainerRemove(context.Background(), cr.ID, container.RemoveOptions{Force: true})
	waitC, errC := cli.ContainerWait(ctx, cr.ID, container.WaitConditionNextExit)
	if err := cli.ContainerStart(ctx, cr.ID, container.StartOptions{}); err != nil {
		t.Fatalf("start container: %v", err)
	}
	select {
	case w := <-waitC:
		if w.StatusCode != 0 {
			t.Errorf("container exited %d", w.StatusCode)
		}
	case err := <-errC:
		t.Fatalf("wait container: %v", err)
	}
	rc, err := cli.ContainerLogs(ctx, cr.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatalf("container logs: %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "\r\n", "\n")
}

// hostSnapshot lists what dockerd could change on the host by mistake.
func hostSnapshot(t *testing.T) map[string][]string {
	t.Helper()
	s := map[string][]string{}
	for _, dir := range []string{"/etc/docker", "/opt", "/run", "/var/run", "/var/lib", "/run/containerd", "/var/lib/docker", "/var/lib/containerd"} {
		var names []string
		filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if p != dir && de.IsDir() && dir != "/etc/docker" && dir != "/run/containerd" {
				names = append(names, p)
				return filepath.SkipDir
			}
			names = append(names, p)
			return nil
		})
		sort.Strings(names)
		s[dir] = names
	}
	cgs, _ := filepath.Glob("/sys/fs/cgroup/*/*/")
	top, _ := filepath.Glob("/sys/fs/cgroup/*/")
	s["cgroups"] = append(top, cgs...)
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		s["interfaces"] = append(s["interfaces"], i.Name)
	}
	for _, cmd := range [][]string{{"iptables-save"}, {"ip6tables-save"}} {
		if _, err := exec.LookPath(cmd[0]); err != nil {
			continue
		}
		out, err := exec.Command(cmd[0], cmd[1:]...).Output()
		if err != nil {
			continue
		}
		var rules []string
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "#") || strings.HasPrefix(l, ":") && strings.Contains(l, "[") {
				continue // comments and packet counters change on their own
			}
			rules = append(rules, l)
		}
		s[cmd[0]] = rules
	}
	return s
}

func dockerdProcesses() []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		arg0 := filepath.Base(string(bytes.SplitN(b, []byte{0}, 2)[0]))
		if arg0 == "dockerd" || strings.HasPrefix(arg0, "containerd") {
			out = append(out, e.Name()+":"+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

// BenchmarkStartDockerd measures what every test that needs a dockerd
// pays: StartDockerd until the API answers, then Stop.
func BenchmarkStartDockerd(b *testing.B) {
	var start, stop time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		d := StartDockerd(b)
		start += time.Since(t0)
		t1 := time.Now()
		if err := d.Stop(); err != nil {
			b.Fatal(err)
		}
		stop += time.Since(t1)
	}
	b.ReportMetric(start.Seconds()*1000/float64(b.N), "start-ms/op")
	b.ReportMetric(stop.Seconds()*1000/float64(b.N), "stop-ms/op")
}
