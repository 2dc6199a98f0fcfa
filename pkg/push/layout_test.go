package push

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// writeLayout writes an OCI layout whose index.json names roots (an image
// or an index each), as BuildKit's oci exporter writes one.
func writeLayout(t *testing.T, roots ...mutate.Appendable) string {
	t.Helper()
	dir := t.TempDir()
	var idx v1.ImageIndex = empty.Index
	for _, r := range roots {
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: r})
	}
	if _, err := layout.Write(dir, idx); err != nil {
		t.Fatal(err)
	}
	return dir
}

// twoPlatforms is an index of two images, of Docker or OCI media types.
func twoPlatforms(t *testing.T, mt types.MediaType) v1.ImageIndex {
	t.Helper()
	img := ociImage
	if mt == types.DockerManifestList {
		img = randomImage
	}
	amd, arm := withPlatform(t, img(t), "amd64"), withPlatform(t, img(t), "arm64")
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, mt),
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
}

func layoutOptions(t *testing.T, dir, repo string) LayoutOptions {
	t.Helper()
	rc, err := registry.New(registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return LayoutOptions{Registry: rc, Dir: dir, Repository: repo, Tags: []string{"1", "latest"}, Jobs: 3}
}

// TestPushLayoutImage: a single image goes as it is, digest and bytes
// unchanged, readable back; every blob uploaded before the first tag.
func TestPushLayoutImage(t *testing.T) {
	for _, c := range []struct {
		name string
		img  func(*testing.T) v1.Image
		mt   types.MediaType
	}{{"docker", randomImage, types.DockerManifestSchema2}, {"oci", ociImage, types.OCIManifestSchema1}} {
		t.Run(c.name, func(t *testing.T) {
			var w wire
			a := w.registry(t, never)
			img := c.img(t)
			o := layoutOptions(t, writeLayout(t, img), a+"/team/app")
			res, err := PushLayout(t.Context(), o)
			if err != nil {
				t.Fatal(err)
			}
			w.checkBlobsFirst(t)
			d, _ := img.Digest()
			cfg, _ := img.ConfigName()
			raw, _ := img.RawManifest()
			if res.Digest != d || res.MediaType != c.mt || res.Config != cfg || res.From != FromLayout {
				t.Errorf("result %s %s config %s from %q; want the layout's %s %s config %s", res.Digest, res.MediaType, res.Config, res.From, d, c.mt, cfg)
			}
			if res.Uploaded.Blobs != 4 || res.Reused().Blobs != 0 || res.Manifests != 2 || res.NewLayers != 3 || res.BaseLayers != 0 {
				t.Errorf("uploaded %v, reused %v, %d manifests, %d new and %d base layers; want 3 layers and the config uploaded, 2 tags",
					res.Uploaded, res.Reused(), res.Manifests, res.NewLayers, res.BaseLayers)
			}
			for _, tag := range o.Tags {
				desc, err := remote.Get(mustRef(t, o.Repository+":"+tag))
				if err != nil || !bytes.Equal(desc.Manifest, raw) || desc.MediaType != c.mt {
					t.Fatalf("%s:%s: %v; want the layout's manifest bytes", o.Repository, tag, err)
				}
			}
			pulled, err := remote.Image(mustRef(t, o.Repository+":1"))
			if err != nil {
				t.Fatal(err)
			}
			if err := validate.Image(pulled); err != nil {
				t.Errorf("the pushed image does not read back whole: %v", err)
			}
		})
	}
}

// TestPushLayoutIndex: an index of two platforms; its image manifests go
// by digest before the index is tagged, every tag names the index.
func TestPushLayoutIndex(t *testing.T) {
	for _, mt := range []types.MediaType{types.OCIImageIndex, types.DockerManifestList} {
		t.Run(string(mt), func(t *testing.T) {
			var w wire
			a := w.registry(t, never)
			idx := twoPlatforms(t, mt)
			o := layoutOptions(t, writeLayout(t, idx), a+"/team/app")
			res, err := PushLayout(t.Context(), o)
			if err != nil {
				t.Fatal(err)
			}
			w.checkBlobsFirst(t)
			d, _ := idx.Digest()
			im, _ := idx.IndexManifest()
			want := []string{a + "/v2/team/app/manifests/" + im.Manifests[0].Digest.String(), a + "/v2/team/app/manifests/" + im.Manifests[1].Digest.String(),
				a + "/v2/team/app/manifests/1", a + "/v2/team/app/manifests/latest"}
			if got := w.manifestPuts(); !slices.Equal(got, want) {
				t.Errorf("manifest PUTs %q, want the children by digest, then the tags: %q", got, want)
			}
			if res.Digest != d || res.MediaType != mt || res.Config != (v1.Hash{}) || res.Manifests != 4 || res.Uploaded.Blobs != 8 {
				t.Errorf("result %s %s config %s, %d manifests, %v uploaded; want %s, no config, 4 manifests, 8 blobs", res.Digest, res.MediaType, res.Config, res.Manifests, res.Uploaded, d)
			}
			raw, _ := idx.RawManifest()
			for _, tag := range o.Tags {
				desc, err := remote.Get(mustRef(t, o.Repository+":"+tag))
				if err != nil || !bytes.Equal(desc.Manifest, raw) {
					t.Fatalf("%s:%s: %v; want the layout's index bytes", o.Repository, tag, err)
				}
			}
			pulled, err := remote.Index(mustRef(t, o.Repository+":latest"))
			if err != nil {
				t.Fatal(err)
			}
			if err := validate.Index(pulled); err != nil {
				t.Errorf("the pushed index does not read back whole: %v", err)
			}
		})
	}
}

// TestPushLayoutIndexToDistribution: distribution refuses an index naming
// manifests it lacks; the children go first, so it takes it.
func TestPushLayoutIndexToDistribution(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{NoAuth: true})
	idx := twoPlatforms(t, types.OCIImageIndex)
	o := layoutOptions(t, writeLayout(t, idx), reg.Host+"/team/app")
	res, err := PushLayout(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := idx.Digest()
	got, err := remote.Index(reg.Ref(t, "team/app:latest"), reg.RemoteOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	if gd, _ := got.Digest(); gd != d || res.Digest != d {
		t.Errorf("pushed %s, result %s; want %s", gd, res.Digest, d)
	}
	if err := validate.Index(got); err != nil {
		t.Errorf("the pushed index does not read back whole: %v", err)
	}
}

// TestPushLayoutMountsBaseBlobs: on a registry that mounts (distribution),
// the layers a base folder has are mounted from the base's repository,
// only the new layer and the config are uploaded. A base folder that
// cannot be read is only skipped.
func TestPushLayoutMountsBaseBlobs(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{NoAuth: true})
	base := randomImage(t)
	bd := reg.Push(t, "team/base:1", base)
	dir := savedFolder(t, base, bd.String())
	if err := os.WriteFile(filepath.Join(dir, repositoryFile), []byte(reg.Host+"/team/base\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := random.Layer(2048, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, l)
	if err != nil {
		t.Fatal(err)
	}
	o := layoutOptions(t, writeLayout(t, img), reg.Host+"/team/app")
	o.Bases = []string{t.TempDir(), dir}
	res, err := PushLayout(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	var baseBytes int64
	bls, _ := base.Layers()
	for _, bl := range bls {
		n, _ := bl.Size()
		baseBytes += n
	}
	if res.Mounted != (BlobStats{3, baseBytes}) || res.Uploaded.Blobs != 2 || res.Existing.Blobs != 0 || res.BaseLayers != 3 || res.NewLayers != 1 {
		t.Errorf("mounted %v, uploaded %v, existing %v, %d base and %d new layers; want the 3 base layers (%d bytes) mounted, the new layer and the config uploaded",
			res.Mounted, res.Uploaded, res.Existing, res.BaseLayers, res.NewLayers, baseBytes)
	}
	pulled, err := remote.Image(reg.Ref(t, "team/app:1"), reg.RemoteOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(pulled); err != nil {
		t.Errorf("the pushed image does not read back whole: %v", err)
	}
}

// TestPushLayoutFansOut: an index to two repositories of one registry and
// one of another: every blob everywhere (once per registry) before any
// manifest, the children and the index in each.
func TestPushLayoutFansOut(t *testing.T) {
	var w wire
	a, b := w.registry(t, never), w.registry(t, never)
	idx := twoPlatforms(t, types.OCIImageIndex)
	o := layoutOptions(t, writeLayout(t, idx), a+"/team/app")
	o.Additional = []string{a + "/team/mirror", b + "/other/app"}
	res, err := PushLayout(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	w.checkBlobsFirst(t)
	for _, host := range []string{a, b} {
		up := w.uploads(host)
		if len(up) != 8 {
			t.Errorf("%s: %d blobs uploaded, want 8", host, len(up))
		}
		for d, n := range up {
			if n != 1 {
				t.Errorf("%s: blob %s uploaded %d times, want once per registry", host, d, n)
			}
		}
	}
	d, _ := idx.Digest()
	im, _ := idx.IndexManifest()
	for _, repo := range append([]string{o.Repository}, o.Additional...) {
		for _, tag := range o.Tags {
			if desc, err := remote.Get(mustRef(t, repo+":"+tag)); err != nil || desc.Digest != d {
				t.Errorf("%s:%s: %v; want %s", repo, tag, err, d)
			}
		}
		for _, c := range im.Manifests {
			if _, err := remote.Get(mustRef(t, repo+"@"+c.Digest.String())); err != nil {
				t.Errorf("%s lacks the child %s: %v", repo, c.Digest, err)
			}
		}
	}
	if len(res.Repositories) != 3 || res.Manifests != 12 || res.Repositories[2].Repository != b+"/other/app" || res.Repositories[2].Manifests != 4 {
		t.Errorf("%d manifests, repositories %+v; want 3 x (2 children + 2 tags)", res.Manifests, res.Repositories)
	}
}

// TestPushLayoutCorruptBlob: a blob whose bytes are not its digest fails
// the push while it streams; one of the wrong size before any request.
// Neither leaves a tag.
func TestPushLayoutCorruptBlob(t *testing.T) {
	img := randomImage(t)
	m, _ := img.Manifest()
	layer := filepath.Join("blobs", "sha256", m.Layers[1].Digest.Hex)
	for _, c := range []struct {
		name    string
		corrupt func(string)
		want    string
		request bool
	}{
		{"a flipped byte", func(p string) {
			b := mustRead(t, p)
			b[len(b)/2] ^= 0xff
			os.WriteFile(p, b, 0o644)
		}, "hashes to sha256:", true},
		{"cut short", func(p string) { os.Truncate(p, 100) }, "is 100 bytes, its descriptor says", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var w wire
			a := w.registry(t, never)
			dir := writeLayout(t, img)
			c.corrupt(filepath.Join(dir, layer))
			o := layoutOptions(t, dir, a+"/team/app")
			o.Additional = []string{a + "/team/mirror"}
			_, err := PushLayout(t.Context(), o)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), m.Layers[1].Digest.Hex) {
				t.Fatalf("err %v, want one naming the blob and saying %q", err, c.want)
			}
			if c.request && (!errors.Is(err, ErrCorruptBlob) || !strings.Contains(err.Error(), "no repository holds the new tags")) {
				t.Errorf("err %v, want ErrCorruptBlob saying nothing is tagged", err)
			}
			if !c.request && len(w.all()) != 0 {
				t.Errorf("%d requests for a layout known bad up front", len(w.all()))
			}
			if puts := w.manifestPuts(); len(puts) != 0 {
				t.Errorf("manifests written: %v", puts)
			}
			for _, ref := range []string{o.Repository + ":1", o.Repository + ":latest", a + "/team/mirror:1"} {
				if _, err := remote.Head(mustRef(t, ref)); err == nil {
					t.Errorf("%s is tagged", ref)
				}
			}
		})
	}
}

// TestPushLayoutRefusesBadLayouts: index.json naming anything but one
// image or one index of images, or paths outside blobs/sha256, fail before
// any request.
func TestPushLayoutRefusesBadLayouts(t *testing.T) {
	img := randomImage(t)
	editIndex := func(t *testing.T, dir string, edit func(*v1.IndexManifest)) {
		var im v1.IndexManifest
		if err := json.Unmarshal(mustRead(t, filepath.Join(dir, "index.json")), &im); err != nil {
			t.Fatal(err)
		}
		edit(&im)
		b, _ := json.Marshal(im)
		os.WriteFile(filepath.Join(dir, "index.json"), b, 0o644)
	}
	nested := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: twoPlatforms(t, types.OCIImageIndex)})
	for _, c := range []struct {
		name string
		dir  func(*testing.T) string
		want string
	}{
		{"two manifests", func(t *testing.T) string { return writeLayout(t, img, randomImage(t)) }, "names 2 manifests; want exactly one"},
		{"no manifest", func(t *testing.T) string { return writeLayout(t) }, "names 0 manifests"},
		{"a nested index", func(t *testing.T) string { return writeLayout(t, nested) }, "not implemented yet"},
		{"not an image", func(t *testing.T) string {
			dir := writeLayout(t, img)
			editIndex(t, dir, func(im *v1.IndexManifest) { im.Manifests[0].MediaType = "application/vnd.in-toto+json" })
			return dir
		}, `media type "application/vnd.in-toto+json"`},
		{"a path as digest", func(t *testing.T) string {
			dir := writeLayout(t, img)
			b := mustRead(t, filepath.Join(dir, "index.json"))
			d, _ := img.Digest()
			os.WriteFile(filepath.Join(dir, "index.json"), bytes.Replace(b, []byte(d.String()), []byte("sha256:../../../../etc/passwd"), 1), 0o644)
			return dir
		}, "non-hex character"},
		{"a blob linked out of the folder", func(t *testing.T) string {
			dir := writeLayout(t, img)
			m, _ := img.Manifest()
			p := filepath.Join(dir, "blobs", "sha256", m.Config.Digest.Hex)
			outside := filepath.Join(t.TempDir(), "config")
			os.WriteFile(outside, mustRead(t, p), 0o644)
			os.Remove(p)
			os.Symlink(outside, p)
			return dir
		}, "escapes"},
		{"a manifest of another digest", func(t *testing.T) string {
			dir := writeLayout(t, img)
			other := randomImage(t)
			od, _ := other.Digest()
			raw, _ := other.RawManifest()
			editIndex(t, dir, func(im *v1.IndexManifest) { im.Manifests[0].Digest, im.Manifests[0].Size = od, int64(len(raw)) })
			return dir
		}, "no such file"},
		{"not a layout", func(t *testing.T) string {
			dir := writeLayout(t, img)
			os.Remove(filepath.Join(dir, "oci-layout"))
			return dir
		}, "oci-layout"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var w wire
			a := w.registry(t, never)
			_, err := PushLayout(t.Context(), layoutOptions(t, c.dir(t), a+"/team/app"))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err %v, want one saying %q", err, c.want)
			}
			if n := len(w.all()); n != 0 {
				t.Errorf("%d requests for a refused layout", n)
			}
		})
	}
}

// TestCheckedReader: the read that ends the blob fails, with its bytes.
func TestCheckedReader(t *testing.T) {
	data := []byte("hello, layout")
	d := sha256Hash(data)
	read := func(size int64, want v1.Hash, body []byte) error {
		r := &checkedReader{rc: io.NopCloser(bytes.NewReader(body)), h: sha256.New(), size: size, want: want, name: "blob"}
		_, err := io.ReadAll(r)
		return err
	}
	if err := read(int64(len(data)), d, data); err != nil {
		t.Errorf("the right bytes: %v", err)
	}
	for name, err := range map[string]error{
		"other bytes": read(int64(len(data)), d, []byte("hello, LAYOUT")),
		"too many":    read(int64(len(data)), d, append(slices.Clone(data), '!')),
		"too few":     read(int64(len(data)), d, data[:5]),
	} {
		if !errors.Is(err, ErrCorruptBlob) {
			t.Errorf("%s: %v, want ErrCorruptBlob", name, err)
		}
	}
	if err := read(0, sha256Hash(nil), nil); err != nil {
		t.Errorf("an empty blob: %v", err)
	}
}

// TestPushLayoutMountsEveryPlatformsBase: a base folder of two platforms
// (a get with params.platforms: an oci/ layout of the index) gives both
// platforms' layers for mounting, not only the worker's.
func TestPushLayoutMountsEveryPlatformsBase(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{NoAuth: true})
	base := twoPlatforms(t, types.OCIImageIndex)
	bd := reg.PushIndex(t, "team/base:1", base)
	dir := t.TempDir()
	if _, err := layout.Write(filepath.Join(dir, "oci"), base); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]string{repositoryFile: reg.Host + "/team/base", tagFile: "1", digestFile: bd.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	im, _ := base.IndexManifest()
	var adds []mutate.IndexAddendum
	var baseBytes int64
	for _, d := range im.Manifests {
		img, _ := base.Image(d.Digest)
		ls, _ := img.Layers()
		for _, l := range ls {
			n, _ := l.Size()
			baseBytes += n
		}
		l, err := random.Layer(2048, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		app, err := mutate.AppendLayers(img, l)
		if err != nil {
			t.Fatal(err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: app, Descriptor: v1.Descriptor{Platform: d.Platform}})
	}
	o := layoutOptions(t, writeLayout(t, mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)), reg.Host+"/team/app")
	o.Bases = []string{dir}
	res, err := PushLayout(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Mounted != (BlobStats{6, baseBytes}) || res.Uploaded.Blobs != 4 {
		t.Errorf("mounted %v, uploaded %v; want both platforms' 6 base layers (%d bytes) mounted, the 2 new layers and 2 configs uploaded", res.Mounted, res.Uploaded, baseBytes)
	}
}
