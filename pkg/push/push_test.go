package push

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/imagefs"
	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

// savedFolder writes img as a get with save: true would, and returns the
// folder.
// Files of a folder written by a get with save: true.
const (
	imageFile      = baseimage.ImageFile
	imageIDFile    = baseimage.ImageIDFile
	repositoryFile = baseimage.RepositoryFile
	tagFile        = baseimage.TagFile
	digestFile     = baseimage.DigestFile
)

func savedFolder(t *testing.T, img v1.Image, version string) string {
	t.Helper()
	dir := t.TempDir()
	if err := imagefs.WriteSaveTarball(t.Context(), img, "registry.example:5000/team/base:1", filepath.Join(dir, imageFile)); err != nil {
		t.Fatal(err)
	}
	id, _ := img.ConfigName()
	for name, v := range map[string]string{imageIDFile: id.String(), repositoryFile: "registry.example:5000/team/base", tagFile: "1", digestFile: version} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func ociImage(t *testing.T) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for range 3 {
		l, err := random.Layer(4096, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

func randomImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(4096, 3)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestReadBaseFindsOriginalBlobs(t *testing.T) {
	for _, c := range []struct {
		name string
		img  func(*testing.T) v1.Image
		fam  family
	}{{"docker", randomImage, docker}, {"oci", ociImage, oci}} {
		t.Run(c.name, func(t *testing.T) {
			img := c.img(t)
			d, _ := img.Digest()
			b, err := readBase(savedFolder(t, img, d.String()))
			if err != nil {
				t.Fatal(err)
			}
			id, _ := img.ConfigName()
			if b.id != id || b.repo != "registry.example:5000/team/base" || b.tag != "1" {
				t.Errorf("base %s %s:%s", b.id, b.repo, b.tag)
			}
			ls, _ := img.Layers()
			if len(b.layers) != len(ls) {
				t.Fatalf("%d layers, want %d", len(b.layers), len(ls))
			}
			for i, l := range ls {
				dg, _ := l.Digest()
				diff, _ := l.DiffID()
				size, _ := l.Size()
				bl := b.layers[i]
				if bl.digest != dg || bl.diffID != diff || bl.size != size || bl.comp != "gzip" {
					t.Errorf("layer %d: %+v, want digest %s diff %s size %d", i, bl, dg, diff, size)
				}
				want := readAll(t, l.Compressed)
				if got := readAll(t, bl.open); !bytes.Equal(got, want) {
					t.Errorf("layer %d: the bytes read in place differ from the blob", i)
				}
			}
			b.identify(t.Context(), nil)
			raw, _ := img.RawManifest()
			if b.family != c.fam || !b.verified || !bytes.Equal(b.raw, raw) {
				t.Errorf("family %s (%s), verified %v; want %s, rebuilt from the digest", b.family, b.familyWhy, b.verified, c.fam)
			}
		})
	}
}

func TestIdentifyWithoutAMatchingDigestHashesTheBlobs(t *testing.T) {
	img := randomImage(t)
	b, err := readBase(savedFolder(t, img, "sha256:"+strings.Repeat("0", 64)))
	if err != nil {
		t.Fatal(err)
	}
	b.identify(t.Context(), nil)
	if b.family != docker || b.verified || !strings.Contains(b.familyWhy, "own format is unknown") {
		t.Errorf("family %s (%s), verified %v", b.family, b.familyWhy, b.verified)
	}
	if err := b.verify(t.Context()); err != nil || !b.verified {
		t.Fatalf("verify: %v", err)
	}

	// A blob file named by a digest its bytes do not have is caught.
	b.verified = false
	b.layers[1].digest = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("1", 64)}
	if err := b.verify(t.Context()); err == nil || !strings.Contains(err.Error(), "hash to") {
		t.Errorf("verify of a misnamed blob: %v", err)
	}
}

func TestReadBaseRefusesWhatItCannotReadInPlace(t *testing.T) {
	dir := savedFolder(t, randomImage(t), "")
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(mustRead(t, filepath.Join(dir, imageFile)))
	zw.Close()
	os.WriteFile(filepath.Join(dir, imageFile), buf.Bytes(), 0o644)
	if _, err := readBase(dir); err == nil || !strings.Contains(err.Error(), "compressed") {
		t.Errorf("gzipped tarball: %v", err)
	}
	os.WriteFile(filepath.Join(dir, imageIDFile), []byte("sha256:"+strings.Repeat("2", 64)), 0o644)
	os.WriteFile(filepath.Join(dir, imageFile), mustRead(t, filepath.Join(savedFolder(t, randomImage(t), ""), imageFile)), 0o644)
	if _, err := readBase(dir); err == nil || !strings.Contains(err.Error(), "but image-id says") {
		t.Errorf("image-id mismatch: %v", err)
	}
}

// fakeDaemon serves a prepared docker save stream.
type fakeDaemon struct{ save []byte }

func (f fakeDaemon) ImageSave(context.Context, []string, ...client.ImageSaveOption) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(f.save)), nil
}

func (f fakeDaemon) ImageInspect(context.Context, string, ...client.ImageInspectOption) (image.InspectResponse, error) {
	return image.InspectResponse{}, errors.New("not needed")
}

func (f fakeDaemon) ImageList(context.Context, image.ListOptions) ([]image.Summary, error) {
	return nil, nil
}

// layerTar is an uncompressed layer with one file of n random bytes.
// builtOn is a "build" on base: its layers uncompressed, as docker save
// streams them, and one new layer of size bytes.
func builtOn(t *testing.T, base v1.Image, size int) [][]byte {
	t.Helper()
	var raws [][]byte
	ls, _ := base.Layers()
	for _, l := range ls {
		raws = append(raws, readAll(t, l.Uncompressed))
	}
	return append(raws, layerTar(t, size))
}

func layerTar(t *testing.T, n int) []byte {
	t.Helper()
	content := make([]byte, n)
	rand.Read(content)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "f", Mode: 0o644, Size: int64(n), Typeflag: tar.TypeReg})
	tw.Write(content)
	tw.Close()
	return buf.Bytes()
}

// configFor is a config naming layers as its rootfs.
func configFor(layers [][]byte) []byte {
	cfg := v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: v1.RootFS{Type: "layers"}}
	for _, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, sha256Hash(l))
	}
	b, _ := json.Marshal(cfg)
	return b
}

// saveStream builds a `docker save` tarball: the classic layout of Docker
// 20.10 (<id>/layer.tar, <hex>.json) or the OCI one of Docker 25+
// (blobs/sha256/<hex>).
func saveStream(t *testing.T, config []byte, layers [][]byte, ociLayout bool) []byte {
	t.Helper()
	id := sha256Hash(config)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	put := func(name string, b []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
	}
	m := saveManifest{Config: id.Hex + ".json"}
	if ociLayout {
		m.Config = "blobs/sha256/" + id.Hex
	}
	names := make([]string, len(layers))
	for i := range layers {
		names[i] = fmt.Sprintf("%x/layer.tar", i+100)
		if ociLayout {
			names[i] = "blobs/sha256/" + sha256Hash(layers[i]).Hex
		}
	}
	// Layers in an order of their own, as the daemon's are.
	for i := len(layers) - 1; i >= 0; i-- {
		put(names[i], layers[i])
	}
	m.Layers = names
	put(m.Config, config)
	mj, _ := json.Marshal([]saveManifest{m})
	put("manifest.json", mj)
	tw.Close()
	return buf.Bytes()
}

func TestStreamSaveKeepsOnlyNewLayers(t *testing.T) {
	baseLayer, bigNew, smallNew := layerTar(t, 3<<20), layerTar(t, 2<<20), layerTar(t, 10)
	for _, oci := range []bool{false, true} {
		t.Run(fmt.Sprintf("oci layout %v", oci), func(t *testing.T) {
			layers := [][]byte{baseLayer, bigNew, smallNew}
			config := configFor(layers)
			stream, id := saveStream(t, config, layers, oci), sha256Hash(config)
			dir := t.TempDir()
			known := map[v1.Hash]bool{sha256Hash(baseLayer): true}
			s, err := streamSave(t.Context(), fakeDaemon{stream}, id.String(), known, dir)
			if err != nil {
				t.Fatal(err)
			}
			if sha256Hash(s.config) != id || len(s.diffIDs) != 3 || len(s.fresh) != 2 || s.streamed != int64(len(stream)) {
				t.Fatalf("config %s, %d diff IDs, %d new layers, %d bytes streamed", sha256Hash(s.config), len(s.diffIDs), len(s.fresh), s.streamed)
			}
			for _, raw := range [][]byte{bigNew, smallNew} {
				f := s.fresh[sha256Hash(raw)]
				if f == nil {
					t.Fatalf("new layer %s missing", sha256Hash(raw))
				}
				zipped := mustRead(t, f.path)
				if sha256Hash(zipped) != f.digest || int64(len(zipped)) != f.size || f.rawSize != int64(len(raw)) {
					t.Errorf("layer %s: digest %s size %d raw %d", f.diffID, f.digest, f.size, f.rawSize)
				}
				zr, err := gzip.NewReader(bytes.NewReader(zipped))
				if err != nil {
					t.Fatal(err)
				}
				if got, _ := io.ReadAll(zr); !bytes.Equal(got, raw) {
					t.Errorf("layer %s does not decompress to its bytes", f.diffID)
				}
			}
			// Only the two compressed layers are left: the base layer and
			// the uncompressed copies are gone.
			if ents, _ := os.ReadDir(dir); len(ents) != 2 {
				t.Errorf("temp folder holds %d files, want 2", len(ents))
			}
		})
	}
	t.Run("a stream whose layers are not the config's", func(t *testing.T) {
		config := configFor([][]byte{[]byte("something else"), smallNew})
		stream, id := saveStream(t, config, [][]byte{baseLayer, smallNew}, false), sha256Hash(config)
		_, err := streamSave(t.Context(), fakeDaemon{stream}, id.String(), nil, t.TempDir())
		if !errors.Is(err, errFormat) {
			t.Errorf("err %v, want errFormat", err)
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestObserverSortsBlobs(t *testing.T) {
	d := func(c string) string { return "sha256:" + strings.Repeat(c, 64) }
	status := map[string]int{}
	o := newObserver(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Body != nil {
			io.Copy(io.Discard, r.Body)
		}
		return &http.Response{StatusCode: status[r.Method+" "+r.URL.String()], Body: http.NoBody}, nil
	}))
	do := func(method, u string, code int, body string) {
		status[method+" "+u] = code
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, u, rd)
		if _, err := o.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
	}
	base := "http://r/v2/team/app/blobs/"
	do("HEAD", base+d("a"), 200, "")
	do("HEAD", base+d("b"), 404, "")
	do("POST", base+"uploads/?from=team%2Fbase&mount="+url.QueryEscape(d("b")), 201, "")
	do("HEAD", base+d("c"), 404, "")
	do("POST", base+"uploads/?from=team%2Fbase&mount="+url.QueryEscape(d("c")), 202, "")
	do("PATCH", base+"uploads/x", 202, "12345")
	do("PUT", base+"uploads/x?digest="+url.QueryEscape(d("c")), 201, "")
	do("PUT", "http://r/v2/team/app/manifests/latest", 201, "{}")
	up, ex, mo := o.tally(map[string]int64{d("a"): 10, d("b"): 20, d("c"): 30, d("e"): 40})
	if up != (BlobStats{1, 30}) || ex != (BlobStats{1, 10}) || mo != (BlobStats{1, 20}) {
		t.Errorf("uploaded %v, existing %v, mounted %v", up, ex, mo)
	}
	if o.sent.Load() != 7 || o.manifests != 1 {
		t.Errorf("sent %d bytes, %d manifests", o.sent.Load(), o.manifests)
	}
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

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// memRegistry is go-containerregistry's in-memory registry on loopback
// (plain http for 127.0.0.1 without being told). It does not mount across
// repositories: blobs are uploaded or found.
func memRegistry(t *testing.T) (host string, client *registry.Client) {
	t.Helper()
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	c, err := registry.New(registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(srv.URL, "http://"), c
}

func withPlatform(t *testing.T, img v1.Image, arch string) v1.Image {
	t.Helper()
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	out, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A base fetched from a multi-platform index: the digest file names the
// index, so only the registry can tell the manifest's media types.
func TestIdentifyAsksTheRegistryForAnIndexEntry(t *testing.T) {
	host, rc := memRegistry(t)
	amd, arm := withPlatform(t, ociImage(t), "amd64"), withPlatform(t, ociImage(t), "arm64")
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	ref, _ := name.ParseReference(host + "/team/base:1")
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	d, _ := idx.Digest()
	dir := savedFolder(t, amd, d.String())
	os.WriteFile(filepath.Join(dir, repositoryFile), []byte(host+"/team/base\n"), 0o644)
	b, err := readBase(dir)
	if err != nil {
		t.Fatal(err)
	}
	b.identify(t.Context(), rc)
	raw, _ := amd.RawManifest()
	if b.family != oci || !b.verified || !bytes.Equal(b.raw, raw) || !strings.Contains(b.familyWhy, "read from the registry") {
		t.Errorf("family %s (%s), verified %v, raw %v", b.family, b.familyWhy, b.verified, b.raw != nil)
	}
}

// Push with a fake daemon and in-memory registries: to a registry without
// the base, base blobs go as they are; the new layer is compressed once, the
// config is the daemon's bytes; a second push finds every blob.
func TestPushReusesBaseBlobsWithoutADaemon(t *testing.T) {
	host, rc := memRegistry(t)
	base := randomImage(t)
	ref, _ := name.ParseReference(host + "/team/base:1")
	if err := remote.Write(ref, base); err != nil {
		t.Fatal(err)
	}
	d, _ := base.Digest()
	dir := savedFolder(t, base, d.String())
	os.WriteFile(filepath.Join(dir, repositoryFile), []byte(host+"/team/base\n"), 0o644)

	// The "build": the base's layers and one new one, uncompressed as
	// docker save streams them.
	raws := builtOn(t, base, 100000)
	config := configFor(raws)
	daemon := &saveDaemon{config: config, stream: saveStream(t, config, raws, false)}

	// The target is another registry: this one keeps blobs across
	// repositories, so the base's would be found.
	target, _ := memRegistry(t)
	o := Options{Daemon: daemon, Registry: rc, Image: sha256Hash(config).String(), Repository: target + "/team/app",
		Tags: []string{"1", "latest"}, Bases: []string{dir}, Jobs: 2, TempDir: t.TempDir()}
	res, err := Push(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	bm, _ := base.Manifest()
	checkFirstPush(t, res, bm, config)
	checkPushedImage(t, target+"/team/app:latest", res, bm, config, raws)

	o.Tags = []string{"2"}
	res, err = Push(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Uploaded.Blobs != 0 || res.Existing.Blobs != 5 || res.Manifests != 1 {
		t.Errorf("second push: uploaded %v, existing %v; want every blob found", res.Uploaded, res.Existing)
	}

	// A layer of an image the daemon pulled: left to the daemon.
	daemon.pulled = sha256Hash(raws[3]).String()
	if _, err := Push(t.Context(), o); !errors.Is(err, ErrNeedsDaemon) || !strings.Contains(err.Error(), "which the daemon pulled") {
		t.Errorf("a pulled layer: %v", err)
	}
}

// checkFirstPush: three base layers and a new one, the daemon's config, a
// Docker manifest; to a registry without the base every blob is uploaded.
func checkFirstPush(t *testing.T, res *Result, bm *v1.Manifest, config []byte) {
	t.Helper()
	var baseBytes int64
	for _, l := range bm.Layers {
		baseBytes += l.Size
	}
	if res.BaseLayers != 3 || res.NewLayers != 1 || res.Config != sha256Hash(config) || res.MediaType != types.DockerManifestSchema2 {
		t.Errorf("result %+v", res)
	}
	if res.Uploaded.Blobs != 5 || res.Uploaded.Bytes < baseBytes || res.Manifests != 2 || res.Reused().Blobs != 0 {
		t.Errorf("first push: uploaded %v, reused %v, %d manifests; want 3 base blobs, the new layer and the config uploaded", res.Uploaded, res.Reused(), res.Manifests)
	}
}

// checkPushedImage: the image at ref holds the daemon's layers (raws) and
// config, names the base's blobs as they are, and has the digest Push
// reported.
func checkPushedImage(t *testing.T, ref string, res *Result, bm *v1.Manifest, config []byte, raws [][]byte) {
	t.Helper()
	pushed, err := remote.Image(mustRef(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	pm, _ := pushed.Manifest()
	pls, _ := pushed.Layers()
	for i, l := range pls {
		zipped := readAll(t, l.Compressed)
		unzipped, err := decompress(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(zipped)), nil }, "gzip")
		if err != nil {
			t.Fatal(err)
		}
		if sha256Hash(zipped) != pm.Layers[i].Digest || sha256Hash(readAll(t, func() (io.ReadCloser, error) { return unzipped, nil })) != sha256Hash(raws[i]) {
			t.Errorf("pushed layer %d does not hold the daemon's layer", i)
		}
	}
	if dg, _ := pushed.Digest(); dg != res.Digest || pm.Config.Digest != sha256Hash(config) {
		t.Errorf("pushed %s with config %s; result %s", dg, pm.Config.Digest, res.Digest)
	}
	for i, l := range bm.Layers {
		if !sameDesc(pm.Layers[i], l) {
			t.Errorf("layer %d: %+v, the base's %+v", i, pm.Layers[i], l)
		}
	}
}

// saveDaemon answers inspect from the config, list with one pulled image
// when pulled is set, and save with the prepared stream.
type saveDaemon struct {
	config, stream []byte
	pulled         string
}

func (s *saveDaemon) ImageSave(context.Context, []string, ...client.ImageSaveOption) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(s.stream)), nil
}

func (s *saveDaemon) ImageInspect(_ context.Context, ref string, _ ...client.ImageInspectOption) (image.InspectResponse, error) {
	if ref == "pulled" {
		return image.InspectResponse{ID: "pulled", RootFS: image.RootFS{Layers: []string{s.pulled}}}, nil
	}
	cfg, _ := v1.ParseConfigFile(bytes.NewReader(s.config))
	ins := image.InspectResponse{ID: sha256Hash(s.config).String()}
	for _, d := range cfg.RootFS.DiffIDs {
		ins.RootFS.Layers = append(ins.RootFS.Layers, d.String())
	}
	return ins, nil
}

func (s *saveDaemon) ImageList(context.Context, image.ListOptions) ([]image.Summary, error) {
	if s.pulled == "" {
		return nil, nil
	}
	return []image.Summary{{ID: "pulled", RepoDigests: []string{"registry.example/x@sha256:" + strings.Repeat("3", 64)}}}, nil
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
