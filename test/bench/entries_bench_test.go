package bench

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

// entriesRun is one get of an image whose layer holds many empty files.
type entriesRun struct {
	files         int
	rootfsTime    time.Duration // get without params: rootfs/ only
	rootfsRSS     int64
	rootfsTarTime time.Duration // get with rootfs: true: rootfs/ and rootfs.tar
	rootfsTarRSS  int64
	layerBytes    int64 // compressed
}

// entriesCounts are the sizes P5 measures the get's memory at: it must not
// grow with the number of tar entries (issue 12, item 4).
var entriesCounts = []int{30_000, 300_000, 3_000_000}

// getEntries pushes, for each count, busybox plus one layer of that many
// empty files (1000 per folder) and measures the built in's peak RSS for
// rootfs/ alone and with rootfs.tar.
func getEntries(b *testing.B, reg *testenv.Registry, bin string, counts []int, logf func(string, ...any)) []entriesRun {
	b.Helper()
	var runs []entriesRun
	for _, n := range counts {
		logf("P5: %d empty files: making the layer", n)
		blobs := b.TempDir()
		layer := testenv.FileLayer(b, blobs, "gzip", testenv.EmptyFiles(n))
		img := testenv.AppendLayers(b, testenv.BusyboxImage(b, testenv.ImageOptions{}), layer)
		tag := fmt.Sprintf("files-%d", n)
		digest := reg.Push(b, "bench/entries:"+tag, img).String()
		os.RemoveAll(blobs)
		r := entriesRun{files: n}
		r.layerBytes, _ = layer.Size()
		for _, rootfsTar := range []bool{false, true} {
			logf("P5: %d empty files: get, rootfs: %v", n, rootfsTar)
			// A tmpfs: this machine's disk takes ~120 us to create an empty
			// file; the get's memory is the same on any filesystem.
			dest, unmount := testenv.Tmpfs(b, "size=8g,nr_inodes=8m")
			d, rss := runGetWith(b, bin, dest, reg, "bench/entries", tag, digest, map[string]any{"rootfs": rootfsTar})
			unmount()
			if rootfsTar {
				r.rootfsTarTime, r.rootfsTarRSS = d, rss
			} else {
				r.rootfsTime, r.rootfsRSS = d, rss
			}
		}
		runs = append(runs, r)
	}
	return runs
}

// entriesTable formats the runs as rows of the P5 table.
func entriesTable(runs []entriesRun) string {
	var t strings.Builder
	for _, r := range runs {
		fmt.Fprintf(&t, "| P5 | peak RSS of `in`, %d empty files in one layer (%s compressed), DEST a tmpfs: rootfs/ (took %s) | %d MiB |\n",
			r.files, humanBytes(r.layerBytes), r.rootfsTime.Round(100*time.Millisecond), r.rootfsRSS>>20)
		fmt.Fprintf(&t, "| P5 | peak RSS of `in`, %d empty files: rootfs/ and `rootfs: true` (took %s) | %d MiB |\n",
			r.files, r.rootfsTarTime.Round(100*time.Millisecond), r.rootfsTarRSS>>20)
	}
	return t.String()
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
}

// BenchmarkGetEntries is P5's entry-count part on its own: the get's peak
// memory for 30k, 300k and 3M empty files (BENCH_SCALE scales the counts).
//
//	go test -run '^$' -bench BenchmarkGetEntries -benchtime 1x -timeout 60m ./test/bench/
func BenchmarkGetEntries(b *testing.B) {
	began := time.Now()
	logf := func(format string, a ...any) {
		b.Logf("%s: "+format, append([]any{time.Since(began).Round(time.Second)}, a...)...)
	}
	reg := testenv.StartRegistry(b, testenv.RegistryOptions{})
	bin := buildIn(b)
	runs := getEntries(b, reg, bin, scaledCounts(benchScale(b)), logf)
	t := "| # | measure | result |\n|---|---|---|\n" + entriesTable(runs)
	fmt.Print("\n" + t)
	for _, r := range runs {
		b.ReportMetric(float64(r.rootfsTarRSS>>20), fmt.Sprintf("MiB-peak-RSS-%d-files", r.files))
	}
}

func scaledCounts(scale float64) []int {
	var out []int
	for _, n := range entriesCounts {
		out = append(out, max(int(float64(n)*scale), 1000))
	}
	return out
}
