package image

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/docker/api/types/mount"
)

// TestImagePlatforms builds one Dockerfile for linux/amd64 and
// linux/arm64 in one put on the image's dockerd 26.1, from a two-platform
// base that a get saved (params.platforms) and the registry no longer has:
// the put loads the base as one index, cross-compiles (the RUN step on the
// build platform), pushes one index, and a get of each platform finds its
// own artifact on its own base. No emulator is installed (that would
// change the host), so a RUN step in an arm64 stage fails before the build,
// saying what works without one.
func TestImagePlatforms(t *testing.T) {
	e, source, srcDir := startPlatformsEnv(t)
	writeTestFile(t, filepath.Join(srcDir, "cross/Dockerfile"), []byte(`FROM --platform=$BUILDPLATFORM registry:5000/multi/base:1 AS build
ARG BUILDPLATFORM
ARG TARGETPLATFORM
RUN echo "built on $BUILDPLATFORM for $TARGETPLATFORM" > /target
FROM registry:5000/multi/base:1
COPY --from=build /target /target
`))
	writeTestFile(t, filepath.Join(srcDir, "native/Dockerfile"), []byte("FROM registry:5000/multi/base:1\nRUN echo hi > /hi\n"))
	put := func(repo, app string) stepResult {
		return e.run(step{
			Cmd: []string{"/opt/resource/out", "/tmp/build/put"},
			Req: map[string]any{"source": source(repo, nil),
				"params": map[string]any{"build": app, "load_base": "base", "platforms": []string{"linux/amd64", "linux/arm64"}}},
			Binds: []mount.Mount{{Type: mount.TypeBind, Source: srcDir, Target: "/tmp/build/put"}},
		})
	}

	t.Run("cross-compiled, one index", func(t *testing.T) {
		r := put("multi/app", "cross")
		requireOK(t, "put with platforms", r)
		requireClean(t, r)
		pushed := response(t, r).Version.Digest
		if !strings.Contains(r.Stderr, "as one index") {
			t.Errorf("the base was not loaded as one index:\n%s", r.Stderr)
		}
		if vs := e.check(t, source("multi/app", nil)); len(vs) != 1 || vs[0].Digest != pushed {
			t.Fatalf("check multi/app: %v, want [%s]", vs, pushed)
		}
		for _, p := range []struct{ arch, label string }{{"amd64", "linux/amd64"}, {"arm64", "linux/arm64/v8"}} {
			dir := t.TempDir()
			r := e.run(step{
				Cmd: []string{"/opt/resource/in", "/tmp/build/get"},
				Req: map[string]any{"source": source("multi/app", nil), "version": map[string]any{"digest": pushed},
					"params": map[string]any{"platform": map[string]any{"os": "linux", "architecture": p.arch}}},
				Binds: []mount.Mount{{Type: mount.TypeBind, Source: dir, Target: "/tmp/build/get"}},
			})
			requireOK(t, "in "+p.arch, r)
			b, err := os.ReadFile(filepath.Join(dir, "rootfs/target"))
			if want := "built on linux/amd64 for linux/" + p.arch; err != nil || !strings.HasPrefix(strings.TrimSpace(string(b)), want) {
				t.Errorf("%s: /target %q (%v), want %q", p.arch, b, err, want)
			}
			// The label comes from that platform's base: the loaded index
			// gave each platform its own image.
			if l := inspectLabels(t, dir); l["platform"] != p.label {
				t.Errorf("%s: labels %v: want platform=%s, of that platform's base", p.arch, l, p.label)
			}
		}
	})

	t.Run("RUN on a platform without an emulator", func(t *testing.T) {
		if _, err := os.Stat("/proc/sys/fs/binfmt_misc/qemu-aarch64"); err == nil {
			t.Skip("this machine has an arm64 emulator: the RUN step would run")
		}
		r := put("multi/native", "native")
		if r.Code == 0 {
			t.Fatalf("the put ran a RUN step for linux/arm64 without an emulator:\n%s", r.Stderr)
		}
		requireClean(t, r)
		last := lastLines(r.Stderr, 12)
		for _, want := range []string{"linux/arm64", "RUN echo hi", "emulator", "FROM --platform=$BUILDPLATFORM", "COPY"} {
			if !strings.Contains(last, want) {
				t.Errorf("the error does not say %q:\n%s", want, last)
			}
		}
		if strings.Contains(r.Stderr, "exec format error") {
			t.Errorf("the build started: %s", last)
		}
		if vs := e.check(t, source("multi/native", nil)); len(vs) != 0 {
			t.Errorf("multi/native was pushed: %v", vs)
		}
	})
}

// startPlatformsEnv starts the image's environment with a registry whose
// only image, a two-platform base, a get saved into <srcDir>/base with
// params.platforms before it was deleted from the registry.
func startPlatformsEnv(t testing.TB) (*env, func(repo string, extra map[string]any) map[string]any, string) {
	imageTar := imageForTest(t)
	seed := testenv.StartRegistry(t, testenv.RegistryOptions{NoAuth: true})
	idx, _ := testenv.TwoPlatforms(t, "oci")
	baseDigest := seed.PushIndex(t, "multi/base:1", idx).String()
	seed.Stop()

	testenv.LockDockerd(t)
	e := startEnv(t, t.Context(), imageTar)
	const user, pass = "concourse", "e2e-secret-77a1"
	reg := e.startRegistry(registryOpts{Alias: "registry", Storage: filepath.Join(seed.Dir, "data"), Username: user, Password: pass})
	source := registrySource(user, pass)

	srcDir := t.TempDir()
	baseDir := filepath.Join(srcDir, "base")
	if err := os.Mkdir(baseDir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := e.run(step{
		Cmd: []string{"/opt/resource/in", "/tmp/build/get"},
		Req: map[string]any{"source": source("multi/base", map[string]any{"tag": "1"}), "version": map[string]any{"digest": baseDigest},
			"params": map[string]any{"save": true, "platforms": []string{"linux/amd64", "linux/arm64"}}},
		Binds: []mount.Mount{{Type: mount.TypeBind, Source: baseDir, Target: "/tmp/build/get"}},
	})
	if r.Code != 0 {
		t.Fatalf("in with platforms exited %d:\n%s", r.Code, r.Stderr)
	}
	reg.stop()
	if err := os.RemoveAll(filepath.Join(seed.Dir, "data/docker/registry/v2/repositories/multi/base")); err != nil {
		t.Fatal(err)
	}
	reg.start()
	return e, source, srcDir
}
