package image

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/docker/api/types/mount"
)

// TestImageRegistryCache runs puts with params.cache_repository on the
// image's dockerd (26.1, containerd image store, BuildKit's control API),
// each on a fresh daemon with nothing local but the load_base folder, as on
// a fresh worker: a first put misses the cache (a warning) and exports it;
// a second, with mode max, reuses the builder stage, which is not in the
// final image (inline cache cannot do that): CACHED, and the artifact it
// made is the first put's; with mode min the builder stage runs again. A
// cache registry that refuses pushes is a warning after the push, or, with
// cache_required, a failed put that pushed nothing.
func TestImageRegistryCache(t *testing.T) {
	imageTar := imageForTest(t)
	seed := testenv.StartRegistry(t, testenv.RegistryOptions{NoAuth: true})
	baseDigest := seed.Push(t, "cache/base:1", testenv.BusyboxImage(t, testenv.ImageOptions{})).String()
	seed.Stop()
	roDir := t.TempDir()

	testenv.LockDockerd(t)
	e := startEnv(t, t.Context(), imageTar)
	const user, pass = "concourse", "e2e-secret-c4c8"
	reg := e.startRegistry(registryOpts{Alias: "registry", Storage: filepath.Join(seed.Dir, "data"), Username: user, Password: pass})
	e.startRegistry(registryOpts{Alias: "roregistry", Storage: roDir, ReadOnly: true})
	source := func(repo string) map[string]any {
		return map[string]any{"repository": "registry:5000/" + repo, "username": user, "password": pass,
			"insecure_registries": []string{"registry:5000", "roregistry:5000"}, "debug": os.Getenv("CACHE_DEBUG") != ""}
	}

	srcDir := t.TempDir()
	baseDir := filepath.Join(srcDir, "base")
	if err := os.Mkdir(baseDir, 0o755); err != nil {
		t.Fatal(err)
	}
	baseSource := source("cache/base")
	baseSource["tag"] = "1"
	r := e.run(step{
		Cmd:   []string{"/opt/resource/in", "/tmp/build/get"},
		Req:   map[string]any{"source": baseSource, "version": map[string]any{"digest": baseDigest}, "params": map[string]any{"save": true}},
		Binds: []mount.Mount{{Type: mount.TypeBind, Source: baseDir, Target: "/tmp/build/get"}},
	})
	requireOK(t, "in", r)
	// Nothing can pull the base from here on: every put loads it.
	reg.stop()
	if err := os.RemoveAll(filepath.Join(seed.Dir, "data/docker/registry/v2/repositories/cache/base")); err != nil {
		t.Fatal(err)
	}
	reg.start()

	// The builder stage takes a while and makes an artifact no second
	// run makes the same: only a cache can give it again. The final stage
	// changes on every put (app/change) before it copies the artifact, so
	// a cache of the final image's layers alone (min, inline) cannot
	// skip the builder stage.
	writeTestFile(t, filepath.Join(srcDir, "app/Dockerfile"), []byte(`FROM registry:5000/cache/base:1 AS builder
RUN sleep 3 && cat /proc/sys/kernel/random/uuid > /artifact
FROM registry:5000/cache/base:1
COPY change /change
COPY --from=builder /artifact /artifact
RUN echo final > /final
`))
	puts := 0
	put := func(t *testing.T, repo string, params map[string]any) stepResult {
		t.Helper()
		puts++
		writeTestFile(t, filepath.Join(srcDir, "app/change"), fmt.Appendf(nil, "put %d\n", puts))
		params["build"], params["load_base"] = "app", "base"
		return e.run(step{
			Cmd:   []string{"/opt/resource/out", "/tmp/build/put"},
			Req:   map[string]any{"source": source(repo), "params": params},
			Binds: []mount.Mount{{Type: mount.TypeBind, Source: srcDir, Target: "/tmp/build/put"}},
		})
	}
	artifact := func(t *testing.T, repo, digest string) string {
		t.Helper()
		dir := t.TempDir()
		r := e.run(step{
			Cmd:   []string{"/opt/resource/in", "/tmp/build/get"},
			Req:   map[string]any{"source": source(repo), "version": map[string]any{"digest": digest}},
			Binds: []mount.Mount{{Type: mount.TypeBind, Source: dir, Target: "/tmp/build/get"}},
		})
		requireOK(t, "in", r)
		b, err := os.ReadFile(filepath.Join(dir, "rootfs/artifact"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	const builderRun = "[builder 2/2] RUN sleep 3"

	for _, mode := range []string{"max", "min"} {
		t.Run("mode "+mode, func(t *testing.T) {
			cache := "registry:5000/cache/app-cache:" + mode
			first := put(t, "cache/app", map[string]any{"cache_repository": cache, "cache_mode": mode})
			requireOK(t, "first put", first)
			requireClean(t, first)
			if !strings.Contains(first.Stderr, "no build cache could be read from "+cache) {
				t.Errorf("the first put did not warn of the cache miss:\n%s", first.Stderr)
			}
			if got := stepEnd(first.Stderr, builderRun); got != "DONE" {
				t.Errorf("first put: the builder's RUN ended %q, want DONE", got)
			}
			a1 := artifact(t, "cache/app", response(t, first).Version.Digest)

			second := put(t, "cache/app", map[string]any{"cache_repository": cache, "cache_mode": mode})
			requireOK(t, "second put", second)
			requireClean(t, second)
			a2 := artifact(t, "cache/app", response(t, second).Version.Digest)
			t.Logf("TIME mode %s: build %s on the first put, %s on the second (fresh daemon, cache from the registry)", mode,
				metaValue(t, first, "time build"), metaValue(t, second, "time build"))
			if strings.Contains(second.Stderr, "no build cache could be read") {
				t.Errorf("the second put found no cache:\n%s", second.Stderr)
			}
			want := map[string]string{"max": "CACHED", "min": "DONE"}[mode]
			if got := stepEnd(second.Stderr, builderRun); got != want {
				t.Errorf("second put: the builder's RUN ended %q, want %s:\n%s", got, want, second.Stderr)
			}
			if same := a1 == a2; same != (mode == "max") {
				t.Errorf("mode %s: artifacts %q and %q: the builder stage was reused: %v", mode, a1, a2, same)
			}
		})
	}

	// The put's build options on this path: a Dockerfile outside the
	// context, a target stage, build args, labels, a secret (masked in
	// the log), .dockerignore.
	t.Run("build options", func(t *testing.T) {
		const secret = "tok-9f3e1c77d2"
		writeTestFile(t, filepath.Join(srcDir, "ci/Dockerfile.opts"), []byte(`FROM registry:5000/cache/base:1 AS final
ARG GREETING
COPY . /ctx/
RUN --mount=type=secret,id=token test "$(cat /run/secrets/token)" = `+secret+` && echo "$GREETING" > /greeting && echo secret-ok > /secret
FROM final AS unused
RUN exit 1
`))
		writeTestFile(t, filepath.Join(srcDir, "opts/kept"), []byte("kept\n"))
		writeTestFile(t, filepath.Join(srcDir, "opts/skipped"), []byte("skipped\n"))
		writeTestFile(t, filepath.Join(srcDir, "opts/.dockerignore"), []byte("skipped\n"))
		r := e.run(step{
			Cmd: []string{"/opt/resource/out", "/tmp/build/put"},
			Req: map[string]any{"source": source("cache/opts"), "params": map[string]any{
				"build": "opts", "dockerfile": "ci/Dockerfile.opts", "target_name": "final", "load_base": "base",
				"build_args": map[string]any{"GREETING": "hello $BUILD_ID"}, "labels": map[string]any{"team": "cache"},
				"secrets":          map[string]any{"token": map[string]any{"value": secret}},
				"cache_repository": "registry:5000/cache/opts-cache"}},
			Env:   []string{"BUILD_ID=42"},
			Binds: []mount.Mount{{Type: mount.TypeBind, Source: srcDir, Target: "/tmp/build/put"}},
		})
		requireOK(t, "put with build options", r)
		if strings.Contains(r.Stderr, secret) {
			t.Errorf("the secret is in the put's log")
		}
		dir := t.TempDir()
		g := e.run(step{
			Cmd:   []string{"/opt/resource/in", "/tmp/build/get"},
			Req:   map[string]any{"source": source("cache/opts"), "version": map[string]any{"digest": response(t, r).Version.Digest}},
			Binds: []mount.Mount{{Type: mount.TypeBind, Source: dir, Target: "/tmp/build/get"}},
		})
		requireOK(t, "in", g)
		for file, want := range map[string]string{"greeting": "hello 42", "secret": "secret-ok", "ctx/kept": "kept"} {
			if b, err := os.ReadFile(filepath.Join(dir, "rootfs", file)); err != nil || strings.TrimSpace(string(b)) != want {
				t.Errorf("/%s: %q, %v; want %q", file, b, err, want)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "rootfs/ctx/skipped")); err == nil {
			t.Errorf(".dockerignore was not applied: /ctx/skipped is in the image")
		}
		if l := inspectLabels(t, dir); l["team"] != "cache" {
			t.Errorf("labels %v in docker_inspect.json, want team=cache", l)
		}
	})

	t.Run("export refused", func(t *testing.T) {
		cache := "roregistry:5000/cache/app-cache"
		r := put(t, "cache/warned", map[string]any{"cache_repository": cache})
		requireOK(t, "put with a read-only cache registry", r)
		requireClean(t, r)
		pushed := response(t, r).Version.Digest
		if vs := e.check(t, source("cache/warned")); len(vs) != 1 || vs[0].Digest != pushed {
			t.Fatalf("check cache/warned: %v, want [%s]", vs, pushed)
		}
		warn := "the image is pushed, but exporting the build cache to " + cache + ":buildcache failed"
		if i, j := strings.Index(r.Stderr, warn), strings.Index(r.Stderr, "push: straight to the registry"); i < 0 || i < j {
			t.Errorf("no warning %q after the push:\n%s", warn, r.Stderr)
		}

		r = put(t, "cache/required", map[string]any{"cache_repository": cache, "cache_required": true})
		if r.Code == 0 {
			t.Fatalf("put with cache_required and a read-only cache registry succeeded:\n%s", r.Stderr)
		}
		requireClean(t, r)
		if !strings.Contains(r.Stderr, "exporting the build cache to "+cache+":buildcache failed, and params.cache_required is set, so nothing is pushed") {
			t.Errorf("error does not say the cache export failed:\n%s", lastLines(r.Stderr, 10))
		}
		if vs := e.check(t, source("cache/required")); len(vs) != 0 {
			t.Errorf("cache/required was pushed: %v", vs)
		}
	})
}

// ansi is a terminal colour sequence (the log's level words).
var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

// stepEnd is how BuildKit's step whose header contains name ended in a
// put's log: "CACHED", "DONE", "ERROR" or "" (not found).
func stepEnd(stderr, name string) string {
	n := ""
	for _, l := range scanLines(ansi.ReplaceAllString(stderr, "")) {
		_, msg, ok := strings.Cut(l, " #")
		if !ok {
			continue
		}
		num, rest, _ := strings.Cut(msg, " ")
		switch {
		case n == "" && strings.Contains(rest, name):
			n = num
		case n != "" && num == n && rest == "CACHED":
			return "CACHED"
		case n != "" && num == n && strings.HasPrefix(rest, "DONE "):
			return "DONE"
		case n != "" && num == n && strings.HasPrefix(l, "ERROR"):
			return "ERROR"
		}
	}
	return ""
}

// metaValue is a put's response metadata field.
func metaValue(t *testing.T, r stepResult, name string) string {
	t.Helper()
	for _, m := range response(t, r).Metadata {
		if m.Name == name {
			return m.Value
		}
	}
	return fmt.Sprintf("(no %q in the metadata)", name)
}

// inspectLabels are the labels of the image a get wrote into dir, from its
// docker_inspect.json.
func inspectLabels(t *testing.T, dir string) map[string]string {
	t.Helper()
	var inspect []struct {
		Config struct{ Labels map[string]string }
	}
	raw, err := os.ReadFile(filepath.Join(dir, "docker_inspect.json"))
	if err == nil {
		err = json.Unmarshal(raw, &inspect)
	}
	if err != nil || len(inspect) != 1 {
		t.Fatalf("docker_inspect.json %s: %v", raw, err)
	}
	return inspect[0].Config.Labels
}
