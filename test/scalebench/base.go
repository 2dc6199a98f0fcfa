package scalebench

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// BaseTag is the tag of every base.
const BaseTag = "1"

// baseLayers is the number of layers of files on busybox: a base has
// baseLayers+1 layers at every size, so only the bytes and files change.
const baseLayers = 4

// Base is a base image of this machine's files (/usr/lib, then /usr/share
// if need be) on busybox: at most 8 MiB a file, so thousands of files, as
// a real base has.
type Base struct {
	MiB    int
	Repo   string // "bench/scale-100m"
	Image  v1.Image
	Digest string   // set by whoever pushes it
	Blobs  []string // the layers' gzip blobs, bottom first: the floor's input
	Raw    int64    // bytes of the files
	Zip    int64    // bytes of the compressed layers
	Files  int
}

// MakeBases makes the base of every size of cfg, their blobs in folders
// under dir (big bases are never held in memory).
func MakeBases(t testing.TB, cfg Config, dir string) map[int]*Base {
	t.Helper()
	bases := map[int]*Base{}
	for _, m := range cfg.allSizes() {
		bases[m] = makeBase(t, m, filepath.Join(dir, fmt.Sprintf("blobs-%dm", m)))
	}
	return bases
}

func makeBase(t testing.TB, m int, dir string) *Base {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := testenv.HostFiles{Roots: []string{"/usr/lib", "/usr/share"}, Budget: int64(m) * mib, MaxFile: 8 * mib}.Collect(t)
	busybox := testenv.BusyboxImage(t, testenv.ImageOptions{})
	bl, err := busybox.Layers()
	if err != nil || len(bl) != 1 {
		t.Fatalf("busybox layers: %v (%d)", err, len(bl))
	}
	b := &Base{MiB: m, Repo: fmt.Sprintf("bench/scale-%dm", m), Raw: testenv.HostFilesSize(files), Files: len(files)}
	b.Blobs = append(b.Blobs, writeBlob(t, bl[0], filepath.Join(dir, "busybox.blob")))
	var layers []v1.Layer
	for _, group := range testenv.SplitHostFiles(files, baseLayers) {
		l := testenv.FileLayer(t, dir, "gzip", testenv.HostFilesTar(group))
		layers = append(layers, l)
		b.Blobs = append(b.Blobs, testenv.LayerFile(l))
	}
	b.Image = testenv.AppendLayers(t, busybox, layers...)
	man, err := b.Image.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range man.Layers {
		b.Zip += l.Size
	}
	return b
}

// writeBlob writes a layer's compressed blob to path.
func writeBlob(t testing.TB, l v1.Layer, path string) string {
	t.Helper()
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// appSpec is one of the ten small builds: its Dockerfile after FROM, and
// the files it copies.
type appSpec struct {
	dockerfile string
	files      []testenv.HostFile
}

// appSteps are the ten builds' Dockerfiles after FROM, each a COPY of its
// files and a RUN (busybox's applets only). The first is every size's put.
var appSteps = []string{
	"COPY files /srv/data\nRUN ls -R /srv/data | wc -l > /srv/count\n",
	"COPY files /opt/app\nRUN echo two > /opt/app.name\nLABEL app=two\n",
	"ENV APP=three\nRUN mkdir -p /var/app && echo \"$APP\" > /var/app/name\nCOPY files /var/app/files\n",
	"COPY files /usr/local/share/app\nRUN echo four > /four\nLABEL app=four\n",
	"WORKDIR /app\nCOPY files .\nRUN ls | wc -l > /app.count\nUSER 1000\n",
	"COPY files /opt/six\nRUN touch /opt/six.ready\nEXPOSE 6000\n",
	"ARG NAME=seven\nCOPY files /home/app/$NAME/\nRUN echo $NAME > /home/app/name\n",
	"RUN mkdir -p /var/lib/eight\nCOPY files /var/lib/eight\nRUN id > /var/lib/eight.id\n",
	"COPY files /srv/nine\nRUN cat /etc/passwd | grep -c : > /srv/nine.users\nENV NINE=9\n",
	"WORKDIR /ten\nCOPY files ./files\nRUN ls -R . | wc -l > /ten/count\nCMD [\"ls\", \"/ten\"]\n",
}

// appFiles splits 40 MiB of /usr/share (files of at most 1 MiB) among the
// ten builds.
func appFiles(t testing.TB) []appSpec {
	t.Helper()
	files := testenv.HostFiles{Roots: []string{"/usr/share"}, Budget: 40 * mib, MaxFile: mib}.Collect(t)
	var apps []appSpec
	for i, group := range testenv.SplitHostFiles(files, len(appSteps)) {
		apps = append(apps, appSpec{dockerfile: appSteps[i], files: group})
	}
	return apps
}

// writeApp writes a build context: the Dockerfile FROM the base and files/.
func writeApp(t testing.TB, dir, registryHost string, base *Base, a appSpec) {
	t.Helper()
	testenv.CopyHostFiles(t, a.files, filepath.Join(dir, "files"))
	df := fmt.Sprintf("FROM %s/%s:%s\n%s", registryHost, base.Repo, BaseTag, a.dockerfile)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
}
