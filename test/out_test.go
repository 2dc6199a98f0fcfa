package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
		"app/Dockerfile": "FROM " + reg.Host + "/team/base:1.0\nARG GREETING\nRUN test \"$GREETING\" = hello && echo built > /built\nLABEL stage=final\n",
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
		{"buildkit not yet", map[string]any{"build": "ok", "docker_buildkit": 1}, "not implemented yet"},
		{"FROM image missing", map[string]any{"build": "fail"}, "none:1"},
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
