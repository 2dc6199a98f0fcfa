package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// BenchmarkLoadBase measures what loading a load_base costs since its
// docker-save tarball goes to the daemon through baseimage.CopySave (the
// tarball's own tags left out, issue 12 item 6) instead of as the file
// itself: the same ~300 MiB base of real files (/usr/lib) from a get with
// save: true, loaded into a fresh daemon each round both ways. Run with
//
//	go test -run '^$' -bench BenchmarkLoadBase -benchtime 3x -timeout 30m ./test/bench/
func BenchmarkLoadBase(b *testing.B) {
	const mib = 1 << 20
	reg := testenv.StartRegistry(b, testenv.RegistryOptions{})
	ctx := context.Background()
	base, _ := filesBase(b)
	d := reg.Push(b, "bench/loadbase:1", base)
	baseDir := filepath.Join(b.TempDir(), "base")
	get(b, reg, baseDir, "bench/loadbase", "1", d.String())

	var stream, file []time.Duration
	for i := 0; i < max(b.N, 3); i++ {
		for _, way := range []string{"stream", "file"} {
			dd := testenv.StartDockerd(b)
			start := time.Now()
			var err error
			if way == "stream" {
				_, err = engine.LoadBase(ctx, dd.Client(), baseDir, nil)
			} else {
				_, err = engine.Load(ctx, dd.Client(), filepath.Join(baseDir, "image"), nil)
			}
			took := time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			if way == "stream" {
				stream = append(stream, took)
			} else {
				file = append(file, took)
			}
			if err := dd.Stop(); err != nil {
				b.Fatal(err)
			}
		}
	}
	med := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	b.ReportMetric(med(stream).Seconds(), "s/load-stream")
	b.ReportMetric(med(file).Seconds(), "s/load-file")
	fi, err := os.Stat(filepath.Join(baseDir, "image"))
	if err != nil {
		b.Fatal(err)
	}
	fmt.Printf("load_base of a %d MiB docker-save tarball, %d rounds, a fresh dockerd each:\n  through CopySave (tags left out): median %s %v\n  the file as it is (before):       median %s %v\n",
		fi.Size()/mib, len(stream), med(stream).Round(10*time.Millisecond), stream, med(file).Round(10*time.Millisecond), file)
}

// filesBase is the benchmarks' base: busybox, then three ~100 MiB layers of
// the machine's files (/usr/lib), and the files.
func filesBase(b *testing.B) (v1.Image, []testenv.HostFile) {
	files := testenv.HostFiles{Roots: []string{"/usr/lib"}, Budget: 300 << 20}.Collect(b)
	var layers []v1.Layer
	for _, group := range testenv.SplitHostFiles(files, 3) {
		layers = append(layers, testenv.HostFilesLayer(b, group))
	}
	return testenv.AppendLayers(b, testenv.BusyboxImage(b, testenv.ImageOptions{}), layers...), files
}
