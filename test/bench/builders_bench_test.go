package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/test/scalebench"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/go-units"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// BenchmarkBuilders compares the classic builder and BuildKit on the put that
// matters: a build on a ~300 MiB base loaded with load_base, then the same
// build again with `cache: true` (a cache hit: BuildKit through the inline
// cache metadata the first put embedded). Each put starts its own daemon, as
// in production. Run with
//
//	go test -run '^$' -bench BenchmarkBuilders -benchtime 1x -timeout 30m ./test/bench/
//
// (BENCH_OUT=file also writes the table there; BENCH_SCALE=0.1 for a quick run).
func BenchmarkBuilders(b *testing.B) {
	const mib = 1 << 20
	scale := benchScale(b)
	reg := testenv.StartRegistry(b, testenv.RegistryOptions{})
	files := testenv.HostFiles{Roots: []string{"/usr/lib"}, Budget: int64(300 * mib * scale)}.Collect(b)
	var layers []v1.Layer
	for _, group := range testenv.SplitHostFiles(files, 3) {
		layers = append(layers, testenv.HostFilesLayer(b, group))
	}
	base := testenv.AppendLayers(b, testenv.BusyboxImage(b, testenv.ImageOptions{}), layers...)
	baseDigest := reg.Push(b, "bench/builders-base:1", base)
	work := b.TempDir()
	get(b, reg, filepath.Join(work, "base"), "bench/builders-base", "1", baseDigest.String())
	testenv.CopyHostFiles(b, testenv.HostFiles{Roots: []string{"/usr/share"}, Budget: int64(20 * mib * scale)}.Collect(b), filepath.Join(work, "app", "files"))
	writeFile(b, filepath.Join(work, "app", "Dockerfile"), "FROM "+reg.Host+"/bench/builders-base:1\n"+
		"RUN mkdir -p /opt/app && echo one > /opt/app/one\nCOPY files /opt/app/files\nRUN ls -R /opt/app | wc -l > /opt/app/count\n")

	const rounds = 3
	type row struct {
		name string
		runs []putRun
	}
	var rows []row
	for _, builder := range []int{0, 1} {
		name := map[int]string{0: "classic", 1: "BuildKit"}[builder]
		fresh, cached := row{name: name + ", load_base"}, row{name: name + ", load_base + cache: true (hit)"}
		for i := range rounds {
			repo := fmt.Sprintf("bench/builders-%d-%d", builder, i)
			params := map[string]any{"build": "app", "load_base": "base", "docker_buildkit": builder, "cache": true}
			fresh.runs = append(fresh.runs, put(b, work, reg, repo, params)) // cache miss: nothing pushed yet
			cached.runs = append(cached.runs, put(b, work, reg, repo, params))
		}
		rows = append(rows, fresh, cached)
	}

	hs := func(n int64) string { return units.BytesSize(float64(n)) }
	rdp := func(d time.Duration) string {
		if d == 0 {
			return "-"
		}
		return d.Round(10 * time.Millisecond).String()
	}
	var t strings.Builder
	fmt.Fprintf(&t, "\n## Builders: classic against BuildKit (`make bench-builders`)\n\n")
	fmt.Fprintf(&t, "dockerd %s, %s base in 4 layers loaded with load_base, a 3-step Dockerfile adding %s of files; medians of %d puts, each with a fresh daemon. "+
		"The second row of each builder repeats the put with `cache: true`: the classic builder pulls the image and uses it as cache; BuildKit reads the inline cache metadata the first put embedded.\n\n",
		dockerdVersion(), hs(testenv.HostFilesSize(files)), hs(int64(20*mib*scale)), rounds)
	fmt.Fprintf(&t, "| builder | daemon start | load | build | push | total |\n|---|---|---|---|---|---|\n")
	for _, r := range rows {
		med := func(phase string) string {
			var ds []time.Duration
			for _, run := range r.runs {
				ds = append(ds, run.phase[phase])
			}
			return rdp(scalebench.Median(ds))
		}
		fmt.Fprintf(&t, "| %s | %s | %s | %s | %s | %s |\n", r.name, med("daemon start"), med("load"), med("build"), med("push"), med("total"))
	}
	fmt.Print(t.String())
	if out := os.Getenv("BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(strings.TrimPrefix(t.String(), "\n")), 0o644); err != nil {
			b.Fatal(err)
		}
	}
}
