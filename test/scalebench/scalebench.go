// Package scalebench is `make bench-scale` (issue 14): how the get and the
// put grow with the base image, on bases of this machine's files of
// 100 MiB, 400 MiB and 1 GiB, beside the floor of the same extraction done
// by `tar -xzf`; a put with load_base beside the same put pulling FROM and
// with cache: true; and ten puts on one base with load_base and with FROM
// pulled. What runs where is a Target: the host's dockerd (test/bench's
// BenchmarkScale, the put in-process) or the resource image's own
// (test/image's BenchmarkScaleImage, in and out in the image's container).
// Run prints one table per Target and writes it into BENCH_OUT as a
// section of its own.
package scalebench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const mib = 1 << 20

// Config is what the developer chooses, from the environment.
type Config struct {
	Sizes  []int // base sizes, MiB uncompressed (BENCH_SCALE_SIZES, "100,400,1000")
	Runs   int   // timed runs of each step, the median reported (BENCH_RUNS, 3)
	TenMiB int   // the base of the ten puts, MiB (BENCH_SCALE_TEN_MIB, 1000)
	// StagesOnly runs only the multi-stage puts (stages.go) on the first
	// size (BENCH_SCALE_STAGES_ONLY=1; make bench-scale BENCH_SCALE_PARTS=stages).
	StagesOnly bool
}

// ReadConfig reads BENCH_SCALE_SIZES, BENCH_RUNS and BENCH_SCALE_TEN_MIB;
// unset or empty means the default, anything else not a positive whole
// number fails t naming the variable.
func ReadConfig(t testing.TB) Config {
	t.Helper()
	c := Config{Sizes: []int{100, 400, 1000}, Runs: 3, TenMiB: 1000}
	if v := os.Getenv("BENCH_SCALE_SIZES"); v != "" {
		c.Sizes = nil
		for _, f := range strings.Split(v, ",") {
			c.Sizes = append(c.Sizes, positive(t, "BENCH_SCALE_SIZES", strings.TrimSpace(f)))
		}
	}
	if v := os.Getenv("BENCH_RUNS"); v != "" {
		c.Runs = positive(t, "BENCH_RUNS", v)
	}
	if v := os.Getenv("BENCH_SCALE_TEN_MIB"); v != "" {
		c.TenMiB = positive(t, "BENCH_SCALE_TEN_MIB", v)
	}
	c.StagesOnly = os.Getenv("BENCH_SCALE_STAGES_ONLY") == "1"
	return c
}

func positive(t testing.TB, name, v string) int {
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive whole number (MiB for sizes)", name, os.Getenv(name))
	}
	return n
}

// Command is the command line that reproduces this configuration.
func (c Config) Command() string {
	var env []string
	if s := intList(c.Sizes); s != "100,400,1000" {
		env = append(env, "BENCH_SCALE_SIZES="+s)
	}
	if c.Runs != 3 {
		env = append(env, fmt.Sprintf("BENCH_RUNS=%d", c.Runs))
	}
	if c.TenMiB != 1000 {
		env = append(env, fmt.Sprintf("BENCH_SCALE_TEN_MIB=%d", c.TenMiB))
	}
	cmd := "make bench-scale"
	if c.StagesOnly {
		cmd += " BENCH_SCALE_PARTS=stages"
	}
	return strings.Join(append(env, cmd), " ")
}

func intList(ns []int) string {
	var s []string
	for _, n := range ns {
		s = append(s, strconv.Itoa(n))
	}
	return strings.Join(s, ",")
}

// allSizes are the bases to make: every size, the ten puts' one included.
func (c Config) allSizes() []int {
	if c.StagesOnly {
		return c.Sizes[:1]
	}
	s := slices.Clone(c.Sizes)
	if !slices.Contains(s, c.TenMiB) {
		s = append(s, c.TenMiB)
	}
	return s
}

// Target runs the resource's steps on one dockerd. Paths are the host's;
// a Target that runs the steps in a container mounts them there. Every
// method fails t when its step fails.
type Target interface {
	// Name is "host" or "image": the section's name in BENCH_OUT.
	Name() string
	// Describe says in a sentence where the steps run and on which dockerd.
	Describe() string
	// Dockerd is the version of the dockerd the puts start.
	Dockerd() string
	// RegistryHost is the registry as the puts' Dockerfiles name it.
	RegistryHost() string
	// Get runs `in` with save: true for the base into dest (a fresh
	// folder) and returns its wall time and peak RSS.
	Get(t testing.TB, dest string, base *Base) (time.Duration, int64)
	// Floor runs `tar -xzf` of every blob, in order, into dest (a fresh
	// folder) where the get ran, and returns the wall time of all of them.
	Floor(t testing.TB, blobs []string, dest string) time.Duration
	// Put runs `out` with srcDir as its inputs folder, pushing to repo
	// (on RegistryHost) with params, and returns its metadata. dockerLoad
	// sets the put's DockerLoad test hook (its bases through docker load).
	Put(t testing.TB, srcDir, repo string, params map[string]any, dockerLoad bool) map[string]string
	// DeleteBase deletes the base's manifest from the registry and fails t
	// unless the registry then refuses it; RestoreBase puts it back.
	DeleteBase(t testing.TB, base *Base)
	RestoreBase(t testing.TB, base *Base)
	// RegistryLog is the registry's log so far (it only grows).
	RegistryLog(t testing.TB) string
}

// Run runs the whole benchmark on one Target and returns its report. The
// bases must be in the Target's registry.
func Run(b *testing.B, cfg Config, bases map[int]*Base, tg Target) *Report {
	began := time.Now()
	logf := func(format string, a ...any) {
		b.Logf("%s: %s: "+format, append([]any{tg.Name(), time.Since(began).Round(time.Second)}, a...)...)
	}
	apps := appFiles(b)
	rep := &Report{Config: cfg, Target: tg.Name(), Describe: tg.Describe(), Dockerd: tg.Dockerd()}
	if !cfg.StagesOnly {
		for _, m := range cfg.Sizes {
			rep.Sizes = append(rep.Sizes, runSize(b, cfg, bases[m], tg, apps[0], logf))
		}
		rep.Ten = runTen(b, bases[cfg.TenMiB], tg, apps, logf)
	}
	if ct, ok := tg.(CacheTarget); ok && ct.RegistryCache() {
		rep.Stages = runStages(b, cfg, bases[cfg.Sizes[0]], tg, logf)
	}
	rep.Took = time.Since(began)
	return rep
}

// runSize measures every step on one base.
func runSize(b *testing.B, cfg Config, base *Base, tg Target, app appSpec, logf func(string, ...any)) SizeResult {
	r := SizeResult{Base: base}
	work := b.TempDir()
	defer os.RemoveAll(work) // the next size needs the disk
	writeApp(b, filepath.Join(work, "app"), tg.RegistryHost(), base, app)

	logf("%d MiB: get, %d runs", base.MiB, cfg.Runs)
	for i := range cfg.Runs {
		dest := filepath.Join(work, fmt.Sprintf("get-%d", i))
		if i == cfg.Runs-1 {
			dest = filepath.Join(work, "base") // the puts' load_base
		}
		syncDisks(b)
		took, rss := tg.Get(b, dest, base)
		r.Get = append(r.Get, took)
		r.GetRSS = max(r.GetRSS, rss)
		if i < cfg.Runs-1 {
			os.RemoveAll(dest)
		}
	}
	logf("%d MiB: floor (tar -xzf)", base.MiB)
	for i := range cfg.Runs {
		dest := filepath.Join(work, fmt.Sprintf("floor-%d", i))
		syncDisks(b)
		r.Floor = append(r.Floor, tg.Floor(b, base.Blobs, dest))
		os.RemoveAll(dest)
	}

	logf("%d MiB: load_base puts, the base deleted from the registry", base.MiB)
	tg.DeleteBase(b, base)
	for i := range cfg.Runs {
		repo := fmt.Sprintf("%s-lb-%d", base.Repo, i)
		r.LoadBase = append(r.LoadBase, loadBasePut(b, tg, work, repo, base, "app", false))
	}
	logf("%d MiB: the same puts through docker load", base.MiB)
	for i := range cfg.Runs {
		repo := fmt.Sprintf("%s-dl-%d", base.Repo, i)
		r.DockerLoad = append(r.DockerLoad, loadBasePut(b, tg, work, repo, base, "app", true))
	}
	tg.RestoreBase(b, base)

	logf("%d MiB: puts pulling FROM", base.MiB)
	for i := range cfg.Runs {
		repo := fmt.Sprintf("%s-from-%d", base.Repo, i)
		r.FromPulled = append(r.FromPulled, fromPut(b, tg, work, repo, base, map[string]any{"build": "app"}))
	}

	logf("%d MiB: cache: true puts (after one that pushes the cache)", base.MiB)
	cacheRepo := base.Repo + "-cache"
	params := map[string]any{"build": "app", "cache": true}
	fromPut(b, tg, work, cacheRepo, base, params)
	for range cfg.Runs {
		r.Cache = append(r.Cache, fromPut(b, tg, work, cacheRepo, base, params))
	}
	return r
}

// runTen is the seed scenario: ten builds on one base, with load_base (one
// get, then ten puts, the base deleted from the registry) and pulling FROM.
func runTen(b *testing.B, base *Base, tg Target, apps []appSpec, logf func(string, ...any)) TenResult {
	r := TenResult{Base: base}
	work := b.TempDir()
	defer os.RemoveAll(work)
	for i, a := range apps {
		writeApp(b, filepath.Join(work, fmt.Sprintf("app%d", i+1)), tg.RegistryHost(), base, a)
	}
	logf("ten puts on the %d MiB base: get, then ten load_base puts", base.MiB)
	syncDisks(b)
	r.Get, _ = tg.Get(b, filepath.Join(work, "base"), base)
	tg.DeleteBase(b, base)
	for i := range apps {
		p := loadBasePut(b, tg, work, fmt.Sprintf("bench/ten-lb-app%d", i+1), base, fmt.Sprintf("app%d", i+1), false)
		r.LoadBase = append(r.LoadBase, p)
	}
	tg.RestoreBase(b, base)
	logf("ten puts on the %d MiB base pulling FROM", base.MiB)
	for i := range apps {
		p := fromPut(b, tg, work, fmt.Sprintf("bench/ten-from-app%d", i+1), base, map[string]any{"build": fmt.Sprintf("app%d", i+1)})
		r.FromPulled = append(r.FromPulled, p)
	}
	return r
}

// loadBasePut runs a put with load_base while the base is deleted, and
// fails b when the registry served the base's manifest to it.
func loadBasePut(b *testing.B, tg Target, work, repo string, base *Base, app string, dockerLoad bool) PutResult {
	b.Helper()
	before := tg.RegistryLog(b)
	syncDisks(b)
	p := parsePut(b, repo, tg.Put(b, work, repo, map[string]any{"build": app, "load_base": "base"}, dockerLoad), "daemon start", "load", "build", "push")
	if served := manifestsServed(newLines(before, tg.RegistryLog(b)), base.Repo); len(served) > 0 {
		b.Fatalf("put %s with load_base: the registry served the deleted base's manifest, so FROM was not the loaded base:\n%s", repo, strings.Join(served, "\n"))
	}
	return p
}

// fromPut runs a put that pulls FROM, and fails b when the registry log
// does not show the base's manifest served: then loadBasePut's check of
// the same log would prove nothing.
func fromPut(b *testing.B, tg Target, work, repo string, base *Base, params map[string]any) PutResult {
	b.Helper()
	before := tg.RegistryLog(b)
	syncDisks(b)
	p := parsePut(b, repo, tg.Put(b, work, repo, params, false), "daemon start", "build", "push")
	if len(manifestsServed(newLines(before, tg.RegistryLog(b)), base.Repo)) == 0 {
		b.Fatalf("put %s %v pulled FROM, yet the registry log shows no request for %s's manifest served: the log check of the load_base puts is blind", repo, params, base.Repo)
	}
	return p
}

// syncDisks writes out what earlier steps left dirty, so a step does not
// pay for its predecessor's writes.
func syncDisks(b *testing.B) {
	if out, err := exec.Command("sync").CombinedOutput(); err != nil {
		b.Fatalf("sync: %v\n%s", err, out)
	}
}

// PutResult is one put: its metadata and the times of its phases.
type PutResult struct {
	Meta  map[string]string
	Phase map[string]time.Duration // "daemon start", "load", "build", "push", "total"
}

// parsePut reads the "time ..." metadata and fails b when a phase of want
// or the total is missing.
func parsePut(b *testing.B, repo string, meta map[string]string, want ...string) PutResult {
	b.Helper()
	p := PutResult{Meta: meta, Phase: map[string]time.Duration{}}
	for k, v := range meta {
		if n, ok := strings.CutPrefix(k, "time "); ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				b.Fatalf("put %s: metadata %q = %q: %v", repo, k, v, err)
			}
			p.Phase[n] = d
		}
	}
	for _, n := range append(want, "total") {
		if _, ok := p.Phase[n]; !ok {
			b.Fatalf("put %s: no %q in its metadata %v", repo, "time "+n, meta)
		}
	}
	return p
}
