package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/pkg/resource"
	"github.com/concourse-docker/docker-image-resource/test/scalebench"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/go-units"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// The emulated link between the put and the registry in P3.
const (
	linkRate    = 100e6 / 8 // 100 Mbit/s, each direction
	linkLatency = 20 * time.Millisecond
)

// BenchmarkSuite is the benchmark suite of issue 6: daemon start (P1), get
// against the old way (P2), the seed scenario three ways (P3), bytes
// uploaded by a put (P4) and the get's peak memory (P5). It prints one
// table (BENCH_OUT=file also writes it into that file's section "bench
// suite", with the machine it ran on, the rest of the file kept).
// BENCH_SCALE=0.1 scales every image size down for a quick run. Run with
// `make bench`, or
//
//	go test -run '^$' -bench BenchmarkSuite -benchtime 1x -timeout 30m ./test/bench/
func BenchmarkSuite(b *testing.B) {
	began := time.Now()
	scale := benchScale(b)
	const mib = 1 << 20
	size := func(n int64) int64 { return max(int64(float64(n)*scale), mib) }
	ctx := context.Background()
	var t strings.Builder
	logf := func(format string, a ...any) {
		b.Logf("%s: "+format, append([]any{time.Since(began).Round(time.Second)}, a...)...)
	}

	// P1: exec of dockerd until its API answers, as a put starts it.
	logf("P1: daemon start")
	var starts []time.Duration
	var daemonVersion string
	unlock := lockDockerd(b)
	for range 5 {
		d, err := daemon.Start(ctx, daemon.Options{Isolated: true})
		if err != nil {
			b.Fatal(err)
		}
		starts = append(starts, d.Elapsed())
		daemonVersion = d.Version()
		if err := d.Stop(ctx); err != nil {
			b.Fatal(err)
		}
	}
	unlock()

	// P2: get with save: true against the old way (BenchmarkGet's logic).
	logf("P2: get against the old way")
	reg := testenv.StartRegistry(b, testenv.RegistryOptions{})
	bin := buildIn(b)
	img := testenv.BusyboxImage(b, testenv.ImageOptions{RandomLayers: []int64{size(100 * mib), size(100 * mib), size(100 * mib)}})
	digest := reg.Push(b, "bench/get:300m", img).String()
	var getRuns []time.Duration
	var getRSS int64
	for range 3 {
		dest := b.TempDir()
		d, rss := runGet(b, bin, dest, reg, "bench/get", "300m", digest, true)
		getRuns = append(getRuns, d)
		getRSS = max(getRSS, rss)
		os.RemoveAll(dest)
	}
	ours := scalebench.Median(getRuns)
	// Wait for other tests' dockerd first: the old way's time must not
	// include that wait (StartDockerd takes the lock itself).
	lockDockerd(b)()
	start := time.Now()
	dk := testenv.StartDockerd(b)
	oldDir := b.TempDir()
	oldWay(b, dk, reg, reg.Host+"/bench/get@"+digest, oldDir)
	old := time.Since(start)
	if err := dk.Stop(); err != nil {
		b.Fatal(err)
	}
	os.RemoveAll(oldDir)

	// P5: the get's peak memory on a 1 GiB image.
	logf("P5: get of a 1 GiB image")
	big := testenv.BusyboxImage(b, testenv.ImageOptions{RandomLayers: []int64{size(256 * mib), size(256 * mib), size(256 * mib), size(256 * mib)}, RandomSeed: 7})
	bigDigest := reg.Push(b, "bench/get:1g", big).String()
	bigDest := b.TempDir()
	bigTime, bigRSS := runGet(b, bin, bigDest, reg, "bench/get", "1g", bigDigest, true)
	os.RemoveAll(bigDest)
	// P5: and on 30k, 300k and 3M empty files, rootfs/ and rootfs.tar.
	entries := getEntries(b, reg, bin, scaledCounts(scale), logf)

	// P3: the seed scenario. The base: busybox and three layers of this
	// machine's files; the registry sits behind an emulated link.
	logf("P3: making the base")
	files := testenv.HostFiles{Roots: []string{"/usr/lib"}, Budget: size(300 * mib)}.Collect(b)
	var layers []v1.Layer
	baseRaw := testenv.HostFilesSize(files)
	for _, group := range testenv.SplitHostFiles(files, 3) {
		layers = append(layers, testenv.HostFilesLayer(b, group))
	}
	base := testenv.AppendLayers(b, testenv.BusyboxImage(b, testenv.ImageOptions{}), layers...)
	baseDigest := reg.Push(b, "bench/seed-base:1", base).String()
	bm, _ := base.Manifest()
	var baseZip int64
	for _, l := range bm.Layers {
		baseZip += l.Size
	}
	link, err := StartLink(reg.Host, linkRate, linkLatency)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(link.Close)
	slow := &testenv.Registry{Host: link.Addr, Username: reg.Username, Password: reg.Password}

	// Five builds, each its own small Dockerfile and files from /usr/share.
	work := b.TempDir()
	from := "FROM " + slow.Host + "/bench/seed-base:1\n"
	dockerfiles := []string{
		from + "COPY files /opt/app\nLABEL app=one\n",
		from + "COPY files /srv/data\nRUN ls -R /srv/data | wc -l > /srv/count\n",
		from + "ENV APP=three\nRUN mkdir -p /var/app && echo \"$APP\" > /var/app/name\nCOPY files /var/app/files\n",
		from + "COPY files /usr/local/share/app\nRUN echo four > /four\nLABEL app=four\n",
		from + "WORKDIR /app\nCOPY files .\nUSER 1000\nLABEL app=five\n",
	}
	appFiles := testenv.SplitHostFiles(testenv.HostFiles{Roots: []string{"/usr/share"}, Budget: size(20 * mib)}.Collect(b), len(dockerfiles))
	for i, df := range dockerfiles {
		dir := filepath.Join(work, fmt.Sprintf("app%d", i+1))
		testenv.CopyHostFiles(b, appFiles[i], filepath.Join(dir, "files"))
		writeFile(b, filepath.Join(dir, "Dockerfile"), df)
	}

	// (a) load_base: one get with save: true, then five puts.
	logf("P3a: load_base")
	link.Reset()
	start = time.Now()
	get(b, slow, filepath.Join(work, "base"), "bench/seed-base", "1", baseDigest)
	seedGet := time.Since(start)
	_, seedGetBytes := link.Counts()
	var withBase, withPull, withCache []putRun
	for i := range dockerfiles {
		link.Reset()
		r := put(b, work, slow, "bench/seed-a", map[string]any{"build": fmt.Sprintf("app%d", i+1), "load_base": "base"})
		r.sent, r.received = link.Counts()
		r.need = newBytes(b, reg, "bench/seed-a@"+r.digest, len(bm.Layers))
		withBase = append(withBase, r)
	}
	os.RemoveAll(filepath.Join(work, "base"))

	// (b) FROM pulled from the registry by each put's daemon.
	logf("P3b: FROM pulled")
	for i := range dockerfiles {
		link.Reset()
		r := put(b, work, slow, "bench/seed-b", map[string]any{"build": fmt.Sprintf("app%d", i+1)})
		r.sent, r.received = link.Counts()
		withPull = append(withPull, r)
	}

	// (c) cache: true; every build pushes the repository's tag, the next
	// one pulls it as its cache (and with it the base's layers).
	logf("P3c: cache: true")
	for i := range dockerfiles {
		link.Reset()
		r := put(b, work, slow, "bench/seed-c", map[string]any{"build": fmt.Sprintf("app%d", i+1), "cache": true})
		r.sent, r.received = link.Counts()
		withCache = append(withCache, r)
	}
	logf("done")

	// The table.
	hs := func(n int64) string { return units.BytesSize(float64(n)) }
	rd := func(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
	rdp := func(d time.Duration) string { // a phase: "-" when the put had none
		if d == 0 {
			return "-"
		}
		return rd(d)
	}
	host, _ := os.Hostname()
	fmt.Fprintf(&t, "\n## Suite (`make bench`)\n\n")
	fmt.Fprintf(&t, "Machine: %s, %d cores, %s memory, %s, dockerd %s (%s). Scale %g",
		host, numCPU(), hs(scalebench.MemTotal()), time.Now().UTC().Format("2006-01-02 15:04 MST"), daemonVersion, dockerdVersion(), scale)
	if scale != 1 {
		fmt.Fprintf(&t, " (BENCH_SCALE: image sizes below are nominal, times are for the scaled images)")
	}
	fmt.Fprintf(&t, ". Whole suite: %s, of which %s waiting for other tests' dockerd (one at a time per machine). Command: `make bench`.\n\n", rd(time.Since(began)), rd(lockWait))
	fmt.Fprintf(&t, "| # | measure | result |\n|---|---|---|\n")
	slices.Sort(starts)
	fmt.Fprintf(&t, "| P1 | dockerd exec → API ready, median of 5 (min %s, max %s) | %s |\n", rd(starts[0]), rd(starts[len(starts)-1]), rd(scalebench.Median(starts)))
	fmt.Fprintf(&t, "| P2 | get `save: true`, 300 MiB / 4 layers, median of 3 | %s |\n", rd(ours))
	fmt.Fprintf(&t, "| P2 | old way: start dockerd, pull, save, export into rootfs/, same image | %s |\n", rd(old))
	fmt.Fprintf(&t, "| P2 | ratio old / new | %.1fx |\n", old.Seconds()/ours.Seconds())
	fmt.Fprintf(&t, "| P3 | seed scenario, 5 builds on a %s base (%s compressed); registry behind a 100 Mbit/s link, responses delayed 20 ms | see below |\n", hs(baseRaw), hs(baseZip))
	fmt.Fprintf(&t, "| P3a | `load_base`: get `save: true` once (%s over the link, %.0f Mbit/s) + 5 puts | %s + %s = %s |\n", hs(seedGetBytes), float64(seedGetBytes)*8/1e6/seedGet.Seconds(), rd(seedGet), rd(sumTotal(withBase)), rd(seedGet+sumTotal(withBase)))
	fmt.Fprintf(&t, "| P3b | `FROM` pulled by every put: 5 puts | %s |\n", rd(sumTotal(withPull)))
	fmt.Fprintf(&t, "| P3c | `cache: true`: 5 puts (the first pulls the base, the next ones the cache) | %s |\n", rd(sumTotal(withCache)))
	var sent, need int64
	for _, r := range withBase {
		sent += r.sent
		need += r.need
	}
	fmt.Fprintf(&t, "| P4 | bytes sent to the registry per put in (a), mean, against new layers + config compressed | %s vs %s (%+.2f%%) |\n",
		hs(sent/int64(len(withBase))), hs(need/int64(len(withBase))), 100*(float64(sent)/float64(need)-1))
	fmt.Fprintf(&t, "| P5 | peak RSS of `in`, get `save: true` of a 1 GiB / 5-layer image (took %s) | %d MiB |\n", rd(bigTime), bigRSS>>20)
	fmt.Fprintf(&t, "| P5 | peak RSS of `in`, 300 MiB image (P2) | %d MiB |\n", getRSS>>20)
	t.WriteString(entriesTable(entries))

	fmt.Fprintf(&t, "\nP3, each put (the put's own metadata: `time daemon start`, `time load`, `time build` — which includes the daemon's pull of `FROM` and, with `cache: true`, of the cache — `time push`, `time total`; bytes counted on the link):\n\n")
	fmt.Fprintf(&t, "| case | build | daemon start | load | build | push | total | to registry | from registry |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, c := range []struct {
		name string
		runs []putRun
	}{{"(a) load_base", withBase}, {"(b) FROM pulled", withPull}, {"(c) cache: true", withCache}} {
		var sum putRun
		for i, r := range c.runs {
			fmt.Fprintf(&t, "| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", c.name, i+1,
				rdp(r.phase["daemon start"]), rdp(r.phase["load"]), rdp(r.phase["build"]), rdp(r.phase["push"]), rdp(r.phase["total"]), hs(r.sent), hs(r.received))
			sum.add(r)
		}
		fmt.Fprintf(&t, "| **%s** | **all 5** | **%s** | **%s** | **%s** | **%s** | **%s** | **%s** | **%s** |\n", c.name,
			rdp(sum.phase["daemon start"]), rdp(sum.phase["load"]), rdp(sum.phase["build"]), rdp(sum.phase["push"]), rdp(sum.phase["total"]), hs(sum.sent), hs(sum.received))
	}
	fmt.Fprintf(&t, "\nP4, each put of (a): bytes the put sent to the registry (requests, headers and bodies, counted on the link) against the compressed size of the layers it added and its config:\n\n")
	fmt.Fprintf(&t, "| build | sent | new layers + config | overhead | put's `uploaded` |\n|---|---|---|---|---|\n")
	for i, r := range withBase {
		fmt.Fprintf(&t, "| %d | %d | %d | %+.2f%% | %s |\n", i+1, r.sent, r.need, 100*(float64(r.sent)/float64(r.need)-1), r.meta["uploaded"])
	}

	fmt.Print(t.String())
	// The suite's own section of the page: `make bench-scale` keeps its
	// sections there too.
	if out := os.Getenv("BENCH_OUT"); out != "" {
		if err := testenv.WriteSection(out, "bench suite", t.String()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(old.Seconds()/ours.Seconds(), "x-faster-get")
	b.ReportMetric(float64(bigRSS>>20), "MiB-peak-RSS-1GiB")
	if len(entries) > 0 {
		last := entries[len(entries)-1]
		b.ReportMetric(float64(max(last.rootfsRSS, last.rootfsTarRSS)>>20), fmt.Sprintf("MiB-peak-RSS-%d-files", last.files))
	}
}

// putRun is one put of the seed scenario.
type putRun struct {
	digest         string
	meta           map[string]string
	phase          map[string]time.Duration // "daemon start", "load", "build", "push", "total"
	sent, received int64                    // on the link
	need           int64                    // compressed new layers + config
}

func (s *putRun) add(r putRun) {
	if s.phase == nil {
		s.phase = map[string]time.Duration{}
	}
	for k, v := range r.phase {
		s.phase[k] += v
	}
	s.sent += r.sent
	s.received += r.received
}

func sumTotal(runs []putRun) time.Duration {
	var d time.Duration
	for _, r := range runs {
		d += r.phase["total"]
	}
	return d
}

// put runs the put in-process, as test/out_test.go does: an isolated
// daemon, RUN steps without network, under the repository-wide dockerd lock.
func put(b testing.TB, srcDir string, reg *testenv.Registry, repo string, params map[string]any) putRun {
	b.Helper()
	return putHooked(b, srcDir, reg, repo, params, nil)
}

// putHooked is put with hook adjusting the put's test hooks.
func putHooked(b testing.TB, srcDir string, reg *testenv.Registry, repo string, params map[string]any, hook func(*resource.Hooks)) putRun {
	b.Helper()
	unlock := lockDockerd(b)
	defer unlock()
	req, _ := json.Marshal(map[string]any{
		"source": map[string]any{"repository": reg.Host + "/" + repo, "username": reg.Username, "password": reg.Password},
		"params": params,
	})
	var out, stderr strings.Builder
	env := resource.Env{Stdin: strings.NewReader(string(req)), Stdout: &out, Stderr: &stderr, Args: []string{"out", srcDir}}
	env.Hooks.Daemon = func(o *daemon.Options) { o.Isolated = true }
	env.Hooks.BuildNetwork = "none"
	if hook != nil {
		hook(&env.Hooks)
	}
	if err := resource.Out(context.Background(), env); err != nil {
		b.Fatalf("put %s %v: %v\n%s", repo, params, err, stderr.String())
	}
	var resp protocol.Response
	if err := json.Unmarshal([]byte(out.String()), &resp); err != nil {
		b.Fatalf("put's stdout %q: %v", out.String(), err)
	}
	r := putRun{digest: resp.Version.Digest, meta: map[string]string{}, phase: map[string]time.Duration{}}
	for _, m := range resp.Metadata {
		r.meta[m.Name] = m.Value
		if n, ok := strings.CutPrefix(m.Name, "time "); ok {
			d, err := time.ParseDuration(m.Value)
			if err != nil {
				b.Fatalf("metadata %s=%q: %v", m.Name, m.Value, err)
			}
			r.phase[n] = d
		}
	}
	return r
}

// newBytes is the compressed size of the layers the image adds to its base
// of baseLayers layers, plus its config.
func newBytes(b *testing.B, reg *testenv.Registry, ref string, baseLayers int) int64 {
	b.Helper()
	img, err := remote.Image(reg.Ref(b, ref), reg.RemoteOptions()...)
	if err != nil {
		b.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		b.Fatal(err)
	}
	n := m.Config.Size
	for _, l := range m.Layers[baseLayers:] {
		n += l.Size
	}
	return n
}

// lockWait is the time the suite waited for other tests' dockerd.
var lockWait time.Duration

// lockDockerd takes the repository-wide dockerd lock and adds the wait to
// lockWait.
func lockDockerd(b testing.TB) (unlock func()) {
	b.Helper()
	start := time.Now()
	unlock = testenv.LockDockerd(b)
	lockWait += time.Since(start)
	return unlock
}

// benchScale reads BENCH_SCALE (default 1): the factor on every image size.
func benchScale(b *testing.B) float64 {
	v := os.Getenv("BENCH_SCALE")
	if v == "" {
		return 1
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		b.Fatalf("BENCH_SCALE=%q: want a positive number", v)
	}
	return f
}

func dockerdVersion() string {
	out, err := exec.Command("dockerd", "--version").Output()
	if err != nil {
		return "dockerd --version: " + err.Error()
	}
	return strings.TrimSpace(string(out))
}
