package download

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/concourse-docker/docker-image-resource/pkg/retry"
	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

var blobPathRE = regexp.MustCompile(`/v2/.+/blobs/(sha256:[0-9a-f]{64})$`)

// fakeRegistry wraps the in-process registry to count blob GETs, measure
// how many run at once, slow them down and corrupt chosen ones.
type fakeRegistry struct {
	srv *httptest.Server

	mu          sync.Mutex
	gets        map[string]int
	inflight    int
	maxInflight int
	corrupt     map[string]int // digest -> responses still to corrupt (-1: all)
	missing     map[string]bool
	delay       time.Duration
}

func newFakeRegistry(t *testing.T) *fakeRegistry {
	t.Helper()
	f := &fakeRegistry{gets: map[string]int{}, corrupt: map[string]int{}, missing: map[string]bool{}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := blobPathRE.FindStringSubmatch(r.URL.Path)
		if m == nil || r.Method != http.MethodGet {
			reg.ServeHTTP(w, r)
			return
		}
		dg := m[1]
		f.mu.Lock()
		f.gets[dg]++
		f.inflight++
		if f.inflight > f.maxInflight {
			f.maxInflight = f.inflight
		}
		bad := f.corrupt[dg] != 0
		if f.corrupt[dg] > 0 {
			f.corrupt[dg]--
		}
		missing := f.missing[dg]
		delay := f.delay
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			f.inflight--
			f.mu.Unlock()
		}()
		time.Sleep(delay)
		if missing {
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"gone"}]}`, http.StatusNotFound)
			return
		}
		if bad {
			w = &corruptingWriter{ResponseWriter: w}
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeRegistry) host() string { return strings.TrimPrefix(f.srv.URL, "http://") }

func (f *fakeRegistry) getCount(h v1.Hash) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gets[h.String()]
}

func (f *fakeRegistry) resetCounts() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets = map[string]int{}
	f.maxInflight = 0
}

// corruptingWriter flips the first body byte: same length, wrong digest.
type corruptingWriter struct {
	http.ResponseWriter
	done bool
}

func (c *corruptingWriter) Write(p []byte) (int, error) {
	if !c.done && len(p) > 0 {
		c.done = true
		q := append([]byte(nil), p...)
		q[0] ^= 0xff
		return c.ResponseWriter.Write(q)
	}
	return c.ResponseWriter.Write(p)
}

// push writes img to the fake registry and returns the lazy remote image.
func (f *fakeRegistry) push(t *testing.T, img v1.Image) v1.Image {
	t.Helper()
	ref, err := name.ParseReference(f.host() + "/test/img:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push: %v", err)
	}
	f.resetCounts()
	rimg, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("remote.Image: %v", err)
	}
	return rimg
}

func tarWithFile(t *testing.T, name, content string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// mixedImage has gzip, zstd and uncompressed layers, one of them twice.
func mixedImage(t *testing.T) v1.Image {
	t.Helper()
	gz, err := random.Layer(200_000, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	zb := tarWithFile(t, "zstd.txt", strings.Repeat("zstd layer ", 5000))
	zs, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(zb)), nil },
		tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
	if err != nil {
		t.Fatal(err)
	}
	plain := static.NewLayer(tarWithFile(t, "plain.txt", "uncompressed layer"), types.OCIUncompressedLayer)
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), gz, zs, plain, gz)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	return img
}

func randomImage(t *testing.T, layers int64) v1.Image {
	t.Helper()
	img, err := random.Image(50_000, layers)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func quietOpts(dir string) Options {
	return Options{Dir: dir, Retry: retry.Policy{Initial: time.Millisecond}, ProgressInterval: -1}
}

func readAll(t *testing.T, open func() (io.ReadCloser, error)) []byte {
	t.Helper()
	rc, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func uniqueLayers(t *testing.T, img v1.Image) []v1.Descriptor {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Descriptor
	seen := map[v1.Hash]bool{}
	for _, d := range m.Layers {
		if !seen[d.Digest] {
			seen[d.Digest] = true
			out = append(out, d)
		}
	}
	return out
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestImageFromRegistry(t *testing.T) {
	reg := newFakeRegistry(t)
	orig := mixedImage(t)
	rimg := reg.push(t, orig)
	dir := t.TempDir()

	local, st, err := Image(context.Background(), rimg, quietOpts(dir))
	if err != nil {
		t.Fatal(err)
	}
	layers := uniqueLayers(t, orig)
	if len(layers) != 3 {
		t.Fatalf("test image should have 3 distinct layers, has %d", len(layers))
	}
	var total int64
	for _, d := range layers {
		if n := reg.getCount(d.Digest); n != 1 {
			t.Errorf("blob %s fetched %d times, want 1", d.Digest, n)
		}
		total += d.Size
		if _, err := os.Stat(BlobPath(dir, d.Digest)); err != nil {
			t.Errorf("blob file: %v", err)
		}
	}
	if st.Layers != 3 || st.Bytes != total || st.Reused != 0 {
		t.Errorf("stats = %+v, want 3 layers, %d bytes", st, total)
	}
	if got := listDir(t, dir); len(got) != 3 {
		t.Errorf("download dir holds %v, want exactly the 3 blobs", got)
	}

	// From here on nothing may touch the registry.
	reg.srv.Close()

	assertSameImage(t, local, orig)
	if err := checkImage(local); err != nil {
		t.Errorf("validate local image: %v", err)
	}
}

// assertSameImage checks that local has orig's digest, config, media types
// and layers, compressed and not.
func assertSameImage(t *testing.T, local, orig v1.Image) {
	t.Helper()
	wantDigest, _ := orig.Digest()
	gotDigest, err := local.Digest()
	if err != nil || gotDigest != wantDigest {
		t.Errorf("digest = %v (%v), want %v", gotDigest, err, wantDigest)
	}
	wantCfg, _ := orig.ConfigName()
	if got, _ := local.ConfigName(); got != wantCfg {
		t.Errorf("config name = %v, want %v", got, wantCfg)
	}
	wantMT, _ := orig.MediaType()
	if got, _ := local.MediaType(); got != wantMT {
		t.Errorf("media type = %v, want %v", got, wantMT)
	}
	origLayers, _ := orig.Layers()
	localLayers, err := local.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(localLayers) != len(origLayers) {
		t.Fatalf("%d layers, want %d", len(localLayers), len(origLayers))
	}
	for i := range origLayers {
		if !bytes.Equal(readAll(t, localLayers[i].Compressed), readAll(t, origLayers[i].Compressed)) {
			t.Errorf("layer %d: compressed bytes differ", i)
		}
		if !bytes.Equal(readAll(t, localLayers[i].Uncompressed), readAll(t, origLayers[i].Uncompressed)) {
			t.Errorf("layer %d: uncompressed bytes differ", i)
		}
		omt, _ := origLayers[i].MediaType()
		lmt, _ := localLayers[i].MediaType()
		if omt != lmt {
			t.Errorf("layer %d: media type %v, want %v", i, lmt, omt)
		}
		od, _ := origLayers[i].DiffID()
		ld, _ := localLayers[i].DiffID()
		if od != ld {
			t.Errorf("layer %d: diff id %v, want %v", i, ld, od)
		}
	}
}

func TestImageRetriesOnlyTheFailedBlob(t *testing.T) {
	reg := newFakeRegistry(t)
	rimg := reg.push(t, randomImage(t, 4))
	layers := uniqueLayers(t, rimg)
	bad := layers[2].Digest
	reg.mu.Lock()
	reg.corrupt[bad.String()] = 1
	reg.mu.Unlock()

	log, hook := testLogger()
	o := quietOpts(t.TempDir())
	o.Log = log
	local, st, err := Image(context.Background(), rimg, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range layers {
		want := 1
		if d.Digest == bad {
			want = 2
		}
		if n := reg.getCount(d.Digest); n != want {
			t.Errorf("blob %s fetched %d times, want %d", logging.ShortDigest(d.Digest.String()), n, want)
		}
	}
	if st.Layers != 4 {
		t.Errorf("stats = %+v", st)
	}
	if !hookHas(hook, logrus.WarnLevel, logging.ShortDigest(bad.String())) {
		t.Errorf("no warning about the retried blob in %q", hookText(hook))
	}
	if err := checkImage(local); err != nil {
		t.Errorf("validate: %v", err)
	}
}

func TestImagePermanentFailure(t *testing.T) {
	reg := newFakeRegistry(t)
	rimg := reg.push(t, randomImage(t, 3))
	layers := uniqueLayers(t, rimg)
	bad := layers[1].Digest
	reg.mu.Lock()
	reg.corrupt[bad.String()] = -1
	reg.mu.Unlock()

	dir := t.TempDir()
	o := quietOpts(dir)
	o.Retry.Attempts = 3
	_, _, err := Image(context.Background(), rimg, o)
	if err == nil {
		t.Fatal("want an error")
	}
	if !strings.Contains(err.Error(), bad.String()) {
		t.Errorf("error %q does not name %s", err, bad)
	}
	if n := reg.getCount(bad); n != 3 {
		t.Errorf("bad blob fetched %d times, want 3 attempts", n)
	}
	if _, err := os.Lstat(BlobPath(dir, bad)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed blob left a file: %v", err)
	}
	for _, n := range listDir(t, dir) {
		if strings.Contains(n, bad.Hex) {
			t.Errorf("failed blob left %s", n)
		}
	}
}

func TestImageMissingBlobNotRetried(t *testing.T) {
	reg := newFakeRegistry(t)
	rimg := reg.push(t, randomImage(t, 2))
	bad := uniqueLayers(t, rimg)[0].Digest
	reg.mu.Lock()
	reg.missing[bad.String()] = true
	reg.mu.Unlock()

	_, _, err := Image(context.Background(), rimg, quietOpts(t.TempDir()))
	if err == nil || !strings.Contains(err.Error(), bad.String()) {
		t.Fatalf("err = %v, want one naming %s", err, bad)
	}
	if n := reg.getCount(bad); n != 1 {
		t.Errorf("404 blob fetched %d times, want 1", n)
	}
}

func TestImageConcurrencyBounded(t *testing.T) {
	for _, n := range []int{1, 2, 3} {
		t.Run(strings.Repeat("x", n), func(t *testing.T) {
			reg := newFakeRegistry(t)
			rimg := reg.push(t, randomImage(t, 6))
			reg.delay = 60 * time.Millisecond
			o := quietOpts(t.TempDir())
			o.Concurrency = n
			if _, _, err := Image(context.Background(), rimg, o); err != nil {
				t.Fatal(err)
			}
			reg.mu.Lock()
			got := reg.maxInflight
			reg.mu.Unlock()
			if got != n {
				t.Errorf("max parallel blob downloads = %d, want %d", got, n)
			}
		})
	}
}

func TestImageDefaultConcurrency(t *testing.T) {
	reg := newFakeRegistry(t)
	rimg := reg.push(t, randomImage(t, 8))
	reg.delay = 60 * time.Millisecond
	if _, _, err := Image(context.Background(), rimg, quietOpts(t.TempDir())); err != nil {
		t.Fatal(err)
	}
	if reg.maxInflight != DefaultConcurrency {
		t.Errorf("max parallel = %d, want %d", reg.maxInflight, DefaultConcurrency)
	}
}

func TestImageReusesVerifiedBlobs(t *testing.T) {
	reg := newFakeRegistry(t)
	rimg := reg.push(t, randomImage(t, 3))
	dir := t.TempDir()
	if _, _, err := Image(context.Background(), rimg, quietOpts(dir)); err != nil {
		t.Fatal(err)
	}
	layers := uniqueLayers(t, rimg)
	// Damage one file: it must be fetched again, the others not.
	damaged := layers[0].Digest
	p := BlobPath(dir, damaged)
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 1
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	reg.resetCounts()
	_, st, err := Image(context.Background(), rimg, quietOpts(dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range layers {
		want := 0
		if d.Digest == damaged {
			want = 1
		}
		if n := reg.getCount(d.Digest); n != want {
			t.Errorf("blob %s fetched %d times, want %d", logging.ShortDigest(d.Digest.String()), n, want)
		}
	}
	if st.Reused != 2 || st.Bytes != layers[0].Size {
		t.Errorf("stats = %+v", st)
	}
}

func TestImageCancelled(t *testing.T) {
	reg := newFakeRegistry(t)
	rimg := reg.push(t, randomImage(t, 3))
	// The config is a blob too: fetch (and cache) it before slowing blobs.
	if _, err := rimg.RawConfigFile(); err != nil {
		t.Fatal(err)
	}
	reg.delay = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := Image(ctx, rimg, quietOpts(t.TempDir()))
	if err == nil {
		t.Fatal("want an error")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want deadline exceeded", err)
	}
	if el := time.Since(start); el > 1500*time.Millisecond {
		t.Errorf("cancel took %s", el)
	}
}

func TestImageLogsProgress(t *testing.T) {
	reg := newFakeRegistry(t)
	rimg := reg.push(t, randomImage(t, 2))
	reg.delay = 150 * time.Millisecond
	log, hook := testLogger()
	o := quietOpts(t.TempDir())
	o.Log = log
	o.ProgressInterval = 40 * time.Millisecond
	if _, _, err := Image(context.Background(), rimg, o); err != nil {
		t.Fatal(err)
	}
	text := hookText(hook)
	for _, d := range uniqueLayers(t, rimg) {
		s := logging.ShortDigest(d.Digest.String())
		if !strings.Contains(text, "downloading layer "+s) || !strings.Contains(text, "downloaded layer "+s) {
			t.Errorf("no start/finish lines for %s in:\n%s", s, text)
		}
	}
	if !regexp.MustCompile(`layer sha256:[0-9a-f]{12}: .* of .*%`).MatchString(text) {
		t.Errorf("no progress line in:\n%s", text)
	}
	if !regexp.MustCompile(`downloaded 2 layers \([0-9.]+ kB\) in `).MatchString(text) {
		t.Errorf("no closing line in:\n%s", text)
	}
}

func TestImageLocalSource(t *testing.T) {
	// Any v1.Image works, not only remote ones.
	orig := mixedImage(t)
	dir := t.TempDir()
	local, _, err := Image(context.Background(), orig, quietOpts(dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := checkImage(local); err != nil {
		t.Fatal(err)
	}
	for _, d := range uniqueLayers(t, orig) {
		b, err := os.ReadFile(BlobPath(dir, d.Digest))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != d.Size {
			t.Errorf("blob %s: %d bytes, want %d", d.Digest, len(b), d.Size)
		}
	}
}

func TestBlobPathAndShortDigest(t *testing.T) {
	h := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}
	if got := BlobPath("/x", h); got != filepath.Join("/x", "sha256-"+h.Hex) {
		t.Errorf("BlobPath = %s", got)
	}
	if got := logging.ShortDigest(h.String()); got != "sha256:abababababab" {
		t.Errorf("ShortDigest = %s", got)
	}
	for n, want := range map[int64]string{999: "999 B", 1000: "1.0 kB", 1_500_000: "1.5 MB", 2_000_000_000: "2.0 GB"} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %s, want %s", n, got, want)
		}
	}
}

func testLogger() (*logrus.Entry, *logtest.Hook) {
	l, hook := logtest.NewNullLogger()
	l.SetLevel(logrus.DebugLevel)
	return logrus.NewEntry(l), hook
}

func hookText(h *logtest.Hook) string {
	var b strings.Builder
	for _, e := range h.AllEntries() {
		b.WriteString(e.Level.String() + ": " + e.Message + "\n")
	}
	return b.String()
}

func hookHas(h *logtest.Hook, lvl logrus.Level, sub string) bool {
	for _, e := range h.AllEntries() {
		if e.Level == lvl && strings.Contains(e.Message, sub) {
			return true
		}
	}
	return false
}

// checkImage re-hashes every blob of img against its manifest and config
// (pkg/v1/validate would pull go-cmp into go.sum).
func checkImage(img v1.Image) error {
	raw, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	cn, err := img.ConfigName()
	if err != nil {
		return err
	}
	if h, _, _ := v1.SHA256(bytes.NewReader(raw)); h != cn {
		return fmt.Errorf("config digest %s, want %s", h, cn)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	if len(layers) != len(cfg.RootFS.DiffIDs) {
		return fmt.Errorf("%d layers, %d diff ids", len(layers), len(cfg.RootFS.DiffIDs))
	}
	for i, l := range layers {
		for _, c := range []struct {
			open func() (io.ReadCloser, error)
			want func() (v1.Hash, error)
		}{{l.Compressed, l.Digest}, {l.Uncompressed, l.DiffID}} {
			rc, err := c.open()
			if err != nil {
				return err
			}
			h, _, err := v1.SHA256(rc)
			rc.Close()
			if err != nil {
				return err
			}
			want, err := c.want()
			if err != nil {
				return err
			}
			if h != want {
				return fmt.Errorf("layer %d: hash %s, want %s", i, h, want)
			}
		}
		if cfg.RootFS.DiffIDs[i] != mustDiffID(l) {
			return fmt.Errorf("layer %d: diff id differs from config", i)
		}
	}
	return nil
}

func mustDiffID(l v1.Layer) v1.Hash {
	h, _ := l.DiffID()
	return h
}
