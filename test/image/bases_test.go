package image

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/docker/api/types/mount"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// TestImageBases runs puts on awkward load_bases in the resource's image
// on its dockerd 26.1, nested as Concourse runs it (the host's 20.10 runs
// the same cases in test/bases_test.go):
//   - a base whose config names no os/architecture (crane append makes
//     them): BuildKit took the loaded image for FROM only with the build
//     platform, so it pulled the base while the registry had it and failed
//     with "failed to resolve source metadata ... not found" once it was
//     deleted, as in the real Concourse run;
//   - a base running as a named user with /etc/passwd but no /etc/group:
//     BuildKit fails its RUN steps ("unable to find groups for spec"), the
//     put says so before the build.
func TestImageBases(t *testing.T) {
	imageTar := imageForTest(t)

	seed := testenv.StartRegistry(t, testenv.RegistryOptions{NoAuth: true})
	npBase := testenv.BusyboxImage(t, testenv.ImageOptions{Labels: map[string]string{"base": "np"}, RandomLayers: []int64{8 << 10}, RandomSeed: 91})
	npCfg, err := npBase.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	npCfg = npCfg.DeepCopy()
	npCfg.OS, npCfg.Architecture = "", ""
	if npBase, err = mutate.ConfigFile(npBase, npCfg); err != nil {
		t.Fatal(err)
	}
	npDigest := seed.Push(t, "np/base:1", npBase).String()
	ngBase := testenv.BusyboxImage(t, testenv.ImageOptions{NoPasswd: true, User: "app", RandomLayers: []int64{8 << 10}, RandomSeed: 92})
	ngBase = testenv.AppendLayers(t, ngBase, testenv.LayerFromFiles(t, []testenv.File{
		{Name: "etc/", Type: tar.TypeDir},
		{Name: "etc/passwd", Content: []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")},
	}, "gzip"))
	ngDigest := seed.Push(t, "ng/base:1", ngBase).String()
	seed.Stop()

	testenv.LockDockerd(t)
	e := startEnv(t, t.Context(), imageTar)
	const user, pass = "concourse", "e2e-secret-5b2c"
	reg := e.startRegistry(registryOpts{Alias: "registry", Storage: filepath.Join(seed.Dir, "data"), Username: user, Password: pass})
	source := registrySource(user, pass)
	get := func(t *testing.T, dir, repo, digest string) {
		t.Helper()
		r := e.run(step{
			Cmd:   []string{"/opt/resource/in", "/tmp/build/get"},
			Req:   map[string]any{"source": source(repo, map[string]any{"tag": "1"}), "version": map[string]any{"digest": digest}, "params": map[string]any{"save": true}},
			Binds: []mount.Mount{{Type: mount.TypeBind, Source: dir, Target: "/tmp/build/get"}},
		})
		requireOK(t, "in", r)
	}
	srcDir := t.TempDir()
	put := func(repo string, params map[string]any) stepResult {
		return e.run(step{
			Cmd:   []string{"/opt/resource/out", "/tmp/build/put"},
			Req:   map[string]any{"source": source(repo, nil), "params": params},
			Binds: []mount.Mount{{Type: mount.TypeBind, Source: srcDir, Target: "/tmp/build/put"}},
		})
	}
	// deleteRepo removes a repository from the registry's storage.
	deleteRepo := func(t *testing.T, name string) {
		reg.stop()
		if err := os.RemoveAll(filepath.Join(seed.Dir, "data/docker/registry/v2/repositories", name)); err != nil {
			t.Fatal(err)
		}
		reg.start()
	}
	for _, d := range []string{"np", "ng"} {
		if err := os.Mkdir(filepath.Join(srcDir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeTestFile(t, filepath.Join(srcDir, "np-app/Dockerfile"), []byte("FROM registry:5000/np/base:1\nRUN echo built > /built\n"))
	writeTestFile(t, filepath.Join(srcDir, "ng-app/Dockerfile"), []byte("FROM registry:5000/ng/base:1\nRUN id > /tmp/id\n"))

	t.Run("no os/architecture, in the registry: BuildKit does not pull it", func(t *testing.T) {
		get(t, filepath.Join(srcDir, "np"), "np/base", npDigest)
		before := reg.logs()
		r := put("np/app", map[string]any{"build": "np-app", "load_base": "np"})
		requireOK(t, "out", r)
		requireClean(t, r)
		logged := strings.TrimPrefix(reg.logs(), before)
		// Access log lines: `... "GET /v2/np/base/manifests/1 HTTP/1.1" 200 ...`.
		for _, l := range scanLines(logged) {
			for _, m := range []string{`"HEAD /v2/np/base/`, `"GET /v2/np/base/`} {
				if strings.Contains(l, m) {
					t.Errorf("the put asked the registry for the load_base: %s", l)
				}
			}
		}
		if !strings.Contains(r.Stderr, "with the build platform linux/") {
			t.Errorf("the log does not say the base got the build platform:\n%s", r.Stderr)
		}
		t.Logf("TIME put took %s", r.Took.Round(100*time.Millisecond))
	})

	t.Run("no os/architecture, deleted from the registry", func(t *testing.T) {
		deleteRepo(t, "np/base")
		for _, builder := range []int{1, 0} {
			r := put("np/app", map[string]any{"build": "np-app", "load_base": "np", "docker_buildkit": builder})
			requireOK(t, map[int]string{0: "out (classic)", 1: "out (BuildKit)"}[builder], r)
			requireClean(t, r)
		}
	})

	t.Run("named user without /etc/group", func(t *testing.T) {
		get(t, filepath.Join(srcDir, "ng"), "ng/base", ngDigest)
		deleteRepo(t, "ng/base")
		r := put("ng/app", map[string]any{"build": "ng-app", "load_base": "ng"})
		if r.Code == 0 {
			t.Fatalf("the BuildKit put succeeded:\n%s", r.Stderr)
		}
		requireClean(t, r)
		for _, w := range []string{"ng-app/Dockerfile line 2: BuildKit cannot run this RUN step as user \"app\"", "has /etc/passwd but no /etc/group", "docker_buildkit: 0"} {
			if !strings.Contains(r.Stderr, w) {
				t.Errorf("stderr lacks %q:\n%s", w, r.Stderr)
			}
		}
		if strings.Contains(r.Stderr, "RUN id >") {
			t.Errorf("the build started:\n%s", r.Stderr)
		}
		t.Logf("BuildKit put (exit %d) ends:\n%s", r.Code, lastLines(r.Stderr, 2))
		r = put("ng/app", map[string]any{"build": "ng-app", "load_base": "ng", "docker_buildkit": 0})
		requireOK(t, "out (classic)", r)
		requireClean(t, r)
	})
}
