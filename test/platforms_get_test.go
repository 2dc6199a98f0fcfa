package test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// checkLayoutBlobs asserts every blob of the layout hashes to its name and
// that each image's manifest, config and layers are there.
func checkLayoutBlobs(t *testing.T, dir string, imgs ...v1.Image) {
	t.Helper()
	blobDir := filepath.Join(dir, "blobs", "sha256")
	ents, err := os.ReadDir(blobDir)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(blobDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256Hex(b); got != e.Name() {
			t.Errorf("blob %s hashes to %s", e.Name(), got)
		}
		have[e.Name()] = true
	}
	want := map[string]bool{}
	for _, img := range imgs {
		d, _ := img.Digest()
		c, _ := img.ConfigName()
		want[d.Hex], want[c.Hex] = true, true
		ls, _ := img.Layers()
		for _, l := range ls {
			h, _ := l.Digest()
			want[h.Hex] = true
		}
	}
	for h := range want {
		if !have[h] {
			t.Errorf("blob %s is missing from %s", h, blobDir)
		}
	}
	if len(have) != len(want) {
		t.Errorf("%s holds %d blobs, the images have %d", blobDir, len(have), len(want))
	}
}

func inspectLabel(t *testing.T, dest string) string {
	t.Helper()
	var inspect []struct {
		Config struct{ Labels map[string]string }
	}
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dest, "docker_inspect.json"))), &inspect); err != nil {
		t.Fatal(err)
	}
	return inspect[0].Config.Labels["platform"]
}

func TestGetPlatformsSavesEveryPlatform(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	for _, mt := range []string{"docker", "oci"} {
		t.Run(mt, func(t *testing.T) {
			idx, imgs := testenv.TwoPlatforms(t, mt)
			digest := reg.PushIndex(t, "plat/app:"+mt, idx).String()
			rawIndex, _ := idx.RawManifest()
			dest := t.TempDir()
			resp := getOK(t, dest, map[string]any{
				"source":  source(reg, "plat/app", map[string]any{"tag": mt}),
				"version": map[string]any{"digest": digest},
				"params":  map[string]any{"save": true, "platforms": []string{"linux/amd64", "linux/arm64"}},
			})
			if resp.Version.Digest != digest {
				t.Errorf("version %v", resp.Version)
			}
			// oci/ instead of image, and no image-id: Detect would read an
			// image-id as a single-platform save's.
			if got := strings.Join(listDir(t, dest), " "); got != "digest docker_inspect.json metadata.json oci repository rootfs tag" {
				t.Errorf("files: %s", got)
			}
			if got := readFile(t, filepath.Join(dest, "digest")); got != digest+"\n" {
				t.Errorf("digest file %q, want %s", got, digest)
			}
			oci := filepath.Join(dest, "oci")
			// Every entry was saved: index.json is the registry's index.
			got, err := os.ReadFile(filepath.Join(oci, "index.json"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, rawIndex) || "sha256:"+sha256Hex(got) != digest {
				t.Errorf("index.json is not the registry's index %s:\n%s", digest, got)
			}
			im, _ := idx.IndexManifest()
			for i, arch := range []string{"amd64", "arm64"} {
				d, _ := imgs[arch].Digest()
				if im.Manifests[i].Digest != d || im.Manifests[i].Platform.Architecture != arch {
					t.Errorf("index entry %d: %+v, want %s %s", i, im.Manifests[i], arch, d)
				}
			}
			checkLayoutBlobs(t, oci, imgs["amd64"], imgs["arm64"])
			if b := readFile(t, filepath.Join(oci, "oci-layout")); !strings.Contains(b, `"imageLayoutVersion":"1.0.0"`) {
				t.Errorf("oci-layout %q", b)
			}
			// go-containerregistry reads it as the same index.
			if lp, err := layout.ImageIndexFromPath(oci); err != nil {
				t.Errorf("layout.ImageIndexFromPath: %v", err)
			} else if h, _ := lp.Digest(); h.String() != digest {
				t.Errorf("layout's index digest %s", h)
			}

			host, ok := imgs[runtime.GOARCH]
			if !ok {
				t.Skipf("no image of this machine's architecture %s in the test index", runtime.GOARCH)
			}
			hostID, _ := host.ConfigName()
			// A put's base folder detection takes it as registry-image's
			// oci-layout folder and picks the build platform's image.
			f, err := baseimage.Detect(dest, baseimage.HostPlatform())
			if err != nil {
				t.Fatalf("Detect: %v", err)
			}
			if f.Kind != baseimage.OCILayoutDir || f.Path != oci || f.ID() != hostID.String() || f.Ref() != reg.Host+"/plat/app:"+mt || f.ManifestDigest != digest {
				t.Errorf("Detect: kind %s path %s id %s ref %s manifest digest %s; want the layout, %s", f.Kind, f.Path, f.ID(), f.Ref(), f.ManifestDigest, hostID)
			}
			if got := inspectLabel(t, dest); got != "linux/"+runtime.GOARCH && !strings.HasPrefix(got, "linux/"+runtime.GOARCH+"/") {
				t.Errorf("docker_inspect.json is of %s", got)
			}
			if len(resp.Metadata) != 3 || resp.Metadata[2].Value != hostID.Hex[:12] {
				t.Errorf("metadata %+v", resp.Metadata)
			}
			if _, err := os.Stat(filepath.Join(dest, "rootfs", "bin", "busybox")); err != nil {
				t.Errorf("rootfs/: %v", err)
			}
		})
	}
}

func TestGetPlatformsSubset(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	idx, imgs := testenv.TwoPlatforms(t, "oci")
	digest := reg.PushIndex(t, "plat/sub:1", idx).String()
	dest := t.TempDir()
	r := runIn(t, dest, map[string]any{
		"source":  source(reg, "plat/sub", map[string]any{"tag": "1"}),
		"version": map[string]any{"digest": digest},
		"params":  map[string]any{"save": true, "rootfs": true, "platforms": []string{"linux/arm64/v8"}},
	})
	if r.err != nil {
		t.Fatalf("in: %v\n%s", r.err, r.stderr)
	}
	got, err := os.ReadFile(filepath.Join(dest, "oci", "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := v1.ParseIndexManifest(bytes.NewReader(got))
	if err != nil {
		t.Fatal(err)
	}
	armDigest, _ := imgs["arm64"].Digest()
	// A new index of just that entry: another digest than the version's,
	// which the digest file keeps.
	if len(m.Manifests) != 1 || m.Manifests[0].Digest != armDigest || "sha256:"+sha256Hex(got) == digest {
		t.Errorf("index.json %s", got)
	}
	if readFile(t, filepath.Join(dest, "digest")) != digest+"\n" {
		t.Errorf("digest file changed")
	}
	checkLayoutBlobs(t, filepath.Join(dest, "oci"), imgs["arm64"])
	// rootfs/ and rootfs.tar are of arm64, as the only one saved.
	if got := inspectLabel(t, dest); got != "linux/arm64/v8" {
		t.Errorf("docker_inspect.json is of %s", got)
	}
	if _, err := os.Stat(filepath.Join(dest, "rootfs.tar")); err != nil {
		t.Errorf("rootfs.tar: %v", err)
	}
	if runtime.GOARCH != "arm64" && !strings.Contains(r.stderr, "params.platforms does not list the get's platform linux/"+runtime.GOARCH) {
		t.Errorf("no warning about the get's platform:\n%s", r.stderr)
	}
	if !strings.Contains(r.stderr, "oci/index.json lists the 1 saved images: a new index") {
		t.Errorf("log does not say the index is new:\n%s", r.stderr)
	}
}

func TestGetPlatformsSingleImage(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	p := v1.Platform{OS: "linux", Architecture: "amd64"}
	img := testenv.BusyboxImage(t, testenv.ImageOptions{Platform: &p})
	digest := reg.Push(t, "plat/one:1", img).String()
	req := func(plats ...string) map[string]any {
		return map[string]any{
			"source":  source(reg, "plat/one", map[string]any{"tag": "1"}),
			"version": map[string]any{"digest": digest},
			"params":  map[string]any{"save": true, "platforms": plats},
		}
	}
	t.Run("its own platform", func(t *testing.T) {
		dest := t.TempDir()
		getOK(t, dest, req("linux/amd64"))
		m, err := v1.ParseIndexManifest(bytes.NewReader([]byte(readFile(t, filepath.Join(dest, "oci", "index.json")))))
		if err != nil || len(m.Manifests) != 1 || m.Manifests[0].Digest.String() != digest || m.Manifests[0].Platform.Architecture != "amd64" {
			t.Errorf("index.json: %+v %v", m, err)
		}
		checkLayoutBlobs(t, filepath.Join(dest, "oci"), img)
		if f, err := baseimage.Detect(dest, v1.Platform{OS: "linux", Architecture: "amd64"}); err != nil || f.Kind != baseimage.OCILayoutDir || f.ManifestDigest != digest {
			t.Errorf("Detect: %+v %v", f, err)
		}
	})
	for name, c := range map[string]struct {
		plats []string
		want  string
	}{
		"two platforms": {[]string{"linux/amd64", "linux/arm64"}, "params.platforms: image " + reg.Host + "/plat/one@" + digest + " is not multi-platform: it is one linux/amd64 image, and params.platforms lists linux/amd64, linux/arm64"},
		"another one":   {[]string{"linux/arm64"}, "is not multi-platform: it is one linux/amd64 image, and params.platforms lists linux/arm64; remove params.platforms to save it, or list only linux/amd64"},
	} {
		t.Run(name, func(t *testing.T) {
			dest := t.TempDir()
			r := runIn(t, dest, req(c.plats...))
			if r.err == nil || !strings.Contains(r.err.Error(), c.want) {
				t.Errorf("error %v, want %q", r.err, c.want)
			}
			if got := listDir(t, dest); len(got) != 0 {
				t.Errorf("a failed get left %v", got)
			}
		})
	}
}

func TestGetPlatformsErrors(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	idx, _ := testenv.TwoPlatforms(t, "docker")
	digest := reg.PushIndex(t, "plat/err:1", idx).String()
	ref := reg.Host + "/plat/err@" + digest
	for name, c := range map[string]struct {
		params map[string]any
		want   string
	}{
		"without save":       {map[string]any{"platforms": []string{"linux/amd64"}}, "params.platforms needs params.save: true"},
		"with skip":          {map[string]any{"save": true, "skip_download": true, "platforms": []string{"linux/amd64"}}, "params.platforms and params.skip_download: true exclude each other"},
		"not a platform":     {map[string]any{"save": true, "platforms": []string{"linux/amd64", "arm64"}}, `params.platforms[1]: "arm64" is not a platform`},
		"twice":              {map[string]any{"save": true, "platforms": []string{"linux/arm64", "linux/arm64/v8"}}, `params.platforms[1]: "linux/arm64/v8" is params.platforms[0] ("linux/arm64") again`},
		"missing from index": {map[string]any{"save": true, "platforms": []string{"linux/amd64", "linux/s390x"}}, "params.platforms[1]: image " + ref + " has no linux/s390x image; it has: linux/amd64, linux/arm64/v8"},
	} {
		t.Run(name, func(t *testing.T) {
			dest := t.TempDir()
			r := runIn(t, dest, map[string]any{
				"source":  source(reg, "plat/err", map[string]any{"tag": "1"}),
				"version": map[string]any{"digest": digest},
				"params":  c.params,
			})
			if r.err == nil || !strings.Contains(r.err.Error(), c.want) {
				t.Errorf("error %v, want %q\n%s", r.err, c.want, r.stderr)
			}
			// Nothing that looks like a get, nor a layout, is left.
			if got := listDir(t, dest); len(got) != 0 {
				t.Errorf("a failed get left %v", got)
			}
		})
	}
}

// A platform's image the registry no longer has fails the get after the
// other was saved: the half-written layout goes too.
func TestGetPlatformsChildGone(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	idx, imgs := testenv.TwoPlatforms(t, "oci")
	digest := reg.PushIndex(t, "plat/gone:1", idx).String()
	arm, _ := imgs["arm64"].Digest()
	reg.Delete(t, "plat/gone@"+arm.String())
	dest := t.TempDir()
	r := runIn(t, dest, map[string]any{
		"source":  source(reg, "plat/gone", map[string]any{"tag": "1"}),
		"version": map[string]any{"digest": digest},
		"params":  map[string]any{"save": true, "platforms": []string{"linux/amd64", "linux/arm64"}},
	})
	want := "params.platforms[1]: image " + reg.Host + "/plat/gone@" + arm.String() + " not found"
	if r.err == nil || !strings.Contains(r.err.Error(), want) {
		t.Fatalf("error %v, want %q\n%s", r.err, want, r.stderr)
	}
	for _, name := range listDir(t, dest) {
		if name != "rootfs" { // as a failed get without platforms leaves it
			t.Errorf("a failed get left %s", name)
		}
	}
}
