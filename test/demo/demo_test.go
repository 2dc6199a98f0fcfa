// Package demo is `make demo`: the seed scenario a newcomer can watch. A
// throwaway registry on loopback gets a generated base image; a get with
// save: true fetches it once; three puts build different Dockerfiles FROM
// it with load_base, never pulling it again. It also runs as a test.
package demo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/resource"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

func TestDemo(t *testing.T) {
	show := os.Getenv("DEMO") == "1"
	say := func(format string, a ...any) {
		if show {
			fmt.Printf("\n\x1b[1m==> "+format+"\x1b[0m\n", a...)
		}
	}
	logs := io.Discard
	if show {
		logs = os.Stdout
	}

	say("starting a throwaway registry on loopback (distribution 2.8, htpasswd auth)")
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	base := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{20 << 20}, Labels: map[string]string{"role": "base"}})
	baseDigest := reg.Push(t, "demo/base:1.0", base).String()
	say("pushed a generated base image %s/demo/base:1.0 (busybox + 20 MiB layer) as %s", reg.Host, baseDigest[:19])

	srcDir := t.TempDir()
	src := map[string]any{"repository": reg.Host + "/demo/base", "tag": "1.0", "username": reg.Username, "password": reg.Password}
	say("get with save: true — the one and only download of the base")
	run(t, resource.In, logs, map[string]any{"source": src, "version": map[string]any{"digest": baseDigest}, "params": map[string]any{"save": true}}, filepath.Join(srcDir, "base"))

	reg.Delete(t, "demo/base@"+baseDigest)
	say("deleted the base from the registry: from here on, nothing can pull it")

	apps := map[string]string{
		"api":    "FROM " + reg.Host + "/demo/base:1.0\nRUN echo api > /role\nLABEL app=api\n",
		"worker": "FROM " + reg.Host + "/demo/base:1.0\nRUN mkdir /jobs && echo worker > /role\nLABEL app=worker\n",
		"web":    "FROM " + reg.Host + "/demo/base:1.0 AS build\nRUN echo '<h1>hi</h1>' > /index.html\nFROM " + reg.Host + "/demo/base:1.0\nCOPY --from=build /index.html /www/index.html\nLABEL app=web\n",
	}
	for _, app := range []string{"api", "worker", "web"} {
		dir := filepath.Join(srcDir, app)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(apps[app]), 0o644); err != nil {
			t.Fatal(err)
		}
		say("put %s: private dockerd, load_base from disk, build, push", app)
		start := time.Now()
		out := run(t, resource.Out, logs, map[string]any{
			"source": map[string]any{"repository": reg.Host + "/demo/" + app, "username": reg.Username, "password": reg.Password},
			"params": map[string]any{"build": app, "load_base": "base"},
		}, srcDir)
		var resp struct {
			Version struct{ Digest string }
		}
		if err := json.Unmarshal(out, &resp); err != nil || !strings.HasPrefix(resp.Version.Digest, "sha256:") {
			t.Fatalf("put %s: %s %v", app, out, err)
		}
		say("put %s pushed %s/demo/%s@%s in %s", app, reg.Host, app, resp.Version.Digest[:19], time.Since(start).Round(10*time.Millisecond))
	}
	say("done: one download of the base, three builds on it, zero pulls")
}

// run executes a command in-process the way Concourse would call it; the
// daemon is isolated (no bridge, no iptables) because this runs on a host.
func run(t *testing.T, cmd resource.Command, logs io.Writer, req map[string]any, arg string) []byte {
	t.Helper()
	b, _ := json.Marshal(req)
	var stdout, stderr bytes.Buffer
	env := resource.Env{Stdin: bytes.NewReader(b), Stdout: &stdout, Stderr: io.MultiWriter(&stderr, logs), Args: []string{"resource", arg}}
	env.Hooks.Daemon = func(o *daemon.Options) { o.Isolated = true }
	env.Hooks.BuildNetwork = "none"
	unlock := testenv.LockDockerd(t)
	defer unlock()
	if err := cmd(t.Context(), env); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	return stdout.Bytes()
}
