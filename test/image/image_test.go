package image

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/docker/api/types/mount"
)

// TestImage builds the resource's image from the top-level Dockerfile (on
// local bases; cached between local runs) and runs it the way Concourse
// does, on a private dockerd in a throwaway network namespace: check, in
// and out in privileged containers with /scratch, talking to registries
// that run as containers on the same user-defined network.
func TestImage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the image test needs root: debootstrap, dockerd and network namespaces")
	}
	ctx := t.Context()
	repo, err := RepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	imageTar := builtImage(t, ctx, repo)
	t.Logf("TIME image ready (built or cached) in %s", time.Since(t0).Round(time.Second))

	// Seed the registries' storage through loopback registries, then serve
	// the same storage from containers on the outer daemon's network.
	seed := testenv.StartRegistry(t, testenv.RegistryOptions{NoAuth: true})
	base := testenv.BusyboxImage(t, testenv.ImageOptions{Labels: map[string]string{"role": "base"}})
	baseDigest := seed.Push(t, "team/base:1.0", base).String()
	zstdImg := testenv.BusyboxImage(t, testenv.ImageOptions{Compression: "zstd", RandomLayers: []int64{1 << 20}})
	zstdDigest := seed.Push(t, "zstd/base:1", zstdImg).String()
	seed.Stop()
	seedTLS := testenv.StartRegistry(t, testenv.RegistryOptions{NoAuth: true})
	seedTLS.Push(t, "tls/base:1", base)
	seedTLS.Stop()

	// Held until cleanup, after the outer daemon's stop (cleanups run last
	// in, first out).
	testenv.LockDockerd(t)
	t1 := time.Now()
	e := startEnv(t, ctx, imageTar)
	const user, pass = "concourse", "e2e-secret-8e1f"
	reg := e.startRegistry(registryOpts{Alias: "registry", Storage: filepath.Join(seed.Dir, "data"), Username: user, Password: pass})
	t.Logf("TIME outer daemon, image load and registry in %s", time.Since(t1).Round(100*time.Millisecond))

	source := func(repo string, extra map[string]any) map[string]any {
		s := map[string]any{"repository": "registry:5000/" + repo, "username": user, "password": pass, "insecure_registries": []string{"registry:5000"}}
		for k, v := range extra {
			s[k] = v
		}
		return s
	}
	check := func(t *testing.T, src map[string]any) []protocol.Version {
		t.Helper()
		r := e.run(step{Cmd: []string{"/opt/resource/check"}, Req: map[string]any{"source": src}})
		requireOK(t, "check", r)
		var vs []protocol.Version
		if err := json.Unmarshal([]byte(r.Stdout), &vs); err != nil {
			t.Fatalf("check stdout %q: %v", r.Stdout, err)
		}
		return vs
	}
	get := func(t *testing.T, dir string, src map[string]any, digest string, params map[string]any) protocol.Response {
		t.Helper()
		r := e.run(step{
			Cmd:   []string{"/opt/resource/in", "/tmp/build/get"},
			Req:   map[string]any{"source": src, "version": map[string]any{"digest": digest}, "params": params},
			Binds: []mount.Mount{{Type: mount.TypeBind, Source: dir, Target: "/tmp/build/get"}},
		})
		requireOK(t, "in", r)
		return response(t, r)
	}
	putStep := func(srcDir string, src, params map[string]any) step {
		return step{
			Cmd:   []string{"/opt/resource/out", "/tmp/build/put"},
			Req:   map[string]any{"source": src, "params": params},
			Binds: []mount.Mount{{Type: mount.TypeBind, Source: srcDir, Target: "/tmp/build/put"}},
		}
	}

	t.Run("contents", func(t *testing.T) {
		ins, err := e.cli.ImageInspect(ctx, e.image)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("SIZE image %s: %.1f MB uncompressed, %d layers", logging.ShortID(e.image), float64(ins.Size)/1e6, len(ins.RootFS.Layers))
		labels := ins.Config.Labels
		if labels["org.opencontainers.image.version"] != imageVersion || !strings.HasPrefix(labels["org.opencontainers.image.source"], "https://") {
			t.Errorf("labels %v", labels)
		}
		if !slices.Contains(ins.Config.Env, "DOCKER_IMAGE_RESOURCE_IN_CONTAINER=1") {
			t.Errorf("env %v", ins.Config.Env)
		}
		r := e.run(step{Cmd: []string{"sh", "-c", `set -e
dockerd --version; containerd --version; runc --version | head -1; iptables --version; ip6tables --version
for c in check in out; do test -x /opt/resource/$c && echo "/opt/resource/$c ok"; done
test -s /etc/ssl/certs/ca-certificates.crt && echo "ca bundle ok"
! test -e /usr/bin/ctr && echo "no ctr"
! test -e /var/lib/apt/lists/lock && ! ls /var/lib/apt/lists | grep -q . && echo "no apt lists"`}})
		requireOK(t, "contents", r)
		t.Logf("contents:\n%s", r.Stdout)
		for _, want := range []string{"Docker version 26.", "iptables v1.8.11 (nf_tables)", "ip6tables v1.8.11 (nf_tables)", "/opt/resource/check ok", "/opt/resource/in ok", "/opt/resource/out ok", "ca bundle ok", "no ctr", "no apt lists"} {
			if !strings.Contains(r.Stdout, want) {
				t.Errorf("missing %q", want)
			}
		}
	})

	t.Run("a process left behind is seen", func(t *testing.T) {
		// The checks that a put leaves no daemon rely on this.
		r := e.run(step{Cmd: []string{"sh", "-c", "sleep 300 >/dev/null 2>&1 &"}})
		requireOK(t, "sh", r)
		if len(r.Left) == 0 {
			t.Fatal("a background sleep left in the container was not noticed")
		}
	})

	srcDir := t.TempDir()
	baseDir := filepath.Join(srcDir, "base")
	if err := os.Mkdir(baseDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Run("seed scenario", func(t *testing.T) {
		vs := check(t, source("team/base", map[string]any{"tag": "1.0"}))
		if len(vs) != 1 || vs[0].Digest != baseDigest {
			t.Fatalf("check: %v, want [%s]", vs, baseDigest)
		}
		get(t, baseDir, source("team/base", map[string]any{"tag": "1.0"}), baseDigest, map[string]any{"save": true})
		for _, f := range []string{"image", "image-id", "repository", "tag", "digest"} {
			if _, err := os.Stat(filepath.Join(baseDir, f)); err != nil {
				t.Fatalf("the get wrote no %s: %v", f, err)
			}
		}

		// From here on nothing can pull the base: load_base must load it.
		reg.stop()
		if err := os.RemoveAll(filepath.Join(seed.Dir, "data/docker/registry/v2/repositories/team/base")); err != nil {
			t.Fatal(err)
		}
		reg.start()
		if vs := check(t, source("team/base", map[string]any{"tag": "1.0"})); len(vs) != 0 {
			t.Fatalf("the base is still in the registry: %v", vs)
		}

		writeTestFile(t, filepath.Join(srcDir, "app/Dockerfile"), []byte("FROM registry:5000/team/base:1.0\nRUN echo built-in-the-image > /built\n"))
		writeTestFile(t, filepath.Join(srcDir, "version"), []byte("1.2.3\n"))
		r := e.run(putStep(srcDir, source("team/app", nil), map[string]any{
			"build": "app", "load_base": "base", "tag_file": "version", "tag_as_latest": true,
		}))
		requireOK(t, "out", r)
		resp := response(t, r)
		pushed := resp.Version.Digest
		t.Logf("TIME put (build on the loaded base, RUN step, push) took %s; metadata %v", r.Took.Round(100*time.Millisecond), resp.Metadata)
		requireClean(t, r)

		for _, tag := range []string{"1.2.3", "latest"} {
			vs := check(t, source("team/app", map[string]any{"tag": tag}))
			if len(vs) != 1 || vs[0].Digest != pushed {
				t.Fatalf("check team/app:%s: %v, want [%s]", tag, vs, pushed)
			}
		}
		appDir := t.TempDir()
		get(t, appDir, source("team/app", map[string]any{"tag": "1.2.3"}), pushed, map[string]any{})
		if b, err := os.ReadFile(filepath.Join(appDir, "rootfs/built")); err != nil || string(b) != "built-in-the-image\n" {
			t.Fatalf("the pushed image's /built: %q, %v", b, err)
		}
	})

	t.Run("zstd round trip", func(t *testing.T) {
		zDir := t.TempDir()
		if err := os.Mkdir(filepath.Join(zDir, "zimg"), 0o755); err != nil {
			t.Fatal(err)
		}
		get(t, filepath.Join(zDir, "zimg"), source("zstd/base", map[string]any{"tag": "1"}), zstdDigest, map[string]any{"save": true})
		want, _ := zstdImg.ConfigName()
		if b, _ := os.ReadFile(filepath.Join(zDir, "zimg/image-id")); strings.TrimSpace(string(b)) != want.String() {
			t.Fatalf("image-id %q, want %s", b, want)
		}
		r := e.run(putStep(zDir, source("zstd/copy", nil), map[string]any{"load": "zimg"}))
		requireOK(t, "out with load of a zstd image", r)
		resp := response(t, r)
		requireClean(t, r)
		t.Logf("TIME put of the zstd image took %s", r.Took.Round(100*time.Millisecond))
		vs := check(t, source("zstd/copy", nil))
		if len(vs) != 1 || vs[0].Digest != resp.Version.Digest {
			t.Fatalf("check zstd/copy: %v, want [%s]", vs, resp.Version.Digest)
		}
	})

	t.Run("daemon-side TLS", func(t *testing.T) {
		ca, clientCA := testenv.NewCA(t), testenv.NewCA(t)
		cert, key := ca.Issue(t, "registry-tls")
		clientCert, clientKey := clientCA.Issue(t, "e2e-client")
		e.startRegistry(registryOpts{
			Alias: "registry-tls", Storage: filepath.Join(seedTLS.Dir, "data"), Username: user, Password: pass,
			CertPEM: cert, KeyPEM: key, ClientCAPEM: clientCA.CertPEM,
		})
		tlsSource := func(repo string, withClientCert bool) map[string]any {
			s := map[string]any{
				"repository": "registry-tls:5000/" + repo, "username": user, "password": pass,
				"ca_certs": []map[string]any{{"domain": "registry-tls:5000", "cert": string(ca.CertPEM)}},
			}
			if withClientCert {
				s["client_certs"] = []map[string]any{{"domain": "registry-tls:5000", "cert": string(clientCert), "key": string(clientKey)}}
			}
			return s
		}
		dir := t.TempDir()
		writeTestFile(t, filepath.Join(dir, "app/Dockerfile"), []byte("FROM registry-tls:5000/tls/base:1\nRUN touch /built\n"))
		r := e.run(putStep(dir, tlsSource("tls/app", true), map[string]any{"build": "app"}))
		requireOK(t, "out against the TLS registry", r)
		resp := response(t, r)
		requireClean(t, r)
		t.Logf("TIME put against the mutual-TLS registry (pull FROM, build, push) took %s", r.Took.Round(100*time.Millisecond))
		vs := check(t, tlsSource("tls/app", true))
		if len(vs) != 1 || vs[0].Digest != resp.Version.Digest {
			t.Fatalf("check tls/app: %v, want [%s]", vs, resp.Version.Digest)
		}
		r = e.run(putStep(dir, tlsSource("tls/app2", false), map[string]any{"build": "app"}))
		if r.Code == 0 {
			t.Fatal("a put without the client certificate succeeded")
		}
		requireClean(t, r)
		errLine := ""
		for _, l := range scanLines(r.Stderr) {
			if strings.Contains(l, "error:") {
				errLine = l
			}
		}
		t.Logf("without client_certs (exit %d): %s", r.Code, errLine)
		if !strings.Contains(strings.ToLower(errLine), "certificate") {
			t.Errorf("the put without client_certs did not fail for the certificate:\n%s", r.Stderr)
		}
	})
	t.Logf("TIME whole test %s", time.Since(t0).Round(time.Second))
}

func requireOK(t *testing.T, what string, r stepResult) {
	t.Helper()
	if r.Code != 0 {
		t.Fatalf("%s exited %d after %s\nstderr:\n%s", what, r.Code, r.Took.Round(time.Millisecond), r.Stderr)
	}
	if testing.Verbose() {
		t.Logf("%s took %s; stderr:\n%s", what, r.Took.Round(time.Millisecond), r.Stderr)
	}
}

// requireClean fails when a put left a daemon process or its state folder
// behind in its container.
func requireClean(t *testing.T, r stepResult) {
	t.Helper()
	if len(r.Left) > 0 {
		t.Errorf("processes left in the container after the put: %v", r.Left)
	}
	for _, n := range r.TmpEntries {
		if strings.HasPrefix(n, "dkd-") {
			t.Errorf("daemon state folder /tmp/%s left in the container", n)
		}
	}
}

func response(t *testing.T, r stepResult) protocol.Response {
	t.Helper()
	var resp protocol.Response
	if err := json.Unmarshal([]byte(r.Stdout), &resp); err != nil || !strings.HasPrefix(resp.Version.Digest, "sha256:") {
		t.Fatalf("stdout %q: %v", r.Stdout, err)
	}
	return resp
}

func lastLines(s string, n int) string {
	lines := scanLines(s)
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
