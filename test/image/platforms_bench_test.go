package image

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/test/scalebench"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/docker/api/types/mount"
)

// BenchmarkImagePlatforms (`make bench-platforms`) measures how to build two
// platforms on the image's dockerd 26.1 (issue 16): one put with
// params.platforms (one BuildKit solve, both platforms at once, one index)
// against one put per platform (what building each platform on its own and
// assembling an index would cost at the least). The Dockerfile
// cross-compiles: a 5 s build stage on the build platform making 16 MiB per
// target platform, copied into each platform's stage of a two-platform
// load_base. Every put starts its own dockerd. BENCH_RUNS (3) runs, the
// medians reported; BENCH_OUT gets the section "platforms image".
func BenchmarkImagePlatforms(b *testing.B) {
	runs := 3
	if v := os.Getenv("BENCH_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("BENCH_RUNS=%q: want a positive whole number", v)
		}
		runs = n
	}
	e, source, srcDir := startPlatformsEnv(b)
	writeTestFile(b, filepath.Join(srcDir, "heavy/Dockerfile"), []byte(`FROM --platform=$BUILDPLATFORM registry:5000/multi/base:1 AS build
ARG TARGETPLATFORM
RUN sleep 5 && echo "$TARGETPLATFORM" > /target && dd if=/dev/urandom of=/artifact bs=1M count=16
FROM registry:5000/multi/base:1
COPY --from=build /target /artifact /
`))
	n := 0
	put := func(platforms ...string) time.Duration {
		n++
		r := e.run(step{
			Cmd: []string{"/opt/resource/out", "/tmp/build/put"},
			Req: map[string]any{"source": source(fmt.Sprintf("multi/bench-%d", n), nil),
				"params": map[string]any{"build": "heavy", "load_base": "base", "platforms": platforms}},
			Binds: []mount.Mount{{Type: mount.TypeBind, Source: srcDir, Target: "/tmp/build/put"}},
		})
		if r.Code != 0 {
			b.Fatalf("put %v exited %d:\n%s", platforms, r.Code, r.Stderr)
		}
		return r.Took
	}
	var one, apart, amd, arm []time.Duration
	for range runs {
		one = append(one, put("linux/amd64", "linux/arm64"))
		a, m := put("linux/amd64"), put("linux/arm64")
		amd, arm, apart = append(amd, a), append(arm, m), append(apart, a+m)
	}
	host, _ := os.Hostname()
	var t strings.Builder
	fmt.Fprintf(&t, "## Two platforms in one put or one put each, image's dockerd 26.1 (`make bench-platforms`)\n\n"+
		"Machine: %s, %s memory, %s. A cross-compiling Dockerfile: a 5 s build stage on the build platform making 16 MiB for each "+
		"target platform, copied into each platform's stage of a two-platform load_base (a get with params.platforms, deleted from the registry). "+
		"Each put runs in a fresh container of the image and starts its own dockerd (the containerd store); its time runs from the exec to its exit. "+
		"Median of BENCH_RUNS=%d runs.\n\n", host, size(scalebench.MemTotal()), time.Now().UTC().Format("2006-01-02 15:04 MST"), runs)
	t.WriteString("| two platforms | wall time |\n|---|---|\n")
	fmt.Fprintf(&t, "| one put, `platforms: [linux/amd64, linux/arm64]` (one solve, one index) | **%s** |\n", scalebench.Median(one).Round(10*time.Millisecond))
	fmt.Fprintf(&t, "| one put per platform, one after the other (no index: the least per-platform builds cost) | **%s** (%s + %s) |\n",
		scalebench.Median(apart).Round(10*time.Millisecond), scalebench.Median(amd).Round(10*time.Millisecond), scalebench.Median(arm).Round(10*time.Millisecond))
	fmt.Fprintf(&t, "| one put / one per platform | %.2fx |\n", scalebench.Median(one).Seconds()/scalebench.Median(apart).Seconds())
	fmt.Print("\n" + t.String())
	if out := os.Getenv("BENCH_OUT"); out != "" {
		if err := testenv.WriteSection(out, "platforms image", t.String()); err != nil {
			b.Fatal(err)
		}
	}
}

func size(n int64) string { return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30)) }
