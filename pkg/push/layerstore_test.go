package push

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/pkg/layerstore"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/klauspost/compress/gzip"
	"github.com/vbatts/tar-split/tar/storage"
)

// storeEnv is a real dockerd (host's, isolated) with a base loaded from a
// get's folder and images built on it, and a registry to push to.
type storeEnv struct {
	cli    *client.Client
	root   string // the daemon's data root
	driver string
	base   string // the base's folder
	host   string // the in-memory registry
	o      Options
}

// newStoreEnv starts testenv's dockerd (overlay2 unless the data root
// cannot have it).
func newStoreEnv(t *testing.T) *storeEnv {
	d := testenv.StartDockerd(t)
	return loadBase(t, d.Client(), d.DataRoot)
}

// newVfsEnv starts a dockerd with the vfs storage driver (a wrapper script
// adds --storage-driver=vfs), under the repository-wide dockerd lock.
func newVfsEnv(t *testing.T) *storeEnv {
	if os.Geteuid() != 0 {
		t.Skip("starting dockerd needs root")
	}
	for _, b := range []string{"dockerd", "containerd"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s not installed: %v", b, err)
		}
	}
	testenv.LockDockerd(t)
	dir := testenv.ShortTempDir(t, "dk-")
	bin := filepath.Join(dir, "dockerd-vfs")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexec dockerd --storage-driver=vfs \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	d, err := daemon.Start(t.Context(), daemon.Options{Dir: dir, DataRoot: root, Isolated: true, Binary: bin,
		StartupTimeout: 90 * time.Second, StopTimeout: 15 * time.Second})
	if err != nil {
		t.Fatalf("dockerd with vfs did not start: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	if d.StorageDriver() != "vfs" {
		t.Fatalf("storage driver %s, want vfs", d.StorageDriver())
	}
	return loadBase(t, d.Client(), d.DataRoot())
}

// loadBase loads a base from a get's folder into the daemon at cli.
func loadBase(t *testing.T, cli *client.Client, root string) *storeEnv {
	e := &storeEnv{cli: cli, root: root}
	info, err := e.cli.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	e.driver = info.Driver
	base := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{1 << 20}})
	dg, _ := base.Digest()
	e.base = savedFolder(t, base, dg.String())
	if _, err := engine.LoadBase(t.Context(), e.cli, e.base, nil); err != nil {
		t.Fatal(err)
	}
	host, rc := memRegistry(t)
	e.host = host
	e.o = Options{Daemon: e.cli, Registry: rc, Tags: []string{"1"}, Bases: []string{e.base}, Jobs: 2}
	return e
}

// build builds, on the base, a COPY layer of random bytes and a RUN layer
// with what a layer tar can hold besides files: a whiteout, an opaque-free
// deleted folder, a symlink, a hard link, a setuid file, an empty file.
func (e *storeEnv) build(t *testing.T, buildKit bool) string {
	t.Helper()
	dir := t.TempDir()
	big := make([]byte, 3<<20)
	rand.Read(big)
	os.WriteFile(filepath.Join(dir, "big"), big, 0o644)
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM registry.example:5000/team/base:1\nCOPY big /opt/big\n"+
		"RUN rm /etc/group && rm -r /data && ln -s /opt/big /opt/link && ln /opt/big /opt/hard && mkdir /opt/d && "+
		"echo x > /opt/d/f && chmod 4755 /opt/d/f && touch /opt/empty\nLABEL layerstore=yes\n"), 0o644)
	res, err := engine.Build(t.Context(), e.cli, engine.BuildOptions{BuildKit: buildKit, ContextDir: dir, NetworkMode: "none"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res.ID
}

// push pushes image to repo with the layer store at root (none: "") and
// returns the result and the log.
func (e *storeEnv) push(t *testing.T, image, repo string, store *LayerStore) (*Result, string) {
	t.Helper()
	var log syncBuffer
	o := e.o
	o.Image, o.Repository, o.TempDir, o.LayerStore = image, e.host+"/team/"+repo, t.TempDir(), store
	o.Log = logging.New(logging.NewRedactor(&log), true)
	res, err := Push(t.Context(), o)
	if err != nil {
		t.Fatalf("push: %v\n%s", err, log.String())
	}
	return res, log.String()
}

func (e *storeEnv) store() *LayerStore { return &LayerStore{Root: e.root, Driver: e.driver} }

// checkPulled: the image pushed to repo, pulled by go-containerregistry,
// has every layer's digest and diff ID verifying, the daemon's image ID as
// its config digest and the daemon's layers.
func (e *storeEnv) checkPulled(t *testing.T, repo, image string, res *Result) {
	t.Helper()
	img, err := remote.Image(mustRef(t, e.host+"/team/"+repo+":1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Errorf("the pushed image does not verify: %v", err)
	}
	cn, _ := img.ConfigName()
	dg, _ := img.Digest()
	if cn.String() != image || dg != res.Digest {
		t.Errorf("pushed config %s, manifest %s; want the image ID %s and the result's %s", cn, dg, image, res.Digest)
	}
	ins, err := e.cli.ImageInspect(t.Context(), image)
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := img.Layers()
	if len(ls) != len(ins.RootFS.Layers) {
		t.Fatalf("%d layers pushed, the daemon's image has %d", len(ls), len(ins.RootFS.Layers))
	}
	for i, l := range ls {
		if d, _ := l.DiffID(); d.String() != ins.RootFS.Layers[i] {
			t.Errorf("layer %d: diff ID %s, the daemon's %s", i, d, ins.RootFS.Layers[i])
		}
	}
}

// TestPushReadsDockerdsLayerStore: with the daemon's layer store, Push
// reads the config and the new layers there (not the save stream), and the
// pushed image is exactly the one the save stream gives, for images of the
// classic builder and of BuildKit.
func TestPushReadsDockerdsLayerStore(t *testing.T) {
	e := newStoreEnv(t)
	if e.driver != "overlay2" && e.driver != "vfs" {
		t.Fatalf("storage driver %s: the test daemon should use overlay2 or vfs", e.driver)
	}
	for _, bk := range []bool{false, true} {
		name := map[bool]string{false: "classic builder", true: "BuildKit"}[bk]
		t.Run(name, func(t *testing.T) { e.pushFromStore(t, bk, strings.ReplaceAll(strings.ToLower(name), " ", "-")) })
	}
}

// TestPushReadsAVfsLayerStore: the same with the vfs storage driver (a
// data root on a filesystem overlay2 cannot use), classic builder.
func TestPushReadsAVfsLayerStore(t *testing.T) {
	newVfsEnv(t).pushFromStore(t, false, "vfs")
}

// pushFromStore builds an image and pushes it with the layer store to repo,
// then without it to repo-saved.
func (e *storeEnv) pushFromStore(t *testing.T, buildKit bool, repo string) {
	image := e.build(t, buildKit)
	res, log := e.push(t, image, repo, e.store())
	if res.From != FromLayerStore || !strings.Contains(log, "reading 2 new layers and the config from dockerd's layer store (no image stream)") ||
		strings.Contains(log, "streaming image") {
		t.Fatalf("from %q, want the layer store; log:\n%s", res.From, log)
	}
	if res.NewLayers != 2 || res.BaseLayers != 2 || res.Config.String() != image || res.Save <= 0 {
		t.Errorf("result %+v", res)
	}
	e.checkPulled(t, repo, image, res)
	t.Logf("log:\n%s", log)

	// The save stream gives the same image: same manifest digest.
	saved, log := e.push(t, image, repo+"-saved", nil)
	if saved.From != FromSaveStream || !strings.Contains(log, "streaming image") {
		t.Fatalf("without a layer store: from %q; log:\n%s", saved.From, log)
	}
	if saved.Digest != res.Digest {
		t.Errorf("manifest %s from the layer store, %s from the save stream", res.Digest, saved.Digest)
	}
}

// TestPushFallsBackFromTheLayerStore: whatever the layer store cannot give
// exactly (a missing tar-split, a tar-split that rebuilds other bytes, a
// missing config as with the containerd image store, another storage
// driver) makes Push stream the image, and the push is the same.
func TestPushFallsBackFromTheLayerStore(t *testing.T) {
	e := newStoreEnv(t)
	image := e.build(t, false)
	want, _ := e.push(t, image, "want", e.store())
	if want.From != FromLayerStore {
		t.Fatalf("from %q, want the layer store", want.From)
	}
	ins, err := e.cli.ImageInspect(t.Context(), image)
	if err != nil {
		t.Fatal(err)
	}
	chain := ""
	for _, d := range ins.RootFS.Layers {
		chain = layerstore.ChainID(chain, d)
	}
	top := strings.TrimPrefix(chain, "sha256:") // the RUN layer

	for _, c := range []struct {
		name  string
		store func(t *testing.T) *LayerStore
		why   string // in the debug line
	}{
		{"tar-split missing", func(t *testing.T) *LayerStore {
			s := e.copyStore(t)
			os.Remove(filepath.Join(s.Root, "image", s.Driver, "layerdb", "sha256", top, "tar-split.json.gz"))
			return s
		}, "its tar-split"},
		{"tar-split rebuilds other bytes", func(t *testing.T) *LayerStore {
			s := e.copyStore(t)
			corruptTarSplit(t, filepath.Join(s.Root, "image", s.Driver, "layerdb", "sha256", top, "tar-split.json.gz"))
			return s
		}, "its tar rebuilt from the store hashes to"},
		{"no config (containerd image store)", func(t *testing.T) *LayerStore {
			return &LayerStore{Root: t.TempDir(), Driver: e.driver}
		}, "the image's config"},
		{"another storage driver", func(t *testing.T) *LayerStore {
			return &LayerStore{Root: e.root, Driver: "btrfs"}
		}, `storage driver "btrfs"`},
		{"a data root that is not there", func(t *testing.T) *LayerStore {
			return &LayerStore{Root: filepath.Join(t.TempDir(), "gone"), Driver: e.driver}
		}, "the image's config"},
	} {
		t.Run(c.name, func(t *testing.T) {
			repo := strings.ReplaceAll(c.name, " ", "-")
			repo = strings.NewReplacer("(", "", ")", "").Replace(repo)
			res, log := e.push(t, image, repo, c.store(t))
			if res.From != FromSaveStream || !strings.Contains(log, "streaming image") {
				t.Fatalf("from %q, want the save stream; log:\n%s", res.From, log)
			}
			if !strings.Contains(log, "push: dockerd's layer store: ") || !strings.Contains(log, c.why) {
				t.Errorf("the debug line does not say why (%q); log:\n%s", c.why, log)
			}
			if res.Digest != want.Digest {
				t.Errorf("manifest %s, from the layer store %s", res.Digest, want.Digest)
			}
			e.checkPulled(t, repo, image, res)
			t.Logf("log:\n%s", log)
		})
	}
}

// copyStore is a fake data root: a copy of the daemon's image metadata
// (small), its layers' files by a symlink to the real ones.
func (e *storeEnv) copyStore(t *testing.T) *LayerStore {
	t.Helper()
	root := t.TempDir()
	if err := os.CopyFS(filepath.Join(root, "image"), os.DirFS(filepath.Join(e.root, "image"))); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(e.root, e.driver), filepath.Join(root, e.driver)); err != nil {
		t.Fatal(err)
	}
	return &LayerStore{Root: root, Driver: e.driver}
}

// corruptTarSplit changes one byte of the first tar header the tar-split
// holds: every file's payload still checks, but the rebuilt tar is not the
// layer's.
func corruptTarSplit(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 16<<20)
	done := false
	for sc.Scan() {
		line := sc.Bytes()
		var en storage.Entry
		if err := json.Unmarshal(line, &en); err != nil {
			t.Fatal(err)
		}
		if !done && en.Type == storage.SegmentType && len(en.Payload) > 0 {
			en.Payload[0] ^= 0xff
			done = true
			if line, err = json.Marshal(en); err != nil {
				t.Fatal(err)
			}
		}
		zw.Write(append(line, '\n'))
	}
	f.Close()
	if err := sc.Err(); err != nil || !done {
		t.Fatalf("tar-split %s: %v, changed %v", path, err, done)
	}
	zw.Close()
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a bytes.Buffer for a logger written from goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
