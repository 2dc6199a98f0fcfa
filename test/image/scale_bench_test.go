package image

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/pkg/resource"
	"github.com/concourse-docker/docker-image-resource/test/scalebench"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/docker/api/types/mount"
)

// BenchmarkScaleImage is `make bench-scale` on the resource image's own
// dockerd (26.1), nested as Concourse runs it (test/bench's BenchmarkScale
// is the same on the host's 20.10; test/scalebench says what and how):
// `in`, `out` and the floor's `tar -xzf` each run in a fresh privileged
// container of the image on a private dockerd, the get's folder and the
// puts' inputs a host folder mounted into it, the registry a container on
// that dockerd's network. BENCH_SCALE_SIZES, BENCH_RUNS,
// BENCH_SCALE_TEN_MIB and BENCH_OUT as there (the section here is
// "bench-scale image"). Quick:
//
//	BENCH_SCALE_SIZES=30 BENCH_RUNS=1 BENCH_SCALE_TEN_MIB=30 go test -run '^$' -bench '^BenchmarkScaleImage$' -benchtime 1x -timeout 90m -v ./test/image/
func BenchmarkScaleImage(b *testing.B) {
	imageTar := imageForTest(b)
	cfg := scalebench.ReadConfig(b)
	bases := scalebench.MakeBases(b, cfg, b.TempDir())
	// The registry container serves the storage this one filled.
	seed := testenv.StartRegistry(b, testenv.RegistryOptions{NoAuth: true})
	for _, base := range bases {
		base.Digest = seed.Push(b, base.Repo+":"+scalebench.BaseTag, base.Image).String()
	}
	seed.Stop()

	testenv.LockDockerd(b)
	e := startEnv(b, b.Context(), imageTar)
	const user, pass = "concourse", "scale-secret-8e1f"
	storage := filepath.Join(seed.Dir, "data")
	tg := &imageTarget{
		e:       e,
		reg:     e.startRegistry(registryOpts{Alias: "registry", Storage: storage, Username: user, Password: pass}),
		storage: storage,
		source:  registrySource(user, pass),
	}
	scalebench.Publish(b, scalebench.Run(b, cfg, bases, tg))
}

// imageTarget runs the steps in containers of the resource image.
type imageTarget struct {
	e       *env
	reg     *registryContainer
	storage string // the registry's storage on the host
	source  func(repo string, extra map[string]any) map[string]any
	dockerd string
}

func (g *imageTarget) Name() string { return "image" }

// RegistryCache: the image's dockerd runs the containerd image store a
// put with cache_repository needs.
func (g *imageTarget) RegistryCache() bool { return true }

func (g *imageTarget) Describe() string {
	return "In the resource image: `in`, `out` and the floor's `tar -xzf` (the image's GNU tar) each run in a fresh privileged container of the image " +
		"on a private dockerd (the host's), with the get's folder and the puts' inputs a host folder mounted into it as Concourse mounts its volumes; " +
		"each put starts the image's dockerd on the container's /scratch volume (same disk); the registry is a container on that network. " +
		"A step's time runs from the exec to its exit being seen (polled every 20 ms)."
}

func (g *imageTarget) Dockerd() string {
	if g.dockerd == "" {
		r := g.e.run(step{Cmd: []string{"dockerd", "--version"}})
		g.requireOK("dockerd --version", r)
		v := strings.TrimPrefix(strings.TrimSpace(r.Stdout), "Docker version ")
		g.dockerd, _, _ = strings.Cut(v, ",")
	}
	return g.dockerd
}

func (g *imageTarget) RegistryHost() string { return "registry:5000" }

func (g *imageTarget) Get(t testing.TB, dest string, base *scalebench.Base) (time.Duration, int64) {
	if err := os.MkdirAll(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	var peak <-chan int64
	r := g.e.run(step{
		Cmd: []string{"/opt/resource/in", "/tmp/build/get"},
		Req: map[string]any{"source": g.source(base.Repo, map[string]any{"tag": scalebench.BaseTag}),
			"version": map[string]any{"digest": base.Digest}, "params": map[string]any{"save": true}},
		Binds:   []mount.Mount{{Type: mount.TypeBind, Source: dest, Target: "/tmp/build/get"}},
		OnStart: func(pid int) { peak = testenv.PeakRSS(pid) },
	})
	g.requireOK("in", r)
	if peak == nil {
		t.Fatal("in: its pid was never seen: no peak RSS")
	}
	return r.Took, <-peak
}

func (g *imageTarget) Floor(t testing.TB, blobs []string, dest string) time.Duration {
	if err := os.MkdirAll(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(blobs[0])
	cmd := []string{"sh", "-c", `set -e; d=$1; shift; for f; do tar -xzf "$f" -C "$d"; done`, "sh", "/floor/out"}
	for _, blob := range blobs {
		if filepath.Dir(blob) != dir {
			t.Fatalf("blobs in two folders: %s and %s", dir, blob)
		}
		cmd = append(cmd, "/floor/blobs/"+filepath.Base(blob))
	}
	r := g.e.run(step{Cmd: cmd, Binds: []mount.Mount{
		{Type: mount.TypeBind, Source: dir, Target: "/floor/blobs", ReadOnly: true},
		{Type: mount.TypeBind, Source: dest, Target: "/floor/out"},
	}})
	g.requireOK("tar -xzf", r)
	return r.Took
}

func (g *imageTarget) Put(t testing.TB, srcDir, repo string, params map[string]any, dockerLoad bool) map[string]string {
	var env []string
	if dockerLoad {
		env = append(env, resource.TestLoadEnv+"=docker-load")
	}
	r := g.e.run(step{
		Env:   env,
		Cmd:   []string{"/opt/resource/out", "/tmp/build/put"},
		Req:   map[string]any{"source": g.source(repo, nil), "params": params},
		Binds: []mount.Mount{{Type: mount.TypeBind, Source: srcDir, Target: "/tmp/build/put"}},
	})
	g.requireOK("out "+repo, r)
	if len(r.Left) > 0 {
		t.Fatalf("out %s left processes in its container: %v", repo, r.Left)
	}
	var resp protocol.Response
	if err := json.Unmarshal([]byte(r.Stdout), &resp); err != nil || !strings.HasPrefix(resp.Version.Digest, "sha256:") {
		t.Fatalf("out %s: stdout %q: %v", repo, r.Stdout, err)
	}
	meta := map[string]string{}
	for _, m := range resp.Metadata {
		meta[m.Name] = m.Value
	}
	return meta
}

// DeleteBase hides the repository's manifests (tags and revisions) from the
// registry, its blobs kept (as a manifest delete keeps them), and checks
// that `check` finds no tag.
func (g *imageTarget) DeleteBase(t testing.TB, base *scalebench.Base) {
	manifests := g.manifestsDir(base)
	g.reg.stop()
	if err := os.Rename(manifests, manifests+".deleted"); err != nil {
		t.Fatal(err)
	}
	g.reg.start()
	if v := g.check(t, base); len(v) != 0 {
		t.Fatalf("check of %s after deleting it: %v, want none", base.Repo, v)
	}
}

func (g *imageTarget) RestoreBase(t testing.TB, base *scalebench.Base) {
	manifests := g.manifestsDir(base)
	g.reg.stop()
	if err := os.Rename(manifests+".deleted", manifests); err != nil {
		t.Fatal(err)
	}
	g.reg.start()
	if v := g.check(t, base); len(v) != 1 || v[0].Digest != base.Digest {
		t.Fatalf("check of %s after restoring it: %v, want %s", base.Repo, v, base.Digest)
	}
}

func (g *imageTarget) manifestsDir(base *scalebench.Base) string {
	return filepath.Join(g.storage, "docker/registry/v2/repositories", base.Repo, "_manifests")
}

func (g *imageTarget) check(t testing.TB, base *scalebench.Base) []protocol.Version {
	r := g.e.run(step{Cmd: []string{"/opt/resource/check"}, Req: map[string]any{"source": g.source(base.Repo, map[string]any{"tag": scalebench.BaseTag})}})
	g.requireOK("check", r)
	var v []protocol.Version
	if err := json.Unmarshal([]byte(r.Stdout), &v); err != nil {
		t.Fatalf("check: stdout %q: %v", r.Stdout, err)
	}
	return v
}

func (g *imageTarget) RegistryLog(testing.TB) string { return g.reg.logs() }

// requireOK fails the benchmark when a step failed, with the end of its log
// (the whole of it would bury the table).
func (g *imageTarget) requireOK(what string, r stepResult) {
	g.e.t.Helper()
	if r.Code != 0 {
		g.e.t.Fatalf("%s exited %d after %s; its log ends:\n%s", what, r.Code, r.Took.Round(time.Millisecond), lastLines(r.Stderr, 40))
	}
}
