package test

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/pkg/resource"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// runOut runs out in-process with an isolated daemon: no bridge or iptables
// on the test host, RUN steps without network.
func runOut(t *testing.T, srcDir string, req map[string]any) result {
	t.Helper()
	return runOutHooked(t, srcDir, req, nil)
}

// runOutHooked is runOut with hook adjusting the put's test hooks.
func runOutHooked(t *testing.T, srcDir string, req map[string]any, hook func(*resource.Hooks)) result {
	t.Helper()
	if params, ok := req["params"].(map[string]any); ok && builder != nil {
		if _, set := params["docker_buildkit"]; !set {
			params["docker_buildkit"] = *builder
		}
	}
	unlock := testenv.LockDockerd(t)
	defer unlock()
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var out, errb strings.Builder
	env := resource.Env{Stdin: strings.NewReader(string(b)), Stdout: &out, Stderr: &errb, Args: []string{"out", srcDir}}
	env.Hooks.Daemon = func(o *daemon.Options) { o.Isolated = true }
	env.Hooks.BuildNetwork = "none"
	if hook != nil {
		hook(&env.Hooks)
	}
	err = resource.Out(t.Context(), env)
	return result{stdout: out.String(), stderr: errb.String(), err: err}
}

func putOK(t *testing.T, srcDir string, req map[string]any) protocol.Response {
	t.Helper()
	r := runOut(t, srcDir, req)
	if r.err != nil {
		t.Fatalf("out failed: %v\nstderr:\n%s", r.err, r.stderr)
	}
	if testing.Verbose() {
		t.Logf("out's log:\n%s", r.stderr)
	}
	var resp protocol.Response
	if err := json.Unmarshal([]byte(r.stdout), &resp); err != nil {
		t.Fatalf("stdout %q: %v", r.stdout, err)
	}
	return resp
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPutSeedScenario is the product: the base is fetched once with
// save: true, removed from the registry, and builds on it still work
// because load_base loads it from disk.
func TestPutSeedScenario(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	baseDigest := reg.Push(t, "team/base:1.0", testenv.BusyboxImage(t, testenv.ImageOptions{})).String()

	srcDir := t.TempDir()
	getOK(t, filepath.Join(srcDir, "base"), map[string]any{
		"source": source(reg, "team/base", map[string]any{"tag": "1.0"}), "version": map[string]any{"digest": baseDigest},
		"params": map[string]any{"save": true},
	})
	reg.Delete(t, "team/base@"+baseDigest) // nothing may pull it from now on

	writeFiles(t, srcDir, map[string]string{
		"app/Dockerfile":  "FROM " + reg.Host + "/team/base:1.0\nARG GREETING\nRUN test \"$GREETING\" = hello && echo built > /built\nLABEL stage=final\n",
		"app/ignored.txt": "x", "app/.dockerignore": "ignored.txt\n",
		"version": "2.3.4\n",
		"more":    "extra  stable\n",
	})
	resp := putOK(t, srcDir, map[string]any{
		"source": source(reg, "team/app", nil),
		"params": map[string]any{
			"build": "app", "load_base": "base", "build_args": map[string]any{"GREETING": "hello"},
			"labels": map[string]any{"built-by": "test"}, "tag_file": "version", "tag_prefix": "v",
			"additional_tags": "more", "tag_as_latest": true,
		},
	})
	for _, tag := range []string{"v2.3.4", "extra", "stable", "latest"} {
		desc, err := remote.Head(reg.Ref(t, "team/app:"+tag), reg.RemoteOptions()...)
		if err != nil {
			t.Fatalf("tag %s not pushed: %v", tag, err)
		}
		if desc.Digest.String() != resp.Version.Digest {
			t.Errorf("tag %s is %s, response says %s", tag, desc.Digest, resp.Version.Digest)
		}
	}
	img, err := remote.Image(reg.Ref(t, "team/app:v2.3.4"), reg.RemoteOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigFile()
	if cfg.Config.Labels["built-by"] != "test" || cfg.Config.Labels["stage"] != "final" {
		t.Errorf("labels %v", cfg.Config.Labels)
	}
	meta := map[string]string{}
	for _, m := range resp.Metadata {
		meta[m.Name] = m.Value
	}
	id, _ := img.ConfigName()
	if meta["image"] != id.Hex[:12] || meta["tags"] != "v2.3.4 extra stable latest" || meta["time total"] == "" {
		t.Errorf("metadata %v", resp.Metadata)
	}
}

func TestPutErrorsPushNothing(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	srcDir := t.TempDir()
	writeFiles(t, srcDir, map[string]string{
		"ok/Dockerfile":   "FROM scratch\n",
		"fail/Dockerfile": "FROM " + reg.Host + "/none:1\n",
		"bad-args.json":   "{not json",
		"nobase/image-id": "sha256:x",
	})
	cases := []struct {
		name   string
		params map[string]any
		want   string
	}{
		{"no image source", map[string]any{}, "must specify build, load, load_file, import_file, or pull_repository params"},
		{"missing Dockerfile", map[string]any{"build": "ok", "dockerfile": "nope/Dockerfile"}, "It doesn't appear that given Dockerfile"},
		{"missing load_base files", map[string]any{"build": "ok", "load_base": "nobase"}, `has no "image" file — did the get have params: {save: true}?`},
		{"malformed build_args_file", map[string]any{"build": "ok", "build_args_file": "bad-args.json"}, "Failed to parse build_args_file (bad-args.json)"},
		{"missing tag file", map[string]any{"build": "ok", "tag_file": "nope"}, "tag file 'nope' does not exist"},
		{"missing additional tags", map[string]any{"build": "ok", "additional_tags": "nope"}, "additional tags file 'nope' does not exist"},
		{"load_file without repository", map[string]any{"load_file": "bad-args.json"}, "must specify load_repository param"},
		{"secrets with the classic builder", map[string]any{"build": "ok", "docker_buildkit": 0, "secrets": map[string]any{"s": map[string]any{"env": "HOME"}}}, "params.secrets need BuildKit"},
		{"FROM image missing", map[string]any{"build": "fail"}, "none:1"},
		{"cache_repository with the classic builder", map[string]any{"build": "ok", "docker_buildkit": 0, "cache_repository": reg.Host + "/errs/cache"}, "params.cache_repository needs BuildKit"},
		{"cache_repository without a build", map[string]any{"pull_repository": reg.Host + "/none", "cache_repository": reg.Host + "/errs/cache"}, "params.cache_repository is a build cache, but this put takes its image from params.pull_repository"},
		// The host's dockerd is 20.10: no containerd image store.
		{"cache_repository on a classic store", map[string]any{"build": "ok", "cache_repository": reg.Host + "/errs/cache"}, "params.cache_repository and params.platforms need dockerd's containerd image store (Docker 24 or later), but dockerd 20.10"},
		{"platforms on a classic store", map[string]any{"build": "ok", "platforms": []string{"linux/amd64", "linux/arm64"}}, "params.cache_repository and params.platforms need dockerd's containerd image store"},
		{"platforms with the classic builder", map[string]any{"build": "ok", "docker_buildkit": 0, "platforms": []string{"linux/amd64"}}, "params.platforms needs BuildKit"},
		{"platforms without a build", map[string]any{"pull_repository": reg.Host + "/none", "platforms": []string{"linux/amd64"}}, "params.platforms builds the image for each platform, but this put takes its image from params.pull_repository"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runOut(t, srcDir, map[string]any{"source": source(reg, "errs/app", nil), "params": c.params})
			if r.err == nil || !strings.Contains(r.err.Error(), c.want) {
				t.Fatalf("err %v, want %q\n%s", r.err, c.want, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q", r.stdout)
			}
		})
	}
	if _, err := remote.Head(reg.Ref(t, "errs/app:latest"), reg.RemoteOptions()...); err == nil {
		t.Error("a failed put pushed errs/app:latest")
	}
}

// TestPutDaemonTLS: the target registry lives on a test host of our own with
// a CA of its own and mutual TLS, so dockerd must use ca_certs and
// client_certs (through certs.d) both to pull FROM and to push.
func TestPutDaemonTLS(t *testing.T) {
	nh := testenv.NewNetHost(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{NetHost: nh, ClientCA: testenv.NewCA(t)})
	reg.Push(t, "tls/base:1", testenv.BusyboxImage(t, testenv.ImageOptions{}))
	srcDir := t.TempDir()
	writeFiles(t, srcDir, map[string]string{"app/Dockerfile": "FROM " + reg.Host + "/tls/base:1\nRUN touch /built\n"})
	certs := map[string]any{
		"ca_certs":     []map[string]any{{"domain": reg.Host, "cert": string(reg.CA.CertPEM)}},
		"client_certs": []map[string]any{{"domain": reg.Host, "cert": string(reg.ClientCertPEM), "key": string(reg.ClientKeyPEM)}},
	}
	resp := putOK(t, srcDir, map[string]any{"source": source(reg, "tls/app", certs), "params": map[string]any{"build": "app"}})
	desc, err := remote.Head(reg.Ref(t, "tls/app:latest"), reg.RemoteOptions()...)
	if err != nil || desc.Digest.String() != resp.Version.Digest {
		t.Fatalf("pushed %v, registry has %v (%v)", resp.Version.Digest, desc, err)
	}

	delete(certs, "client_certs")
	r := runOut(t, srcDir, map[string]any{"source": source(reg, "tls/app2", certs), "params": map[string]any{"build": "app"}})
	if r.err == nil {
		t.Fatal("a put without the client certificate succeeded")
	}
	t.Logf("without client_certs: %v", r.err)
}

func TestPutImageSources(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	base := testenv.BusyboxImage(t, testenv.ImageOptions{Labels: map[string]string{"from": "base"}})
	baseDigest := reg.Push(t, "src/base:1", base).String()
	baseID, _ := base.ConfigName()
	srcDir := t.TempDir()
	getOK(t, filepath.Join(srcDir, "saved"), map[string]any{
		"source": source(reg, "src/base", map[string]any{"tag": "1"}), "version": map[string]any{"digest": baseDigest},
		"params": map[string]any{"save": true, "rootfs": true},
	})
	pushedID := func(repoTag string) string {
		img, err := remote.Image(reg.Ref(t, repoTag), reg.RemoteOptions()...)
		if err != nil {
			t.Fatalf("%s: %v", repoTag, err)
		}
		id, _ := img.ConfigName()
		return id.String()
	}

	t.Run("load pushes the saved image as is", func(t *testing.T) {
		putOK(t, srcDir, map[string]any{"source": source(reg, "src/loaded", nil), "params": map[string]any{"load": "saved"}})
		if got := pushedID("src/loaded:latest"); got != baseID.String() {
			t.Errorf("pushed %s, want %s", got, baseID)
		}
	})
	t.Run("load_file with load_repository and load_tag", func(t *testing.T) {
		putOK(t, srcDir, map[string]any{"source": source(reg, "src/file", map[string]any{"tag": 7}), "params": map[string]any{
			"load_file": "saved/image", "load_repository": reg.Host + "/src/base", "load_tag": 1}})
		if got := pushedID("src/file:7"); got != baseID.String() {
			t.Errorf("pushed %s, want %s", got, baseID)
		}
	})
	t.Run("import_file", func(t *testing.T) {
		putOK(t, srcDir, map[string]any{"source": source(reg, "src/imported", nil), "params": map[string]any{"import_file": "saved/rootfs.tar"}})
		img, err := remote.Image(reg.Ref(t, "src/imported:latest"), reg.RemoteOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		if layers, _ := img.Layers(); len(layers) != 1 {
			t.Errorf("an imported image has one layer, got %d", len(layers))
		}
	})
	t.Run("pull_repository (deprecated)", func(t *testing.T) {
		r := runOut(t, srcDir, map[string]any{"source": source(reg, "src/pulled", nil), "params": map[string]any{"pull_repository": reg.Host + "/src/base", "pull_tag": "1"}})
		if r.err != nil {
			t.Fatalf("%v\n%s", r.err, r.stderr)
		}
		if !strings.Contains(r.stderr, "deprecated") || pushedID("src/pulled:latest") != baseID.String() {
			t.Errorf("stderr %s", r.stderr)
		}
	})
	t.Run("several sources: the first wins, with a warning", func(t *testing.T) {
		writeFiles(t, srcDir, map[string]string{"never/Dockerfile": "FROM scratch\nLABEL x=y\n"})
		r := runOut(t, srcDir, map[string]any{"source": source(reg, "src/prio", nil), "params": map[string]any{"load": "saved", "build": "never"}})
		if r.err != nil {
			t.Fatalf("%v\n%s", r.err, r.stderr)
		}
		if !strings.Contains(r.stderr, "ignoring params.build") || pushedID("src/prio:latest") != baseID.String() {
			t.Errorf("stderr %s", r.stderr)
		}
	})
	t.Run("load_base whose image does not match image-id", func(t *testing.T) {
		bad := filepath.Join(srcDir, "bad")
		os.MkdirAll(bad, 0o755)
		for _, f := range []string{"image", "repository", "tag"} {
			b, _ := os.ReadFile(filepath.Join(srcDir, "saved", f))
			os.WriteFile(filepath.Join(bad, f), b, 0o644)
		}
		os.WriteFile(filepath.Join(bad, "image-id"), []byte("sha256:"+strings.Repeat("1", 64)), 0o644)
		writeFiles(t, srcDir, map[string]string{"b/Dockerfile": "FROM " + reg.Host + "/src/base:1\n"})
		r := runOut(t, srcDir, map[string]any{"source": source(reg, "src/mismatch", nil), "params": map[string]any{"build": "b", "load_base": "bad"}})
		if r.err == nil || !strings.Contains(r.err.Error(), strings.Repeat("1", 12)) {
			t.Fatalf("err %v", r.err)
		}
		if _, err := remote.Head(reg.Ref(t, "src/mismatch:latest"), reg.RemoteOptions()...); err == nil {
			t.Error("pushed despite the mismatch")
		}
	})
}

// builder, when set, is the docker_buildkit runOut gives puts that do not
// set it: tests that must hold under both builders run twice.
var builder *int

// bothBuilders runs f once with each builder.
func bothBuilders(t *testing.T, f func(t *testing.T, buildkit bool)) {
	for _, b := range []int{0, 1} {
		name := map[int]string{0: "classic", 1: "buildkit"}[b]
		t.Run(name, func(t *testing.T) {
			builder = &b
			defer func() { builder = nil }()
			f(t, b == 1)
		})
	}
}

func TestPutBuildOptions(t *testing.T) { bothBuilders(t, testPutBuildOptions) }

func testPutBuildOptions(t *testing.T, buildkit bool) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	reg.Push(t, "opt/base:1", testenv.BusyboxImage(t, testenv.ImageOptions{}))
	srcDir := t.TempDir()
	from := "FROM " + reg.Host + "/opt/base:1"
	writeFiles(t, srcDir, map[string]string{
		"multi/Dockerfile":   from + " AS first\nLABEL stage=first\n" + from + " AS second\nRUN false\n",
		"args/Dockerfile":    from + "\nARG A\nARG B\nARG C\nRUN test \"$A\" = from-file && test \"$B\" = 1.10 && test \"$C\" = \"job-42 \\$HOME\"\n",
		"args.json":          `{"A": "from-file", "B": "overridden"}`,
		"labels.json":        `{"team": "core", "n": 3}`,
		"fail/Dockerfile":    from + "\nRUN echo about to fail && exit 3\n",
		"cache/Dockerfile":   from + "\nRUN echo cached > /c\n",
		"ctx/Dockerfile.alt": from + "\nCOPY . /ctx\nRUN test -e /ctx/kept && test ! -e /ctx/Dockerfile.alt\n",
		"ctx/sub/kept":       "x",
		"docker/Dockerfile":  from + "\nCOPY kept /kept\n",
		"docker/kept":        "x",
	})
	t.Setenv("BUILD_JOB_NAME", "job-42")

	t.Run("target_name builds the named stage", func(t *testing.T) {
		putOK(t, srcDir, map[string]any{"source": source(reg, "opt/multi", nil), "params": map[string]any{"build": "multi", "target_name": "first"}})
		img, _ := remote.Image(reg.Ref(t, "opt/multi:latest"), reg.RemoteOptions()...)
		cfg, _ := img.ConfigFile()
		if cfg.Config.Labels["stage"] != "first" {
			t.Errorf("labels %v", cfg.Config.Labels)
		}
	})
	t.Run("build_args, build_args_file, expansion, labels_file", func(t *testing.T) {
		putOK(t, srcDir, map[string]any{"source": source(reg, "opt/args", nil), "params": map[string]any{
			"build": "args", "build_args_file": "args.json", "labels_file": "labels.json",
			"build_args": map[string]any{"B": json.Number("1.10"), "C": "$BUILD_JOB_NAME $HOME"},
		}})
		img, _ := remote.Image(reg.Ref(t, "opt/args:latest"), reg.RemoteOptions()...)
		cfg, _ := img.ConfigFile()
		if cfg.Config.Labels["team"] != "core" || cfg.Config.Labels["n"] != "3" {
			t.Errorf("labels %v", cfg.Config.Labels)
		}
	})
	t.Run("dockerfile outside the build context", func(t *testing.T) {
		putOK(t, srcDir, map[string]any{"source": source(reg, "opt/ctx", nil), "params": map[string]any{"build": "ctx/sub", "dockerfile": "ctx/Dockerfile.alt"}})
	})
	t.Run("a failing RUN step pushes nothing", func(t *testing.T) {
		r := runOut(t, srcDir, map[string]any{"source": source(reg, "opt/fail", nil), "params": map[string]any{"build": "fail"}})
		if r.err == nil || !strings.Contains(r.err.Error(), "about to fail") {
			t.Fatalf("err %v", r.err)
		}
		if _, err := remote.Head(reg.Ref(t, "opt/fail:latest"), reg.RemoteOptions()...); err == nil {
			t.Error("pushed after a failed build")
		}
	})
	t.Run("cache miss is a warning, cache hit reuses layers", func(t *testing.T) {
		r := runOut(t, srcDir, map[string]any{"source": source(reg, "opt/cache", nil), "params": map[string]any{"build": "cache", "cache": true}})
		if r.err != nil || !strings.Contains(r.stderr, "building without it") {
			t.Fatalf("miss: %v\n%s", r.err, r.stderr)
		}
		r = runOut(t, srcDir, map[string]any{"source": source(reg, "opt/cache", nil), "params": map[string]any{"build": "cache", "cache": true, "cache_tag": "latest"}})
		if r.err != nil {
			t.Fatalf("hit: %v\n%s", r.err, r.stderr)
		}
		if hit := strings.Contains(r.stderr, "Using cache") || cachedStep(r.stderr, "RUN echo cached"); !hit {
			t.Fatalf("no cache hit:\n%s", r.stderr)
		}
	})
	t.Run("deprecated tag param and source tag", func(t *testing.T) {
		writeFiles(t, srcDir, map[string]string{"tagfile": "from-tag-param\n"})
		r := runOut(t, srcDir, map[string]any{"source": source(reg, "opt/tags", map[string]any{"tag": "src"}), "params": map[string]any{"build": "docker", "tag": "tagfile"}})
		if r.err != nil || !strings.Contains(r.stderr, "params.tag is deprecated") {
			t.Fatalf("%v\n%s", r.err, r.stderr)
		}
		if _, err := remote.Head(reg.Ref(t, "opt/tags:from-tag-param"), reg.RemoteOptions()...); err != nil {
			t.Error(err)
		}
		putOK(t, srcDir, map[string]any{"source": source(reg, "opt/tags", map[string]any{"tag": "src"}), "params": map[string]any{"build": "docker"}})
		if _, err := remote.Head(reg.Ref(t, "opt/tags:src"), reg.RemoteOptions()...); err != nil {
			t.Error(err)
		}
	})
}

func TestPutDaemonStartFailure(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	srcDir := t.TempDir()
	writeFiles(t, srcDir, map[string]string{"app/Dockerfile": "FROM scratch\n"})
	fake := filepath.Join(t.TempDir(), "dockerd")
	os.WriteFile(fake, []byte("#!/bin/sh\necho 'level=fatal msg=\"pretend the daemon cannot start\"' >&2\nsleep 30\n"), 0o755)
	b, _ := json.Marshal(map[string]any{"source": source(reg, "fail/app", map[string]any{"startup_timeout": 2}), "params": map[string]any{"build": "app"}})
	var out, errb strings.Builder
	env := resource.Env{Stdin: strings.NewReader(string(b)), Stdout: &out, Stderr: &errb, Args: []string{"out", srcDir}}
	env.Hooks.Daemon = func(o *daemon.Options) { o.Isolated = true; o.Binary = fake }
	err := resource.Out(t.Context(), env)
	if err == nil || !strings.Contains(err.Error(), "Docker failed to start within 2 seconds. Consider increasing 'startup_timeout' in source configuration.") ||
		!strings.Contains(err.Error(), "pretend the daemon cannot start") {
		t.Fatalf("err %v\n%s", err, errb.String())
	}
}

// syncBuffer lets the test read the log while the put writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

// TestPutAbortStopsDaemon: Concourse aborts a build with SIGTERM, which
// cancels the put's context (resource.Main). The put must return promptly
// and stop its daemon; TestMain then finds nothing left behind.
func TestPutAbortStopsDaemon(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	reg.Push(t, "abort/base:1", testenv.BusyboxImage(t, testenv.ImageOptions{}))
	srcDir := t.TempDir()
	writeFiles(t, srcDir, map[string]string{"app/Dockerfile": "FROM " + reg.Host + "/abort/base:1\nRUN echo sleeping && sleep 120\n"})
	unlock := testenv.LockDockerd(t)
	defer unlock()

	b, _ := json.Marshal(map[string]any{"source": source(reg, "abort/app", nil), "params": map[string]any{"build": "app"}})
	var stderr syncBuffer
	env := resource.Env{Stdin: strings.NewReader(string(b)), Stdout: io.Discard, Stderr: &stderr, Args: []string{"out", srcDir}}
	env.Hooks.Daemon = func(o *daemon.Options) { o.Isolated = true }
	env.Hooks.BuildNetwork = "none"
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- resource.Out(ctx, env) }()

	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(stderr.String(), "sleeping") {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("the build never reached the sleep:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	aborted := time.Now()
	cancel()
	select {
	case err := <-done:
		t.Logf("out returned %v after the abort in %s", err, time.Since(aborted).Round(time.Millisecond))
		if err == nil {
			t.Error("an aborted put reported success")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("out did not return within 30 s of the abort")
	}
	if _, err := remote.Head(reg.Ref(t, "abort/app:latest"), reg.RemoteOptions()...); err == nil {
		t.Error("an aborted put pushed")
	}
}
