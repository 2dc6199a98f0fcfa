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
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// baseRepo is the name of the loaded base: .invalid never resolves, so a
// build that tried to pull it would fail.
const baseRepo = "base.invalid/engine/base"

// TestEngine runs everything against one private dockerd and one registry
// (only one dockerd may run on the machine at a time).
func TestEngine(t *testing.T) {
	d := testenv.StartDockerd(t)
	cli := d.Client()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	auth := NewRegistryAuth(map[string]Credentials{reg.Host: {Username: reg.Username, Password: reg.Password}})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()

	baseImg := testenv.BusyboxImage(t, testenv.ImageOptions{Labels: map[string]string{"from": "base"}})
	baseID := configName(t, baseImg)
	baseDir := t.TempDir()
	saveTarball(t, filepath.Join(baseDir, "image"), baseImg, "saved.invalid/engine/saved:orig")
	writeTree(t, baseDir, map[string]string{"image-id": baseID + "\n", "repository": baseRepo + "\n", "tag": "1\n"})

	t.Run("Load", func(t *testing.T) {
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

		// Gzip-compressed and untagged (as oci-build-task writes) load too.
		other := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{4096}, RandomSeed: 7})
		untagged := filepath.Join(t.TempDir(), "untagged.tar")
		saveTarball(t, untagged, other)
		gz := gzipFile(t, untagged)
		res, err = Load(ctx, cli, gz, log)
		if err != nil {
			t.Fatal(err)
		}
		if want := configName(t, other); len(res.Images) != 1 || res.Images[0].ID != want || len(res.Images[0].RepoTags) != 0 {
			t.Fatalf("loaded %+v, want untagged %s", res, want)
		}

		// A broken tarball fails with the daemon's message from the stream.
		// A new random layer: the daemon skips layers it already has.
		fresh := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{4096}, RandomSeed: 99})
		saveTarball(t, p, fresh, "engine/corrupt:1")
		bad := filepath.Join(t.TempDir(), "bad.tar")
		corruptLayers(t, p, bad)
		if _, err := Load(ctx, cli, bad, log); err == nil {
			t.Fatal("loading a tarball with a corrupt layer succeeded")
		} else if !errors.As(err, new(*StreamError)) {
			t.Fatalf("corrupt tarball: %v (%T), want an error from the stream", err, err)
		} else {
			t.Logf("corrupt tarball: %v", err)
		}
	})

	t.Run("LoadBaseMissingFiles", func(t *testing.T) {
		for _, missing := range []string{"image", "image-id", "repository", "tag"} {
			dir := t.TempDir()
			for _, f := range []string{"image", "image-id", "repository", "tag"} {
				if f != missing {
					copyFile(t, filepath.Join(baseDir, f), filepath.Join(dir, f))
				}
			}
			_, err := LoadBase(ctx, cli, dir, nil)
			if err == nil || !strings.Contains(err.Error(), `"`+missing+`"`) || !strings.Contains(err.Error(), "save: true") {
				t.Errorf("without %s: %v", missing, err)
			}
			t.Logf("without %s: %v", missing, err)
		}
	})

	t.Run("LoadBaseWrongID", func(t *testing.T) {
		dir := t.TempDir()
		for _, f := range []string{"image", "repository", "tag"} {
			copyFile(t, filepath.Join(baseDir, f), filepath.Join(dir, f))
		}
		other := configName(t, testenv.BusyboxImage(t, testenv.ImageOptions{User: "app"}))
		writeTree(t, dir, map[string]string{"image-id": other})
		_, err := LoadBase(ctx, cli, dir, nil)
		if err == nil || !strings.Contains(err.Error(), baseID) || !strings.Contains(err.Error(), other) {
			t.Fatalf("mismatching image-id: %v", err)
		}
		t.Logf("mismatching image-id: %v", err)
		if _, err := cli.ImageInspect(ctx, baseRepo+":1"); err == nil {
			t.Fatal("a base with the wrong ID was tagged")
		}
	})

	// Every build below starts FROM this loaded base.
	log, _ := testLog(t)
	base, err := LoadBase(ctx, cli, baseDir, log)
	if err != nil {
		t.Fatal(err)
	}
	if base.ID != baseID || base.Ref() != baseRepo+":1" {
		t.Fatalf("base %+v", base)
	}
	if ins, err := cli.ImageInspect(ctx, base.Ref()); err != nil || ins.ID != baseID {
		t.Fatalf("base tag: %v %s", err, ins.ID)
	}

	t.Run("BuildArgsAndLabels", func(t *testing.T) {
		log, hook := testLog(t)
		dir := t.TempDir()
		writeTree(t, dir, map[string]string{"Dockerfile": "FROM " + base.Ref() + "\nARG X\nARG EMPTY\nRUN test \"$X\" = value && test -z \"$EMPTY\" && echo build-output-line && echo x > /built\n"})
		res, err := Build(ctx, cli, BuildOptions{
			ContextDir:  dir,
			BuildArgs:   map[string]string{"X": "value", "EMPTY": ""},
			Labels:      map[string]string{"org.example.a": "1", "b": "two words"},
			NetworkMode: "host",
		}, log)
		if err != nil {
			t.Fatal(err)
		}
		ins, err := cli.ImageInspect(ctx, res.ID)
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
	})

	t.Run("Dockerignore", func(t *testing.T) {
		dir := t.TempDir()
		writeTree(t, dir, map[string]string{
			"Dockerfile": "FROM " + base.Ref() + "\nCOPY . /ctx/\nRUN cd /ctx && test -e kept.txt && test ! -e ignored.txt && test ! -e a.log && test -e keep.log" +
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
		if _, err := Build(ctx, cli, BuildOptions{ContextDir: dir, NetworkMode: "host"}, log); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("DockerfileOutsideContext", func(t *testing.T) {
		dir, other := t.TempDir(), t.TempDir()
		writeTree(t, dir, map[string]string{"data.txt": "d", "Dockerfile": "FROM scratch\nRUN false\n"})
		writeTree(t, other, map[string]string{"ci.Dockerfile": "FROM " + base.Ref() + "\nCOPY . /ctx/\nRUN ls -A /ctx && test \"$(ls -A /ctx | wc -l)\" = 2 && test -e /ctx/data.txt && test -e /ctx/Dockerfile\n"})
		log, _ := testLog(t)
		if _, err := Build(ctx, cli, BuildOptions{ContextDir: dir, Dockerfile: filepath.Join(other, "ci.Dockerfile"), NetworkMode: "host"}, log); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("MultiStageTarget", func(t *testing.T) {
		dir := t.TempDir()
		writeTree(t, dir, map[string]string{"Dockerfile": "FROM " + base.Ref() + " AS good\nLABEL stage=good\nRUN echo good > /stage\n" +
			"FROM " + base.Ref() + " AS bad\nLABEL stage=bad\nRUN false\n"})
		log, _ := testLog(t)
		res, err := Build(ctx, cli, BuildOptions{ContextDir: dir, Target: "good", NetworkMode: "host"}, log)
		if err != nil {
			t.Fatal(err)
		}
		if ins, err := cli.ImageInspect(ctx, res.ID); err != nil || ins.Config.Labels["stage"] != "good" {
			t.Fatalf("target image: %v %v", err, ins.Config)
		}
		if _, err := Build(ctx, cli, BuildOptions{ContextDir: dir, NetworkMode: "host"}, log); err == nil {
			t.Fatal("building the last, failing stage succeeded")
		}
	})

	t.Run("FailingRun", func(t *testing.T) {
		dir := t.TempDir()
		writeTree(t, dir, map[string]string{"Dockerfile": "FROM " + base.Ref() + "\nRUN echo fine\nRUN echo first-output && echo marker-output-xyz && exit 3\n"})
		log, _ := testLog(t)
		_, err := Build(ctx, cli, BuildOptions{ContextDir: dir, NetworkMode: "host"}, log)
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
		cs, err := cli.ContainerList(ctx, container.ListOptions{All: true})
		if err != nil || len(cs) != 0 {
			t.Fatalf("containers left: %v %d", err, len(cs))
		}
	})

	t.Run("CacheFrom", func(t *testing.T) {
		dir := t.TempDir()
		writeTree(t, dir, map[string]string{"Dockerfile": "FROM " + base.Ref() + "\nRUN busybox date +%s%N > /random\n"})
		log, _ := testLog(t)
		first, err := Build(ctx, cli, BuildOptions{ContextDir: dir, NetworkMode: "host", Tags: []string{"engine/cache-src:1"}}, log)
		if err != nil {
			t.Fatal(err)
		}
		// With CacheFrom the classic builder ignores its local cache: an
		// unrelated cache image means a rebuild, the first image a hit.
		other, err := Build(ctx, cli, BuildOptions{ContextDir: dir, NetworkMode: "host", CacheFrom: []string{base.Ref()}}, log)
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
	})

	t.Run("BuildPullsFromWithAuth", func(t *testing.T) {
		remoteImg := testenv.BusyboxImage(t, testenv.ImageOptions{Labels: map[string]string{"from": "registry"}})
		reg.Push(t, "engine/from:1", remoteImg)
		dir := t.TempDir()
		writeTree(t, dir, map[string]string{"Dockerfile": "FROM " + reg.Host + "/engine/from:1\nRUN test -x /bin/busybox\n"})
		log, hook := testLog(t)
		if _, err := Build(ctx, cli, BuildOptions{ContextDir: dir, NetworkMode: "host"}, log); err == nil {
			t.Fatal("FROM a registry needing auth worked without credentials")
		}
		res, err := Build(ctx, cli, BuildOptions{ContextDir: dir, NetworkMode: "host", Auth: auth}, log)
		if err != nil {
			t.Fatal(err)
		}
		if ins, err := cli.ImageInspect(ctx, res.ID); err != nil || ins.Config.Labels["from"] != "registry" {
			t.Fatalf("built image: %v %v", err, ins.Config)
		}
		assertNoSecret(t, hook, reg.Password)
	})

	var pushed []PushResult
	t.Run("Push", func(t *testing.T) {
		log, hook := testLog(t)
		dir := t.TempDir()
		writeTree(t, dir, map[string]string{"Dockerfile": "FROM " + base.Ref() + "\nRUN echo pushed > /pushed\n"})
		built, err := Build(ctx, cli, BuildOptions{ContextDir: dir, NetworkMode: "host"}, log)
		if err != nil {
			t.Fatal(err)
		}
		repo := reg.Host + "/engine/app"
		res, err := Push(ctx, cli, built.ID, repo, []string{"1", "latest"}, auth, log)
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 2 || res[0].Tag != "1" || res[1].Tag != "latest" || res[0].Digest != res[1].Digest || res[0].Size == 0 {
			t.Fatalf("push results %+v", res)
		}
		for _, r := range res {
			ref, err := name.ParseReference(repo+":"+r.Tag, reg.NameOptions()...)
			if err != nil {
				t.Fatal(err)
			}
			desc, err := remote.Head(ref, append(reg.RemoteOptions(), remote.WithContext(ctx))...)
			if err != nil {
				t.Fatal(err)
			}
			if desc.Digest.String() != r.Digest {
				t.Fatalf("registry holds %s for %s, push said %s", desc.Digest, r.Tag, r.Digest)
			}
		}
		logged := messages(hook)
		// The RUN layer is new to the registry; the base layer is mounted.
		if countContaining(logged, ": Pushed") != 1 || countContaining(logged, ": Pushing") > 1 {
			t.Errorf("push progress not shown: %q", logged)
		}
		assertNoSecret(t, hook, reg.Password)
		pushed = res
	})

	t.Run("PushWrongPassword", func(t *testing.T) {
		log, hook := testLog(t)
		const wrong = "wrong-password-123"
		bad := NewRegistryAuth(map[string]Credentials{reg.Host: {Username: reg.Username, Password: wrong}})
		_, err := Push(ctx, cli, base.ID, reg.Host+"/engine/denied", []string{"1"}, bad, log)
		var se *StreamError
		if !errors.As(err, &se) {
			t.Fatalf("error %v (%T), want one from inside the stream", err, err)
		}
		if !strings.Contains(strings.ToLower(err.Error()), "auth") || strings.Contains(err.Error(), wrong) {
			t.Fatalf("error %q", err)
		}
		t.Logf("wrong password: %v", err)
		assertNoSecret(t, hook, wrong)
	})

	t.Run("Pull", func(t *testing.T) {
		log, hook := testLog(t)
		img := testenv.BusyboxImage(t, testenv.ImageOptions{Labels: map[string]string{"pulled": "yes"}, RandomLayers: []int64{8 << 20}})
		reg.Push(t, "engine/pulled:1", img)
		id, err := Pull(ctx, cli, reg.Host+"/engine/pulled:1", auth, log)
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

		for _, ref := range []string{reg.Host + "/engine/pulled:nope", reg.Host + "/engine/never-pushed:1"} {
			_, err := Pull(ctx, cli, ref, auth, log)
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("pull of missing %s: %v, want ErrNotFound", ref, err)
			}
			t.Logf("pull miss: %v", err)
		}
		bad := NewRegistryAuth(map[string]Credentials{reg.Host: {Username: reg.Username, Password: "wrong"}})
		_, err = Pull(ctx, cli, reg.Host+"/engine/pulled:1", bad, log)
		if err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("pull with a wrong password: %v, want an error other than ErrNotFound", err)
		}
		t.Logf("pull with a wrong password: %v", err)
		if len(pushed) > 0 {
			if _, err := Pull(ctx, cli, reg.Host+"/engine/app:1", auth, log); err != nil {
				t.Errorf("pulling what Push pushed: %v", err)
			}
		}
	})

	t.Run("Import", func(t *testing.T) {
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
		p := filepath.Join(t.TempDir(), "rootfs.tar")
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
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
	})
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
