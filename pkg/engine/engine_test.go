package engine

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sirupsen/logrus"
)

// baseRepo is the name of the loaded base: .invalid never resolves, so a
// build that tried to pull it would fail.
const baseRepo = "base.invalid/engine/base"

// engineEnv is what TestEngine's steps share: one private dockerd, one
// registry, and a base folder as a get with save: true writes it.
type engineEnv struct {
	ctx     context.Context
	cli     *client.Client
	reg     *testenv.Registry
	auth    RegistryAuth
	baseDir string
	baseID  string
	// base is baseDir loaded: every build after the load steps starts
	// FROM it.
	base Base
	// pushed is what the Push step pushed, for the Pull step.
	pushed []PushResult
}

// TestEngine runs everything against one private dockerd and one registry
// (only one dockerd may run on the machine at a time).
func TestEngine(t *testing.T) {
	e := startEngineEnv(t)
	t.Run("Load", e.testLoad)
	t.Run("LoadBaseMissingFiles", e.testLoadBaseMissingFiles)
	t.Run("LoadBaseWrongID", e.testLoadBaseWrongID)
	e.loadBase(t)
	t.Run("BuildArgsAndLabels", e.testBuildArgsAndLabels)
	t.Run("Dockerignore", e.testDockerignore)
	t.Run("DockerfileOutsideContext", e.testDockerfileOutsideContext)
	t.Run("MultiStageTarget", e.testMultiStageTarget)
	t.Run("FailingRun", e.testFailingRun)
	t.Run("CacheFrom", e.testCacheFrom)
	t.Run("BuildPullsFromWithAuth", e.testBuildPullsFromWithAuth)
	t.Run("Push", e.testPush)
	t.Run("PushWrongPassword", e.testPushWrongPassword)
	t.Run("Pull", e.testPull)
	t.Run("Import", e.testImport)
}

func startEngineEnv(t *testing.T) *engineEnv {
	d := testenv.StartDockerd(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	t.Cleanup(cancel)
	e := &engineEnv{
		ctx:  ctx,
		cli:  d.Client(),
		reg:  reg,
		auth: NewRegistryAuth(map[string]Credentials{reg.Host: {Username: reg.Username, Password: reg.Password}}),
	}
	baseImg := testenv.BusyboxImage(t, testenv.ImageOptions{Labels: map[string]string{"from": "base"}})
	e.baseID = configName(t, baseImg)
	e.baseDir = t.TempDir()
	saveTarball(t, filepath.Join(e.baseDir, "image"), baseImg, "saved.invalid/engine/saved:orig")
	writeTree(t, e.baseDir, map[string]string{"image-id": e.baseID + "\n", "repository": baseRepo + "\n", "tag": "1\n"})
	return e
}

// loadBase loads baseDir, which every build below starts FROM.
func (e *engineEnv) loadBase(t *testing.T) {
	log, _ := testLog(t)
	base, err := LoadBase(e.ctx, e.cli, e.baseDir, log)
	if err != nil {
		t.Fatal(err)
	}
	if base.ID != e.baseID || base.Ref() != baseRepo+":1" {
		t.Fatalf("base %+v", base)
	}
	if ins, err := e.cli.ImageInspect(e.ctx, base.Ref()); err != nil || ins.ID != e.baseID {
		t.Fatalf("base tag: %v %s", err, ins.ID)
	}
	e.base = base
}

func (e *engineEnv) testLoad(t *testing.T) {
	ctx, cli := e.ctx, e.cli
	log, hook := testLog(t)
	img := testenv.BusyboxImage(t, testenv.ImageOptions{Labels: map[string]string{"loaded": "yes"}, RandomLayers: []int64{4096}})
	p := filepath.Join(t.TempDir(), "image.tar")
	saveTarball(t, p, img, "engine/loaded:1", "engine/loaded:2")
	res, err := Load(ctx, cli, p, log)
	if err != nil {
		t.Fatal(err)
	}
	want := configName(t, img)
	if len(res.Images) != 1 || res.Images[0].ID != want || len(res.Images[0].RepoTags) != 2 {
		t.Fatalf("loaded %+v, want ID %s with 2 tags", res, want)
	}
	ins, err := cli.ImageInspect(ctx, "engine/loaded:2")
	if err != nil || ins.ID != want || ins.Config.Labels["loaded"] != "yes" {
		t.Fatalf("inspect: %v %s %v", err, ins.ID, ins.Config)
	}
	if countContaining(messages(hook), "Loaded image: engine/loaded:2") != 1 {
		t.Errorf("load stream not shown: %q", messages(hook))
	}
	e.checkLoadUntaggedGzip(t, log)
	e.checkLoadCorrupt(t, p, log)
}

// checkLoadUntaggedGzip: gzip-compressed and untagged (as oci-build-task
// writes) load too.
func (e *engineEnv) checkLoadUntaggedGzip(t *testing.T, log *logrus.Entry) {
	other := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{4096}, RandomSeed: 7})
	untagged := filepath.Join(t.TempDir(), "untagged.tar")
	saveTarball(t, untagged, other)
	gz := gzipFile(t, untagged)
	res, err := Load(e.ctx, e.cli, gz, log)
	if err != nil {
		t.Fatal(err)
	}
	if want := configName(t, other); len(res.Images) != 1 || res.Images[0].ID != want || len(res.Images[0].RepoTags) != 0 {
		t.Fatalf("loaded %+v, want untagged %s", res, want)
	}
}

// checkLoadCorrupt: a broken tarball fails with the daemon's message from
// the stream. A new random layer: the daemon skips layers it already has.
func (e *engineEnv) checkLoadCorrupt(t *testing.T, p string, log *logrus.Entry) {
	fresh := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{4096}, RandomSeed: 99})
	saveTarball(t, p, fresh, "engine/corrupt:1")
	bad := filepath.Join(t.TempDir(), "bad.tar")
	corruptLayers(t, p, bad)
	if _, err := Load(e.ctx, e.cli, bad, log); err == nil {
		t.Fatal("loading a tarball with a corrupt layer succeeded")
	} else if !errors.As(err, new(*StreamError)) {
		t.Fatalf("corrupt tarball: %v (%T), want an error from the stream", err, err)
	} else {
		t.Logf("corrupt tarball: %v", err)
	}
}

func (e *engineEnv) testLoadBaseMissingFiles(t *testing.T) {
	for _, missing := range []string{"image", "image-id", "repository", "tag"} {
		dir := t.TempDir()
		for _, f := range []string{"image", "image-id", "repository", "tag"} {
			if f != missing {
				copyFile(t, filepath.Join(e.baseDir, f), filepath.Join(dir, f))
			}
		}
		_, err := LoadBase(e.ctx, e.cli, dir, nil)
		if err == nil || !strings.Contains(err.Error(), `"`+missing+`"`) || !strings.Contains(err.Error(), "save: true") {
			t.Errorf("without %s: %v", missing, err)
		}
		t.Logf("without %s: %v", missing, err)
	}
}

func (e *engineEnv) testLoadBaseWrongID(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"image", "repository", "tag"} {
		copyFile(t, filepath.Join(e.baseDir, f), filepath.Join(dir, f))
	}
	other := configName(t, testenv.BusyboxImage(t, testenv.ImageOptions{User: "app"}))
	writeTree(t, dir, map[string]string{"image-id": other})
	_, err := LoadBase(e.ctx, e.cli, dir, nil)
	if err == nil || !strings.Contains(err.Error(), e.baseID) || !strings.Contains(err.Error(), other) {
		t.Fatalf("mismatching image-id: %v", err)
	}
	t.Logf("mismatching image-id: %v", err)
	if _, err := e.cli.ImageInspect(e.ctx, baseRepo+":1"); err == nil {
		t.Fatal("a base with the wrong ID was tagged")
	}
}

func (e *engineEnv) testBuildArgsAndLabels(t *testing.T) {
	log, hook := testLog(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"Dockerfile": "FROM " + e.base.Ref() + "\nARG X\nARG EMPTY\nRUN test \"$X\" = value && test -z \"$EMPTY\" && echo build-output-line && echo x > /built\n"})
	res, err := Build(e.ctx, e.cli, BuildOptions{
		ContextDir:  dir,
		BuildArgs:   map[string]string{"X": "value", "EMPTY": ""},
		Labels:      map[string]string{"org.example.a": "1", "b": "two words"},
		NetworkMode: "host",
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	ins, err := e.cli.ImageInspect(e.ctx, res.ID)
	if err != nil {
		t.Fatal(err)
	}
	if l := ins.Config.Labels; l["org.example.a"] != "1" || l["b"] != "two words" || l["from"] != "base" {
		t.Fatalf("labels %v", l)
	}
	logged := messages(hook)
	if countContaining(logged, "build-output-line") == 0 || countContaining(logged, "Step 4/6 : RUN") != 1 {
		t.Fatalf("build output not logged line by line: %q", logged)
	}
	if countContaining(logged, "build args: EMPTY, X") != 1 {
		t.Fatalf("build args not listed sorted: %q", logged)
	}
}

func (e *engineEnv) testDockerignore(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"Dockerfile": "FROM " + e.base.Ref() + "\nCOPY . /ctx/\nRUN cd /ctx && test -e kept.txt && test ! -e ignored.txt && test ! -e a.log && test -e keep.log" +
			" && test ! -e secret && test ! -e sub/x.txt && test -e sub/wanted.txt && test ! -e Dockerfile && test ! -e .dockerignore\n",
		".dockerignore":  "ignored.txt\n*.log\n!keep.log\nsecret/\nsub/**\n!sub/wanted.txt\nDockerfile\n.dockerignore\n",
		"kept.txt":       "k",
		"ignored.txt":    "i",
		"a.log":          "a",
		"keep.log":       "k",
		"secret/s.txt":   "s",
		"sub/x.txt":      "x",
		"sub/wanted.txt": "w",
	})
	log, _ := testLog(t)
	if _, err := Build(e.ctx, e.cli, BuildOptions{ContextDir: dir, NetworkMode: "host"}, log); err != nil {
		t.Fatal(err)
	}
}

func (e *engineEnv) testDockerfileOutsideContext(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	writeTree(t, dir, map[string]string{"data.txt": "d", "Dockerfile": "FROM scratch\nRUN false\n"})
	writeTree(t, other, map[string]string{"ci.Dockerfile": "FROM " + e.base.Ref() + "\nCOPY . /ctx/\nRUN ls -A /ctx && test \"$(ls -A /ctx | wc -l)\" = 2 && test -e /ctx/data.txt && test -e /ctx/Dockerfile\n"})
	log, _ := testLog(t)
	if _, err := Build(e.ctx, e.cli, BuildOptions{ContextDir: dir, Dockerfile: filepath.Join(other, "ci.Dockerfile"), NetworkMode: "host"}, log); err != nil {
		t.Fatal(err)
	}
}

func (e *engineEnv) testMultiStageTarget(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"Dockerfile": "FROM " + e.base.Ref() + " AS good\nLABEL stage=good\nRUN echo good > /stage\n" +
		"FROM " + e.base.Ref() + " AS bad\nLABEL stage=bad\nRUN false\n"})
	log, _ := testLog(t)
	res, err := Build(e.ctx, e.cli, BuildOptions{ContextDir: dir, Target: "good", NetworkMode: "host"}, log)
	if err != nil {
		t.Fatal(err)
	}
	if ins, err := e.cli.ImageInspect(e.ctx, res.ID); err != nil || ins.Config.Labels["stage"] != "good" {
		t.Fatalf("target image: %v %v", err, ins.Config)
	}
	if _, err := Build(e.ctx, e.cli, BuildOptions{ContextDir: dir, NetworkMode: "host"}, log); err == nil {
		t.Fatal("building the last, failing stage succeeded")
	}
}

func (e *engineEnv) testFailingRun(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"Dockerfile": "FROM " + e.base.Ref() + "\nRUN echo fine\nRUN echo first-output && echo marker-output-xyz && exit 3\n"})
	log, _ := testLog(t)
	_, err := Build(e.ctx, e.cli, BuildOptions{ContextDir: dir, NetworkMode: "host"}, log)
	var se *StreamError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T), want a *StreamError", err, err)
	}
	msg := err.Error()
	t.Logf("failing RUN: %v", err)
	for _, want := range []string{"non-zero code: 3", "Step 3/3", "first-output", "marker-output-xyz"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "echo fine\n") || strings.Contains(msg, "Removing intermediate") {
		t.Errorf("error carries an earlier step's output:\n%s", msg)
	}
	// Intermediate containers are removed also after a failure.
	cs, err := e.cli.ContainerList(e.ctx, container.ListOptions{All: true})
	if err != nil || len(cs) != 0 {
		t.Fatalf("containers left: %v %d", err, len(cs))
	}
}

func (e *engineEnv) testCacheFrom(t *testing.T) {
	ctx, cli := e.ctx, e.cli
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"Dockerfile": "FROM " + e.base.Ref() + "\nRUN busybox date +%s%N > /random\n"})
	log, _ := testLog(t)
	first, err := Build(ctx, cli, BuildOptions{ContextDir: dir, NetworkMode: "host", Tags: []string{"engine/cache-src:1"}}, log)
	if err != nil {
		t.Fatal(err)
	}
	// With CacheFrom the classic builder ignores its local cache: an
	// unrelated cache image means a rebuild, the first image a hit.
	other, err := Build(ctx, cli, BuildOptions{ContextDir: dir, NetworkMode: "host", CacheFrom: []string{e.base.Ref()}}, log)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Build(ctx, cli, BuildOptions{ContextDir: dir, NetworkMode: "host", CacheFrom: []string{"engine/cache-src:1"}}, log)
	if err != nil {
		t.Fatal(err)
	}
	if other.ID == first.ID || again.ID != first.ID {
		t.Fatalf("first %s, unrelated cache %s, cache from first %s", first.ID, other.ID, again.ID)
	}
}

func (e *engineEnv) testBuildPullsFromWithAuth(t *testing.T) {
	ctx, cli, reg := e.ctx, e.cli, e.reg
	remoteImg := testenv.BusyboxImage(t, testenv.ImageOptions{Labels: map[string]string{"from": "registry"}})
	reg.Push(t, "engine/from:1", remoteImg)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"Dockerfile": "FROM " + reg.Host + "/engine/from:1\nRUN test -x /bin/busybox\n"})
	log, hook := testLog(t)
	if _, err := Build(ctx, cli, BuildOptions{ContextDir: dir, NetworkMode: "host"}, log); err == nil {
		t.Fatal("FROM a registry needing auth worked without credentials")
	}
	res, err := Build(ctx, cli, BuildOptions{ContextDir: dir, NetworkMode: "host", Auth: e.auth}, log)
	if err != nil {
		t.Fatal(err)
	}
	if ins, err := cli.ImageInspect(ctx, res.ID); err != nil || ins.Config.Labels["from"] != "registry" {
		t.Fatalf("built image: %v %v", err, ins.Config)
	}
	assertNoSecret(t, hook, reg.Password)
}

func (e *engineEnv) testPush(t *testing.T) {
	ctx, cli, reg := e.ctx, e.cli, e.reg
	log, hook := testLog(t)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"Dockerfile": "FROM " + e.base.Ref() + "\nRUN echo pushed > /pushed\n"})
	built, err := Build(ctx, cli, BuildOptions{ContextDir: dir, NetworkMode: "host"}, log)
	if err != nil {
		t.Fatal(err)
	}
	repo := reg.Host + "/engine/app"
	res, err := Push(ctx, cli, built.ID, repo, []string{"1", "latest"}, e.auth, log)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0].Tag != "1" || res[1].Tag != "latest" || res[0].Digest != res[1].Digest || res[0].Size == 0 {
		t.Fatalf("push results %+v", res)
	}
	e.checkPushed(t, repo, res)
	logged := messages(hook)
	// The RUN layer is new to the registry; the base layer is mounted.
	if countContaining(logged, ": Pushed") != 1 || countContaining(logged, ": Pushing") > 1 {
		t.Errorf("push progress not shown: %q", logged)
	}
	assertNoSecret(t, hook, reg.Password)
	e.pushed = res
}

// checkPushed: the registry holds, for every tag, the digest Push reported.
func (e *engineEnv) checkPushed(t *testing.T, repo string, res []PushResult) {
	for _, r := range res {
		ref, err := name.ParseReference(repo+":"+r.Tag, e.reg.NameOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		desc, err := remote.Head(ref, append(e.reg.RemoteOptions(), remote.WithContext(e.ctx))...)
		if err != nil {
			t.Fatal(err)
		}
		if desc.Digest.String() != r.Digest {
			t.Fatalf("registry holds %s for %s, push said %s", desc.Digest, r.Tag, r.Digest)
		}
	}
}

func (e *engineEnv) testPushWrongPassword(t *testing.T) {
	reg := e.reg
	log, hook := testLog(t)
	const wrong = "wrong-password-123"
	bad := NewRegistryAuth(map[string]Credentials{reg.Host: {Username: reg.Username, Password: wrong}})
	_, err := Push(e.ctx, e.cli, e.base.ID, reg.Host+"/engine/denied", []string{"1"}, bad, log)
	var se *StreamError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T), want one from inside the stream", err, err)
	}
	if !strings.Contains(strings.ToLower(err.Error()), "auth") || strings.Contains(err.Error(), wrong) {
		t.Fatalf("error %q", err)
	}
	t.Logf("wrong password: %v", err)
	assertNoSecret(t, hook, wrong)
}

func (e *engineEnv) testPull(t *testing.T) {
	ctx, cli, reg := e.ctx, e.cli, e.reg
	log, hook := testLog(t)
	img := testenv.BusyboxImage(t, testenv.ImageOptions{Labels: map[string]string{"pulled": "yes"}, RandomLayers: []int64{8 << 20}})
	reg.Push(t, "engine/pulled:1", img)
	id, err := Pull(ctx, cli, reg.Host+"/engine/pulled:1", e.auth, log)
	if err != nil {
		t.Fatal(err)
	}
	if want := configName(t, img); id != want {
		t.Fatalf("pulled ID %s, want %s", id, want)
	}
	logged := messages(hook)
	// The busybox layer is there already; the 8 MB one ticks many times.
	if countContaining(logged, "Pull complete") != 1 || countContaining(logged, ": Downloading") != 1 || countContaining(logged, ": Extracting") != 1 {
		t.Errorf("pull progress not one line per layer state: %q", logged)
	}
	assertNoSecret(t, hook, reg.Password)
	e.checkPullFailures(t, log)
	if len(e.pushed) > 0 {
		if _, err := Pull(ctx, cli, reg.Host+"/engine/app:1", e.auth, log); err != nil {
			t.Errorf("pulling what Push pushed: %v", err)
		}
	}
}

// checkPullFailures: a missing tag or repository is ErrNotFound, a wrong
// password another error.
func (e *engineEnv) checkPullFailures(t *testing.T, log *logrus.Entry) {
	reg := e.reg
	for _, ref := range []string{reg.Host + "/engine/pulled:nope", reg.Host + "/engine/never-pushed:1"} {
		_, err := Pull(e.ctx, e.cli, ref, e.auth, log)
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("pull of missing %s: %v, want ErrNotFound", ref, err)
		}
		t.Logf("pull miss: %v", err)
	}
	bad := NewRegistryAuth(map[string]Credentials{reg.Host: {Username: reg.Username, Password: "wrong"}})
	_, err := Pull(e.ctx, e.cli, reg.Host+"/engine/pulled:1", bad, log)
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("pull with a wrong password: %v, want an error other than ErrNotFound", err)
	}
	t.Logf("pull with a wrong password: %v", err)
}

func (e *engineEnv) testImport(t *testing.T) {
	ctx, cli := e.ctx, e.cli
	p := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := os.WriteFile(p, busyboxRootfsTar(t), 0o644); err != nil {
		t.Fatal(err)
	}
	log, _ := testLog(t)
	id, err := Import(ctx, cli, p, "engine/imported", "7", log)
	if err != nil {
		t.Fatal(err)
	}
	if ins, err := cli.ImageInspect(ctx, "engine/imported:7"); err != nil || ins.ID != id || len(ins.RootFS.Layers) != 1 {
		t.Fatalf("imported image: %v %s %+v", err, ins.ID, ins.RootFS)
	}
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"Dockerfile": "FROM engine/imported:7\nRUN test -x /bin/busybox && test -e /imported-marker\n"})
	if _, err := Build(ctx, cli, BuildOptions{ContextDir: dir, NetworkMode: "host"}, log); err != nil {
		t.Fatalf("building on the imported image: %v", err)
	}
	if _, err := Import(ctx, cli, filepath.Join(dir, "nope.tar"), "engine/imported", "8", log); err == nil {
		t.Fatal("importing a missing file succeeded")
	}
}

// busyboxRootfsTar is a rootfs tar of the host's busybox with sh and test
// links and an imported-marker file.
func busyboxRootfsTar(t *testing.T) []byte {
	bb, err := os.ReadFile(testenv.HostBusybox)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))},
		{Name: "bin/sh", Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777},
		{Name: "bin/test", Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777},
		{Name: "imported-marker", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		switch h.Name {
		case "bin/busybox":
			tw.Write(bb)
		case "imported-marker":
			tw.Write([]byte("ok"))
		}
	}
	tw.Close()
	return buf.Bytes()
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// corruptLayers copies a docker-save tarball, flipping bytes in its layers so
// the daemon fails to load it.
func corruptLayers(t *testing.T, from, to string) {
	t.Helper()
	f, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	tr := tar.NewReader(f)
	tw := tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		var b bytes.Buffer
		b.ReadFrom(tr)
		data := b.Bytes()
		if strings.HasSuffix(h.Name, ".tar.gz") || strings.HasSuffix(h.Name, ".tar") {
			for i := 10; i < len(data) && i < 200; i++ {
				data[i] ^= 0xff
			}
		}
		tw.WriteHeader(h)
		tw.Write(data)
	}
	tw.Close()
	if err := os.WriteFile(to, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// gzipFile writes a gzip-compressed copy of path and returns its name.
func gzipFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	out := path + ".gz"
	if err := os.WriteFile(out, zb.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}
