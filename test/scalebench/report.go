package scalebench

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/go-units"
)

// Report is one Target's results.
type Report struct {
	Config   Config
	Target   string
	Describe string
	Dockerd  string
	Sizes    []SizeResult
	Ten      TenResult
	Stages   *StagesResult // CacheTargets only
	Took     time.Duration
}

// SizeResult is every step on one base, each run's time.
type SizeResult struct {
	Base                        *Base
	Get, Floor                  []time.Duration
	GetRSS                      int64
	LoadBase, FromPulled, Cache []PutResult
	// DockerLoad is the load_base put with its base loaded by docker load
	// instead of written into the layer store: the load before issue 14.
	DockerLoad []PutResult
}

// TenResult is the ten puts on one base.
type TenResult struct {
	Base                 *Base
	Get                  time.Duration
	LoadBase, FromPulled []PutResult
}

// Publish prints the report and, with BENCH_OUT set, writes it into that
// file as the section "bench-scale <target>", the rest of the file kept.
func Publish(b *testing.B, r *Report) {
	sections := map[string]string{}
	if len(r.Sizes) > 0 {
		sections["bench-scale "+r.Target] = r.Markdown()
	}
	if r.Stages != nil {
		// A section of its own: BENCH_SCALE_PARTS=stages refreshes it
		// alone.
		sections["bench-scale "+r.Target+" stages"] = r.stagesMarkdown()
	}
	for _, name := range slices.Sorted(maps.Keys(sections)) {
		fmt.Print("\n" + sections[name])
		if out := os.Getenv("BENCH_OUT"); out != "" {
			if err := testenv.WriteSection(out, name, sections[name]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// stagesMarkdown is the multi-stage puts' section.
func (r *Report) stagesMarkdown() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("## Scale: %s, dockerd %s, a multi-stage put on a fresh worker (`make bench-scale`)\n\nMachine: %s, %s, %s memory, %s; %s. Command: `%s`. %s Each time is the median of BENCH_RUNS=%d runs.\n",
		r.Target, r.Dockerd, host, cores(), units.BytesSize(float64(MemTotal())), time.Now().UTC().Format("2006-01-02 15:04 MST"), workFS(),
		r.Config.Command(), r.Describe, r.Config.Runs) + r.Stages.markdown()
}

// Markdown is the report's section: a heading, the machine and the
// command, a table with a column per base size, the ten puts.
func (r *Report) Markdown() string {
	var t strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&t, "## Scale: %s, dockerd %s (`make bench-scale`)\n\n", r.Target, r.Dockerd)
	fs := workFS()
	fmt.Fprintf(&t, "Machine: %s, %s, %s memory, %s; %s. Command: `%s`; this part took %s. %s "+
		"Each time is the median of BENCH_RUNS=%d runs, `sync` before each; every put starts its own dockerd, as always, and builds with BuildKit; "+
		"the registry is unthrottled. Phases are the put's own metadata (`time daemon start`, `time load`, `time build`, `time push`, `time total`). "+
		"The load_base puts run with the base deleted from the registry (its manifest refused; the registry's log is checked for it), "+
		"each load_base and FROM put pushes a new repository, the cache: true puts push the repository:tag an untimed cache: true put pushed first.\n\n",
		host, cores(), units.BytesSize(float64(MemTotal())), time.Now().UTC().Format("2006-01-02 15:04 MST"), fs,
		r.Config.Command(), dur(r.Took), r.Describe, r.Config.Runs)

	row := func(name string, cell func(s SizeResult) string) {
		fmt.Fprintf(&t, "| %s |", name)
		for _, s := range r.Sizes {
			fmt.Fprintf(&t, " %s |", cell(s))
		}
		t.WriteString("\n")
	}
	t.WriteString("| base (uncompressed) |")
	for _, s := range r.Sizes {
		fmt.Fprintf(&t, " %d MiB |", s.Base.MiB)
	}
	t.WriteString("\n|---|" + strings.Repeat("---|", len(r.Sizes)) + "\n")
	first := r.Sizes[0]
	row("base: uncompressed / compressed", func(s SizeResult) string { return size(s.Base.Raw) + " / " + size(s.Base.Zip) })
	row("base: layers / files", func(s SizeResult) string { return fmt.Sprintf("%d / %d", len(s.Base.Blobs), s.Base.Files) })
	row("get `save: true` (`in`)", func(s SizeResult) string { return dur(Median(s.Get)) })
	row("get: peak RSS", func(s SizeResult) string { return fmt.Sprintf("%d MiB", s.GetRSS>>20) })
	row("floor: `tar -xzf` of every layer blob", func(s SizeResult) string { return dur(Median(s.Floor)) })
	row("get / floor", func(s SizeResult) string { return ratio(Median(s.Get), Median(s.Floor)) })
	row("**load_base put: total**", func(s SizeResult) string { return "**" + dur(phase(s.LoadBase, "total")) + "**" })
	for _, p := range []string{"daemon start", "load", "build", "push"} {
		row("— "+p, func(s SizeResult) string { return dur(phase(s.LoadBase, p)) })
	}
	row("— push: uploaded", func(s SizeResult) string { return last(s.LoadBase, "uploaded") })
	row("same put, base through `docker load` (before): total", func(s SizeResult) string { return dur(phase(s.DockerLoad, "total")) })
	row("— load", func(s SizeResult) string { return dur(phase(s.DockerLoad, "load")) })
	row("**FROM pulled put: total**", func(s SizeResult) string { return "**" + dur(phase(s.FromPulled, "total")) + "**" })
	row("— build (with the pull of FROM)", func(s SizeResult) string { return dur(phase(s.FromPulled, "build")) })
	row("— push", func(s SizeResult) string { return dur(phase(s.FromPulled, "push")) })
	row("— push: uploaded", func(s SizeResult) string { return last(s.FromPulled, "uploaded") })
	row("**cache: true put: total**", func(s SizeResult) string { return "**" + dur(phase(s.Cache, "total")) + "**" })
	row("— build (with the pull of FROM and the cache)", func(s SizeResult) string { return dur(phase(s.Cache, "build")) })
	row("load_base / FROM pulled (totals)", func(s SizeResult) string {
		return ratio(phase(s.LoadBase, "total"), phase(s.FromPulled, "total"))
	})
	row("load / floor", func(s SizeResult) string { return ratio(phase(s.LoadBase, "load"), Median(s.Floor)) })
	row("load / docker load", func(s SizeResult) string { return ratio(phase(s.LoadBase, "load"), phase(s.DockerLoad, "load")) })
	row(fmt.Sprintf("load_base push / at %d MiB", first.Base.MiB), func(s SizeResult) string {
		return ratio(phase(s.LoadBase, "push"), phase(first.LoadBase, "push"))
	})

	ten := r.Ten
	lb, from := sum(ten.LoadBase, "total"), sum(ten.FromPulled, "total")
	fmt.Fprintf(&t, "\nTen puts on one %d MiB base (%d files, %s compressed), ten small Dockerfiles (a COPY of 4 MiB of /usr/share and a RUN each), each put once, to a repository of its own:\n\n",
		ten.Base.MiB, ten.Base.Files, size(ten.Base.Zip))
	t.WriteString("| seed scenario | time |\n|---|---|\n")
	fmt.Fprintf(&t, "| load_base: one get + ten puts (base deleted from the registry) | %s + %s = **%s** |\n", dur(ten.Get), dur(lb), dur(ten.Get+lb))
	fmt.Fprintf(&t, "| FROM pulled: ten puts | **%s** |\n", dur(from))
	fmt.Fprintf(&t, "| load_base / FROM pulled | %s |\n", ratio(ten.Get+lb, from))
	return t.String()
}

// workFS says where the work folders were (scripts/journaled-fs.sh sets
// BENCH_FS_NOTE).
func workFS() string {
	if n := os.Getenv("BENCH_FS_NOTE"); n != "" {
		return n
	}
	return "work folders on the root filesystem"
}

// Median is the middle of ds (0 for none); the benchmarks report medians.
func Median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// phase is the median of one phase over the runs.
func phase(runs []PutResult, name string) time.Duration {
	var ds []time.Duration
	for _, r := range runs {
		ds = append(ds, r.Phase[name])
	}
	return Median(ds)
}

func sum(runs []PutResult, name string) time.Duration {
	var d time.Duration
	for _, r := range runs {
		d += r.Phase[name]
	}
	return d
}

// last is a metadata field of the last run ("-" when it has none: a push
// through the daemon reports no bytes).
func last(runs []PutResult, name string) string {
	if len(runs) == 0 || runs[len(runs)-1].Meta[name] == "" {
		return "-"
	}
	return runs[len(runs)-1].Meta[name]
}

func dur(d time.Duration) string {
	if d >= 10*time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}

func ratio(a, b time.Duration) string {
	if b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a.Seconds()/b.Seconds())
}

func size(n int64) string { return units.BytesSize(float64(n)) }

func cores() string {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return "? cores"
	}
	return strings.TrimSpace(string(out)) + " cores"
}

// MemTotal is the machine's memory, for the benchmarks' machine line.
func MemTotal() int64 {
	st, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(st), "\n") {
		if kb, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			var n int64
			fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(kb), " kB"), &n)
			return n << 10
		}
	}
	return 0
}
