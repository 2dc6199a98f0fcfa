package baseimage

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

var amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func id(t *testing.T, img v1.Image) string {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

func digest(t *testing.T, img v1.Image) string {
	t.Helper()
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

// detectCase is a folder of one accepted layout and what Detect should
// find in it.
type detectCase struct {
	name, dir      string
	kind           Kind
	ref, imageID   string
	manifestDigest string
	layoutID       string
}

// detectCases writes a folder of every accepted layout.
func detectCases(t *testing.T) []detectCase {
	img := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{1000}})
	ociImg := testenv.BusyboxImage(t, testenv.ImageOptions{MediaType: "oci", Labels: map[string]string{"k": "oci"}})

	own := t.TempDir()
	testenv.SaveTarball(t, filepath.Join(own, "image"), img, "reg.example:5000/team/base:1")
	writeFile(t, filepath.Join(own, "image-id"), id(t, img)+"\n")
	writeFile(t, filepath.Join(own, "repository"), "reg.example:5000/team/base\n")
	writeFile(t, filepath.Join(own, "tag"), "1\n")
	writeFile(t, filepath.Join(own, "digest"), digest(t, img)+"\n")

	riOCI := t.TempDir() // registry-image-resource format: oci
	testenv.SaveTarball(t, filepath.Join(riOCI, "image.tar"), img, "reg.example:5000/team/base:2")
	writeFile(t, filepath.Join(riOCI, "repository"), "reg.example:5000/team/base")
	writeFile(t, filepath.Join(riOCI, "tag"), "2")
	writeFile(t, filepath.Join(riOCI, "digest"), digest(t, img))

	riLayout := t.TempDir() // registry-image-resource format: oci-layout
	testenv.OCILayout(t, filepath.Join(riLayout, "oci"), ociImg, nil)
	writeFile(t, filepath.Join(riLayout, "repository"), "reg.example:5000/team/oci")
	writeFile(t, filepath.Join(riLayout, "tag"), "3")
	writeFile(t, filepath.Join(riLayout, "digest"), digest(t, ociImg))

	btSave := btSaveFolder(t, img)

	btLayoutDir := t.TempDir() // oci-build-task with OUTPUT_OCI: image/
	testenv.OCILayout(t, filepath.Join(btLayoutDir, "image"), ociImg, nil)
	writeFile(t, filepath.Join(btLayoutDir, "digest"), digest(t, ociImg))

	btLayoutTar := t.TempDir() // oci-build-task with OUTPUT_OCI: image.tar is a layout
	l := t.TempDir()
	testenv.OCILayout(t, l, ociImg, nil)
	testenv.TarDir(t, l, filepath.Join(btLayoutTar, "image.tar"))
	writeFile(t, filepath.Join(btLayoutTar, "digest"), digest(t, ociImg))

	bare := t.TempDir() // a layout given directly
	testenv.OCILayout(t, bare, ociImg, nil)

	return []detectCase{
		{"own save folder", own, DockerSave, "reg.example:5000/team/base:1", id(t, img), digest(t, img), ""},
		{"registry-image oci", riOCI, DockerSave, "reg.example:5000/team/base:2", "", digest(t, img), ""},
		{"registry-image oci-layout", riLayout, OCILayoutDir, "reg.example:5000/team/oci:3", "", digest(t, ociImg), id(t, ociImg)},
		{"oci-build-task image.tar", btSave, DockerSave, "", id(t, img), "", ""},
		{"oci-build-task image/", btLayoutDir, OCILayoutDir, "", "", digest(t, ociImg), id(t, ociImg)},
		{"oci-build-task OCI image.tar", btLayoutTar, OCILayoutTar, "", "", digest(t, ociImg), id(t, ociImg)},
		{"bare layout", bare, OCILayoutDir, "", "", "", id(t, ociImg)},
	}
}

// btSaveFolder is oci-build-task's output: a docker-save image.tar without
// RepoTags, and the config digest in digest.
func btSaveFolder(t *testing.T, img v1.Image) string {
	dir := t.TempDir()
	testenv.SaveTarball(t, filepath.Join(dir, "image.tar"), img, "")
	writeFile(t, filepath.Join(dir, "digest"), id(t, img))
	return dir
}

func TestDetect(t *testing.T) {
	for _, c := range detectCases(t) {
		t.Run(c.name, func(t *testing.T) { checkDetect(t, c) })
	}
}

func checkDetect(t *testing.T, c detectCase) {
	f, err := Detect(c.dir, amd64)
	if err != nil {
		t.Fatal(err)
	}
	if f.Kind != c.kind || f.Ref() != c.ref || f.ImageID != c.imageID || f.ManifestDigest != c.manifestDigest {
		t.Errorf("got kind %s ref %q id %q manifest %q, want %s %q %q %q", f.Kind, f.Ref(), f.ImageID, f.ManifestDigest, c.kind, c.ref, c.imageID, c.manifestDigest)
	}
	if c.layoutID != "" {
		if f.Image == nil || f.Image.ID.String() != c.layoutID || f.Image.Image().ID() != c.layoutID {
			t.Fatalf("layout image %+v, want ID %s", f.Image, c.layoutID)
		}
		// Every layer blob is found and has its descriptor's size.
		for i, bl := range f.Image.Layers {
			if bl.Size != f.Image.Manifest.Layers[i].Size {
				t.Errorf("layer %d: %d bytes, want %d", i, bl.Size, f.Image.Manifest.Layers[i].Size)
			}
		}
	} else if f.Image != nil {
		t.Errorf("a docker-save folder has a layout image")
	}
	t.Logf("%s: %s (%s)", c.name, f.Origin, f.Kind)
}

// The object form of a load_bases entry names an unnamed folder.
func TestDetectObjectFormNamesAFolder(t *testing.T) {
	img := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{1000}})
	f, err := Detect(btSaveFolder(t, img), amd64)
	if err != nil {
		t.Fatal(err)
	}
	f.Name("reg.example:5000/team/named", "")
	if f.Ref() != "reg.example:5000/team/named:latest" {
		t.Errorf("ref %q", f.Ref())
	}
}

func TestDetectMultiPlatform(t *testing.T) {
	plats := []v1.Platform{{OS: "linux", Architecture: "arm", Variant: "v6"}, {OS: "linux", Architecture: "arm", Variant: "v7"}, amd64, {OS: "linux", Architecture: "arm64", Variant: "v8"}}
	idx := testenv.MultiPlatformIndex(t, plats, testenv.ImageOptions{MediaType: "oci"})
	dir := t.TempDir()
	testenv.OCILayout(t, filepath.Join(dir, "oci"), nil, idx)
	// registry-image-resource writes index.json pointing at the index.
	nested := t.TempDir()
	testenv.OCILayout(t, filepath.Join(nested, "oci"), nil, mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: idx}))
	for _, d := range []string{dir, nested} {
		for _, want := range []v1.Platform{amd64, {OS: "linux", Architecture: "arm", Variant: "v7"}, {OS: "linux", Architecture: "arm64"}} {
			f, err := Detect(d, want)
			if err != nil {
				t.Fatal(err)
			}
			got := f.Image.Config.Config.Labels["platform"]
			wantS := testenv.PlatformString(want)
			if want.Architecture == "arm64" {
				wantS = "linux/arm64/v8" // the only arm64 entry, whatever its variant
			}
			if got != wantS {
				t.Errorf("for %s chose %s", testenv.PlatformString(want), got)
			}
		}
		_, err := Detect(d, v1.Platform{OS: "linux", Architecture: "s390x"})
		if err == nil || !strings.Contains(err.Error(), "no image for the build platform linux/s390x") || !strings.Contains(err.Error(), "linux/arm/v7") {
			t.Errorf("missing platform: %v", err)
		}
	}
	// The host's own platform is in every real index this package sees.
	if _, err := Detect(dir, HostPlatform()); err != nil && HostPlatform().Architecture == "amd64" {
		t.Error(err)
	}
}

func TestDetectRefuses(t *testing.T) {
	unknown := t.TempDir()
	writeFile(t, filepath.Join(unknown, "notes.txt"), "x")
	writeFile(t, filepath.Join(unknown, "rootfs/bin/sh"), "x")

	notTar := t.TempDir()
	writeFile(t, filepath.Join(notTar, "image.tar"), "this is not a tarball, honest")

	otherTar := t.TempDir()
	l := t.TempDir()
	writeFile(t, filepath.Join(l, "hello.txt"), "hi")
	testenv.TarDir(t, l, filepath.Join(otherTar, "image.tar"))

	partial := t.TempDir() // own format without its image
	writeFile(t, filepath.Join(partial, "image-id"), "sha256:x")

	brokenOCI := t.TempDir()
	writeFile(t, filepath.Join(brokenOCI, "oci/index.json"), "{}")

	missingBlob := t.TempDir()
	testenv.OCILayout(t, filepath.Join(missingBlob, "image"), testenv.BusyboxImage(t, testenv.ImageOptions{}), nil)
	m, _ := testenv.BusyboxImage(t, testenv.ImageOptions{}).Manifest()
	os.Remove(filepath.Join(missingBlob, "image/blobs/sha256", m.Layers[0].Digest.Hex))

	above := t.TempDir() // a task's whole output instead of its image output
	writeFile(t, filepath.Join(above, "image/image.tar"), "x")
	writeFile(t, filepath.Join(above, "image/digest"), "sha256:x")

	gzLayout := t.TempDir() // an OCI layout tarball, gzip-compressed
	gl := t.TempDir()
	testenv.OCILayout(t, gl, testenv.BusyboxImage(t, testenv.ImageOptions{}), nil)
	gzipTo(t, gl, filepath.Join(gzLayout, "image.tar"))

	for _, c := range []struct{ name, dir, want string }{
		{"gzip-compressed OCI layout tarball", gzLayout, "a gzip-compressed OCI layout tarball: decompress it"},
		{"the folder above", above, "did you mean " + filepath.Join(above, "image") + "?"},
		{"unknown layout", unknown, "it holds notes.txt, rootfs/"},
		{"unknown layout lists the accepted", unknown, "registry-image-resource format: oci-layout: oci/"},
		{"image.tar not a tarball", notTar, "not a"},
		{"image.tar of something else", otherTar, "neither a docker-save tarball (no manifest.json in it) nor an OCI layout tarball"},
		{"own folder without image", partial, `has no "image" file — did the get have params: {save: true}?`},
		{"oci/ without oci-layout", brokenOCI, "oci/ is not an OCI image layout"},
		{"layout missing a layer blob", missingBlob, "is missing"},
		{"not a folder", filepath.Join(unknown, "notes.txt"), "is not a folder"},
		{"missing", filepath.Join(unknown, "nope"), "does not exist"},
	} {
		_, err := Detect(c.dir, amd64)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want %q", c.name, err, c.want)
		}
	}
}

// TestWriteDockerSave: a layout with zstd layers becomes a docker-save
// tarball that go-containerregistry reads back with the same config and
// uncompressed layers whose digests are the config's diff IDs.
func TestWriteDockerSave(t *testing.T) {
	img := testenv.BusyboxImage(t, testenv.ImageOptions{Compression: "zstd", RandomLayers: []int64{100000}})
	dir := t.TempDir()
	testenv.OCILayout(t, dir, img, nil)
	f, err := Detect(dir, amd64)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Image.Image().HasZstd() {
		t.Fatal("zstd layers not seen")
	}
	for _, decompress := range []bool{true, false} {
		var buf bytes.Buffer
		if err := WriteDockerSave(context.Background(), &buf, f.Image.Image(), decompress); err != nil {
			t.Fatal(err)
		}
		back, err := tarball.Image(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil }, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := id(t, back); got != id(t, img) {
			t.Errorf("config %s, want %s", got, id(t, img))
		}
		cfg, _ := back.ConfigFile()
		layers, _ := back.Layers()
		for i, l := range layers {
			rc, _ := l.Compressed()
			head := make([]byte, 4)
			io.ReadFull(rc, head)
			rc.Close()
			if IsZstd(head) == decompress {
				t.Errorf("decompress=%v: layer %d zstd=%v", decompress, i, IsZstd(head))
			}
			d, err := l.DiffID()
			if err != nil || d != cfg.RootFS.DiffIDs[i] {
				t.Errorf("layer %d diff ID %s (%v), want %s", i, d, err, cfg.RootFS.DiffIDs[i])
			}
		}
	}
}

// TestDetectChecksImageID: a folder naming another image ID than its
// tarball holds fails before any daemon is involved.
func TestDetectChecksImageID(t *testing.T) {
	img := testenv.BusyboxImage(t, testenv.ImageOptions{})
	other := strings.Repeat("1", 64)
	own := t.TempDir()
	testenv.SaveTarball(t, filepath.Join(own, "image"), img, "reg.example:5000/team/base:1")
	writeFile(t, filepath.Join(own, "image-id"), "sha256:"+other)
	writeFile(t, filepath.Join(own, "repository"), "reg.example:5000/team/base")
	writeFile(t, filepath.Join(own, "tag"), "1")
	bt := t.TempDir()
	testenv.SaveTarball(t, filepath.Join(bt, "image.tar"), img, "")
	writeFile(t, filepath.Join(bt, "digest"), "sha256:"+other)
	for dir, file := range map[string]string{own: "image-id", bt: "digest"} {
		_, err := Detect(dir, amd64)
		if err == nil || !strings.Contains(err.Error(), id(t, img)) || !strings.Contains(err.Error(), "but "+file+" says sha256:"+other) {
			t.Errorf("%s: %v", file, err)
		}
	}
}

// gzipTo packs dir into a gzip-compressed tarball at p.
func gzipTo(t *testing.T, dir, p string) {
	t.Helper()
	plain := filepath.Join(t.TempDir(), "plain.tar")
	testenv.TarDir(t, dir, plain)
	b, err := os.ReadFile(plain)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}
