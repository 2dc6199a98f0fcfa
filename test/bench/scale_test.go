package bench

import (
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/resource"
	"github.com/concourse-docker/docker-image-resource/test/scalebench"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// BenchmarkScale is `make bench-scale` on the host's dockerd (issue 14):
// the get, the floor of `tar -xzf`, and the put with load_base, pulling
// FROM and with cache: true on bases of 100 MiB, 400 MiB and 1 GiB of this
// machine's files, then ten puts on one base (test/scalebench says what
// and how). `in` is the real binary; the put runs in-process, as the
// suite's do, on an isolated dockerd of its own; the registry is on
// loopback. BENCH_SCALE_SIZES (MiB, "100,400,1000"), BENCH_RUNS (3) and
// BENCH_SCALE_TEN_MIB (1000) choose the sizes; BENCH_OUT=file also writes
// the table into that file's section "bench-scale host". Quick:
//
//	BENCH_SCALE_SIZES=30 BENCH_RUNS=1 BENCH_SCALE_TEN_MIB=30 go test -run '^$' -bench '^BenchmarkScale$' -benchtime 1x -timeout 90m -v ./test/bench/
func BenchmarkScale(b *testing.B) {
	cfg := scalebench.ReadConfig(b)
	bases := scalebench.MakeBases(b, cfg, b.TempDir())
	reg := testenv.StartRegistry(b, testenv.RegistryOptions{})
	for _, base := range bases {
		base.Digest = reg.Push(b, base.Repo+":"+scalebench.BaseTag, base.Image).String()
	}
	tg := &hostTarget{reg: reg, bin: buildIn(b)}
	scalebench.Publish(b, scalebench.Run(b, cfg, bases, tg))
}

// hostTarget runs the steps on this machine: `in` as a process, `out`
// in-process with the suite's put (its own isolated dockerd each time).
type hostTarget struct {
	reg *testenv.Registry
	bin string
}

func (h *hostTarget) Name() string { return "host" }

func (h *hostTarget) Describe() string {
	return "On the host: `in` is the built binary, `out` runs in-process on an isolated dockerd of its own (the host's), the registry on loopback; the floor is the host's GNU tar."
}

func (h *hostTarget) Dockerd() string {
	out, err := exec.Command("dockerd", "--version").Output()
	if err != nil {
		return "(dockerd --version: " + err.Error() + ")"
	}
	// "Docker version 20.10.24+dfsg1, build 5d6db84"
	v := strings.TrimPrefix(strings.TrimSpace(string(out)), "Docker version ")
	v, _, _ = strings.Cut(v, ",")
	return v
}

func (h *hostTarget) RegistryHost() string { return h.reg.Host }

func (h *hostTarget) Get(t testing.TB, dest string, base *scalebench.Base) (time.Duration, int64) {
	if err := os.MkdirAll(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	return runGet(t, h.bin, dest, h.reg, base.Repo, scalebench.BaseTag, base.Digest, true)
}

func (h *hostTarget) Floor(t testing.TB, blobs []string, dest string) time.Duration {
	return testenv.UntarFloor(t, blobs, dest)
}

func (h *hostTarget) Put(t testing.TB, srcDir, repo string, params map[string]any, dockerLoad bool) map[string]string {
	return putHooked(t, srcDir, h.reg, repo, params, func(hk *resource.Hooks) { hk.DockerLoad = dockerLoad }).meta
}

func (h *hostTarget) DeleteBase(t testing.TB, base *scalebench.Base) {
	h.reg.Delete(t, base.Repo+"@"+base.Digest)
	for _, ref := range []string{base.Repo + ":" + scalebench.BaseTag, base.Repo + "@" + base.Digest} {
		_, err := remote.Head(h.reg.Ref(t, ref), h.reg.RemoteOptions()...)
		var te *transport.Error
		if !errors.As(err, &te) || te.StatusCode != http.StatusNotFound {
			t.Fatalf("HEAD %s after deleting it: %v, want 404", ref, err)
		}
	}
}

func (h *hostTarget) RestoreBase(t testing.TB, base *scalebench.Base) {
	if d := h.reg.Push(t, base.Repo+":"+scalebench.BaseTag, base.Image).String(); d != base.Digest {
		t.Fatalf("base pushed again as %s, was %s", d, base.Digest)
	}
}

func (h *hostTarget) RegistryLog(t testing.TB) string {
	return h.reg.Log(t)
}
