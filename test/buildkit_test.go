package test

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// imageFile reads one file from a pushed image's flattened filesystem.
func imageFile(t *testing.T, img v1.Image, path string) (string, bool) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	content, found := "", false
	for _, l := range layers { // later layers win
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimPrefix(h.Name, "./") == strings.TrimPrefix(path, "/") {
				b, _ := io.ReadAll(tr)
				content, found = string(b), true
			}
		}
		rc.Close()
	}
	return content, found
}

// imageContains reports whether marker appears anywhere in the image: its
// config, its manifest or any layer's uncompressed bytes.
func imageContains(t *testing.T, img v1.Image, marker string) string {
	t.Helper()
	if b, _ := img.RawConfigFile(); strings.Contains(string(b), marker) {
		return "config"
	}
	if b, _ := img.RawManifest(); strings.Contains(string(b), marker) {
		return "manifest"
	}
	layers, _ := img.Layers()
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if strings.Contains(string(b), marker) {
			d, _ := l.Digest()
			return "layer " + string(rune('0'+i)) + " " + d.String()
		}
	}
	return ""
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// pushAndSave pushes img as repo:tag and gets it with save: true into dir,
// a load_base folder as a pipeline's get makes it; it returns the digest.
func pushAndSave(t *testing.T, reg *testenv.Registry, repo, tag string, img v1.Image, dir string) string {
	t.Helper()
	digest := reg.Push(t, repo+":"+tag, img).String()
	getOK(t, dir, map[string]any{
		"source": source(reg, repo, map[string]any{"tag": tag}), "version": map[string]any{"digest": digest},
		"params": map[string]any{"save": true},
	})
	return digest
}

func pushedImage(t *testing.T, reg *testenv.Registry, ref string) v1.Image {
	t.Helper()
	img, err := remote.Image(reg.Ref(t, ref), reg.RemoteOptions()...)
	if err != nil {
		t.Fatalf("%s not pushed: %v", ref, err)
	}
	return img
}

func TestBuildKitSecrets(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	reg.Push(t, "bk/base:1", testenv.BusyboxImage(t, testenv.ImageOptions{}))
	srcDir := t.TempDir()
	// The value form is how a pipeline passes a credential: value:
	// ((npm_token)) arrives in the request, newline and all.
	const envMarker, fileMarker, valueMarker = "env-secret-7f3a9c21", "file-secret-52be0d84\n", "value-secret-0c9d3e17\n"
	t.Setenv("BK_TEST_TOKEN", envMarker)
	writeFiles(t, srcDir, map[string]string{
		"secret.txt": fileMarker,
		// cat prints the secrets into the build log: the log must mask them.
		"app/Dockerfile": "FROM " + reg.Host + "/bk/base:1\n" +
			"RUN --mount=type=secret,id=api-key.v1 --mount=type=secret,id=file-secret --mount=type=secret,id=npm_token " +
			"cat /run/secrets/api-key.v1 /run/secrets/file-secret /run/secrets/npm_token && " +
			"sha256sum /run/secrets/api-key.v1 /run/secrets/file-secret /run/secrets/npm_token | cut -d' ' -f1 > /sums\n",
	})
	r := runOut(t, srcDir, map[string]any{
		"source": source(reg, "bk/secrets", map[string]any{"debug": true}),
		"params": map[string]any{"build": "app", "secrets": map[string]any{
			"api-key.v1":  map[string]any{"env": "BK_TEST_TOKEN"},
			"file-secret": map[string]any{"source": "secret.txt"},
			"npm_token":   map[string]any{"value": valueMarker},
		}},
	})
	if r.err != nil {
		t.Fatalf("out: %v\n%s", r.err, r.stderr)
	}
	var resp protocol.Response
	if err := json.Unmarshal([]byte(r.stdout), &resp); err != nil {
		t.Fatalf("stdout %q: %v", r.stdout, err)
	}
	wantLog(t, "out", r.stderr, "build secrets: api-key.v1, file-secret, npm_token\n")
	img := pushedImage(t, reg, "bk/secrets:latest")
	sums, ok := imageFile(t, img, "/sums")
	if f := strings.Fields(sums); !ok || len(f) != 3 || f[0] != sha(envMarker) || f[1] != sha(fileMarker) || f[2] != sha(valueMarker) {
		t.Errorf("the RUN step did not see the secrets byte for byte: /sums = %q", sums)
	}
	for _, m := range []string{envMarker, strings.TrimSpace(fileMarker), strings.TrimSpace(valueMarker)} {
		if strings.Contains(r.stderr, m) {
			t.Errorf("secret %s is in the log:\n%s", m, r.stderr)
		}
		if where := imageContains(t, img, m); where != "" {
			t.Errorf("secret %s is in the image's %s", m, where)
		}
		if strings.Contains(resp.Version.Digest, m) {
			t.Errorf("secret in the response")
		}
	}
}

// TestLogsReadCleanly: what a person reads in fly. Lines are the coloured
// level word, one space and the message, never padded with trailing
// spaces; a failed BuildKit step says ERROR once; the push summary says in
// words which manifest format the image gets and why.
func TestLogsReadCleanly(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	srcDir := t.TempDir()
	baseDigest := pushAndSave(t, reg, "logs/base", "1", testenv.BusyboxImage(t, testenv.ImageOptions{}), filepath.Join(srcDir, "base"))
	from := "FROM " + reg.Host + "/logs/base:1\n"
	writeFiles(t, srcDir, map[string]string{
		"ok/Dockerfile":   from + "RUN echo short && echo a-much-longer-line-of-build-output-than-forty-four-columns\n",
		"fail/Dockerfile": from + "RUN echo about to fail && exit 3\n",
	})
	line := regexp.MustCompile(`^\x1b\[[0-9;]+m(DEBUG|INFO|WARNING|ERROR)\x1b\[0m .`)
	clean := func(t *testing.T, log string) {
		t.Helper()
		lines := strings.Split(strings.TrimSuffix(log, "\n"), "\n")
		if len(lines) < 10 {
			t.Fatalf("only %d log lines:\n%s", len(lines), log)
		}
		for _, l := range lines {
			if strings.TrimRight(l, " \t") != l || !line.MatchString(l) {
				t.Errorf("log line %q is padded or not \"LEVEL message\"", l)
			}
		}
	}
	for _, bk := range []int{1, 0} {
		t.Run(map[int]string{1: "buildkit", 0: "classic"}[bk], func(t *testing.T) {
			r := runOut(t, srcDir, map[string]any{"source": source(reg, "logs/app", map[string]any{"debug": true}),
				"params": map[string]any{"build": "ok", "load_base": "base", "docker_buildkit": bk}})
			if r.err != nil {
				t.Fatalf("out: %v\n%s", r.err, r.stderr)
			}
			clean(t, r.stderr)
			wantLog(t, "out", r.stderr, "\x1b[36mINFO\x1b[0m ", debugLine, "short\n", "a-much-longer-line-of-build-output-than-forty-four-columns\n",
				"push: writing a Docker image manifest, the base image's own format (the base folder's files rebuild its manifest exactly, digest "+baseDigest[:19]+")\n")
			if strings.Contains(r.stderr, "media types") {
				t.Errorf("the push summary speaks of media types:\n%s", r.stderr)
			}
		})
	}
	t.Run("a failed BuildKit step", func(t *testing.T) {
		r := runOut(t, srcDir, map[string]any{"source": source(reg, "logs/fail", nil), "params": map[string]any{"build": "fail", "load_base": "base", "docker_buildkit": 1}})
		if r.err == nil {
			t.Fatal("the build succeeded")
		}
		clean(t, r.stderr)
		// 20.10: "executor failed running [...]: exit code: 3"; 26.1:
		// "process ... did not complete successfully: exit code: 3".
		failed := regexp.MustCompile(`(?m)^\x1b\[31mERROR\x1b\[0m #\d+ \S.*exit code: 3$`)
		if !failed.MatchString(r.stderr) || strings.Contains(r.stderr, "ERROR:") {
			t.Errorf("want one ERROR line for the failed step, without a second ERROR:\n%s", r.stderr)
		}
		wantLog(t, "out", r.stderr, "about to fail\n")
	})
}

// TestBuildKitBuilds runs the put's build features under BuildKit: a loaded
// base satisfies FROM without a pull, target_name picks a stage, FROM images
// from another private registry authenticate through the session, a failing
// step reports its output, and inline cache makes the pushed image usable as
// cache.
func TestBuildKitBuilds(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	other := testenv.StartRegistry(t, testenv.RegistryOptions{Username: "other", Password: "other-pass-1b9e"})
	other.Push(t, "priv/base:2", testenv.BusyboxImage(t, labelled(t, "private")))
	srcDir := t.TempDir()
	baseDigest := pushAndSave(t, reg, "bk/base", "1", testenv.BusyboxImage(t, testenv.ImageOptions{}), filepath.Join(srcDir, "base"))
	reg.Delete(t, "bk/base@"+baseDigest) // only the loaded copy can satisfy FROM now
	from := "FROM " + reg.Host + "/bk/base:1"
	writeFiles(t, srcDir, map[string]string{
		"multi/Dockerfile":   from + " AS first\nRUN echo one > /stage\nLABEL stage=first\n" + from + " AS second\nRUN false\n",
		"private/Dockerfile": "FROM " + other.Host + "/priv/base:2\nRUN echo ok > /ok\n",
		"fail/Dockerfile":    from + "\nRUN echo about to fail && exit 3\n",
		"cache/Dockerfile":   from + "\nRUN echo cached > /c\nARG N\nRUN echo \"$N\" > /n\n",
	})
	bk := func(params map[string]any) map[string]any {
		params["docker_buildkit"] = 1
		return params
	}

	t.Run("load_base and target_name", func(t *testing.T) {
		putOK(t, srcDir, map[string]any{"source": source(reg, "bk/multi", nil),
			"params": bk(map[string]any{"build": "multi", "target_name": "first", "load_base": "base"})})
		img := pushedImage(t, reg, "bk/multi:latest")
		cfg, _ := img.ConfigFile()
		if s, _ := imageFile(t, img, "/stage"); cfg.Config.Labels["stage"] != "first" || s != "one\n" {
			t.Errorf("labels %v, /stage %q", cfg.Config.Labels, s)
		}
	})
	t.Run("FROM a private registry through the session's credentials", func(t *testing.T) {
		priv := map[string]any{"additional_private_registries": []any{
			map[string]any{"registry": other.Host, "username": other.Username, "password": other.Password}}}
		putOK(t, srcDir, map[string]any{"source": source(reg, "bk/private", priv), "params": bk(map[string]any{"build": "private"})})
		if s, _ := imageFile(t, pushedImage(t, reg, "bk/private:latest"), "/ok"); s != "ok\n" {
			t.Errorf("/ok = %q", s)
		}
		// Without them the same build fails: the credentials did the work.
		r := runOut(t, srcDir, map[string]any{"source": source(reg, "bk/private2", nil), "params": bk(map[string]any{"build": "private"})})
		if r.err == nil {
			t.Fatal("built FROM a private image without its credentials")
		}
		if strings.Contains(r.stderr, other.Password) || strings.Contains(r.err.Error(), other.Password) {
			t.Error("password leaked")
		}
	})
	t.Run("a failing RUN step reports its output and pushes nothing", func(t *testing.T) {
		r := runOut(t, srcDir, map[string]any{"source": source(reg, "bk/fail", nil), "params": bk(map[string]any{"build": "fail", "load_base": "base"})})
		if r.err == nil || !strings.Contains(r.err.Error(), "about to fail") || !strings.Contains(r.err.Error(), "RUN echo about to fail") {
			t.Fatalf("err %v", r.err)
		}
		if _, err := remote.Head(reg.Ref(t, "bk/fail:latest"), reg.RemoteOptions()...); err == nil {
			t.Error("pushed after a failed build")
		}
	})
	t.Run("inline cache: the pushed image is the next build's cache", func(t *testing.T) {
		params := func(n string) map[string]any {
			return bk(map[string]any{"build": "cache", "load_base": "base", "cache": true, "cache_tag": "latest",
				"build_args": map[string]any{"N": n}})
		}
		r := runOut(t, srcDir, map[string]any{"source": source(reg, "bk/cache", nil), "params": params("1")})
		if r.err != nil || !strings.Contains(r.stderr, "building without it") {
			t.Fatalf("first build: %v\n%s", r.err, r.stderr)
		}
		cfg, _ := pushedImage(t, reg, "bk/cache:latest").RawConfigFile()
		if !strings.Contains(string(cfg), "moby.buildkit.cache.v0") {
			t.Errorf("no inline cache metadata in the config: %s", cfg)
		}
		r = runOut(t, srcDir, map[string]any{"source": source(reg, "bk/cache", nil), "params": params("2")})
		if r.err != nil {
			t.Fatalf("second build: %v\n%s", r.err, r.stderr)
		}
		if !cachedStep(r.stderr, "RUN echo cached") || cachedStep(r.stderr, `RUN echo "$N"`) {
			t.Errorf("expected the first RUN cached and the second rebuilt:\n%s", r.stderr)
		}
		// BuildKit reads the cache from the registry: no daemon pull of the
		// whole image.
		if strings.Contains(r.stderr, "pulling "+reg.Host+"/bk/cache") {
			t.Errorf("the cache image was pulled through the daemon:\n%s", r.stderr)
		}
	})
}

// cachedStep reports whether the BuildKit log shows the step whose name
// contains step as CACHED.
func cachedStep(log, step string) bool {
	num := ""
	for _, l := range strings.Split(log, "\n") {
		f := strings.Fields(l)
		for i, w := range f {
			if strings.HasPrefix(w, "#") && i+1 < len(f) {
				if num == "" && strings.Contains(l, step) {
					num = w
				} else if num != "" && w == num && f[i+1] == "CACHED" {
					return true
				}
				break
			}
		}
	}
	return false
}

// TestBuildKitCacheFrom is the evidence behind the default builder: BuildKit
// uses a cache_from image only when it carries inline cache metadata. Images
// this resource builds with BuildKit carry it; images the classic builder
// made do not, so the first BuildKit build after switching runs uncached and
// says why, and the image it pushes is good cache from then on.
func TestBuildKitCacheFrom(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	reg.Push(t, "cf/base:1", testenv.BusyboxImage(t, testenv.ImageOptions{}))
	srcDir := t.TempDir()
	writeFiles(t, srcDir, map[string]string{
		"app/Dockerfile":   "FROM " + reg.Host + "/cf/base:1\nRUN echo slow step > /s\n",
		"empty/Dockerfile": "FROM scratch\nLABEL only=metadata\n",
	})
	put := func(repo string, buildkit int, cacheFrom ...string) result {
		params := map[string]any{"build": "app", "docker_buildkit": buildkit}
		if len(cacheFrom) > 0 {
			params["cache_from"] = cacheFrom
		}
		r := runOut(t, srcDir, map[string]any{"source": source(reg, repo, nil), "params": params})
		if r.err != nil {
			t.Fatalf("put %s: %v\n%s", repo, r.err, r.stderr)
		}
		return r
	}
	save := func(repo, dir string) {
		d, err := remote.Head(reg.Ref(t, repo+":latest"), reg.RemoteOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		getOK(t, filepath.Join(srcDir, dir), map[string]any{"source": source(reg, repo, nil),
			"version": map[string]any{"digest": d.Digest.String()}, "params": map[string]any{"save": true}})
	}

	put("cf/classic", 0)
	save("cf/classic", "classic")
	r := put("cf/from-classic", 1, "classic")
	if cachedStep(r.stderr, "RUN echo slow step") {
		t.Errorf("BuildKit used a classic-built image as cache; the README says it cannot:\n%s", r.stderr)
	}
	if !strings.Contains(r.stderr, "no BuildKit cache metadata") {
		t.Errorf("no warning about the unusable cache_from image:\n%s", r.stderr)
	}
	save("cf/from-classic", "bk")
	r = put("cf/from-bk", 1, "bk")
	if !cachedStep(r.stderr, "RUN echo slow step") {
		t.Errorf("BuildKit did not use a BuildKit-built cache_from image:\n%s", r.stderr)
	}
	// The classic builder keeps using classic-built images as cache.
	r = put("cf/classic2", 0, "classic")
	if !strings.Contains(r.stderr, "Using cache") {
		t.Errorf("the classic builder did not use its cache_from image:\n%s", r.stderr)
	}

	t.Run("an image with no layers is pushed", func(t *testing.T) {
		putOK(t, srcDir, map[string]any{"source": source(reg, "cf/empty", nil), "params": map[string]any{"build": "empty", "docker_buildkit": 1}})
		cfg, _ := pushedImage(t, reg, "cf/empty:latest").ConfigFile()
		if cfg.Config.Labels["only"] != "metadata" {
			t.Errorf("labels %v", cfg.Config.Labels)
		}
	})
}
