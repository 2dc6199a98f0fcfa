package layerstore_test

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/pkg/layerstore"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"golang.org/x/sys/unix"
)

// TestMeasureLoad times the load phase of a base of real files
// (LAYERSTORE_MEASURE_MIB of /usr/lib, 4 gzip layers, as a get with save:
// true writes it): written into the layer store before dockerd starts
// versus docker load into a started dockerd, each on a fresh data root,
// sync before each, median of LAYERSTORE_MEASURE_RUNS (default 3). Only
// with LAYERSTORE_MEASURE_MIB set.
func TestMeasureLoad(t *testing.T) {
	mib, _ := strconv.Atoi(os.Getenv("LAYERSTORE_MEASURE_MIB"))
	if mib == 0 {
		t.Skip("LAYERSTORE_MEASURE_MIB not set")
	}
	runs := 3
	if n, _ := strconv.Atoi(os.Getenv("LAYERSTORE_MEASURE_RUNS")); n > 0 {
		runs = n
	}
	requireDockerd(t)
	dir := t.TempDir()
	files := testenv.HostFiles{Roots: []string{"/usr/lib"}, Budget: int64(mib) << 20, MaxFile: 4 << 20}.Collect(t)
	img := empty.Image
	var blobs []string // the layers' files, for the floor
	for _, g := range testenv.SplitHostFiles(files, 4) {
		l := testenv.FileLayer(t, dir, "gzip", testenv.HostFilesTar(g))
		img = testenv.AppendLayers(t, img, l)
		blobs = append(blobs, testenv.LayerFile(l))
	}
	folder := filepath.Join(dir, "base")
	testenv.SaveTarball(t, filepath.Join(folder, "image"), img, "measure/base:1")
	id, _ := img.ConfigName()
	for n, v := range map[string]string{"image-id": id.String(), "repository": "measure/base", "tag": "1"} {
		os.WriteFile(filepath.Join(folder, n), []byte(v), 0o644)
	}
	fi, _ := os.Stat(filepath.Join(folder, "image"))
	t.Logf("base: %d files, %d MiB of files, tarball %d MiB", len(files), testenv.HostFilesSize(files)>>20, fi.Size()>>20)

	if os.Getenv("LAYERSTORE_MEASURE_WRITE_ONLY") != "" {
		f, err := baseimage.Detect(folder, baseimage.HostPlatform())
		if err != nil {
			t.Fatal(err)
		}
		s := engine.PlanSeeding([]*baseimage.Folder{f}, engine.LoadOptions{}, testLog(t))
		unix.Sync()
		var r0, r1 unix.Rusage
		unix.Getrusage(unix.RUSAGE_SELF, &r0)
		t0 := time.Now()
		if err := s.Write(context.Background(), dataRoot(t, "w")); err != nil {
			t.Fatal(err)
		}
		took := time.Since(t0)
		unix.Getrusage(unix.RUSAGE_SELF, &r1)
		// CPU beside wall time tells a CPU-bound write (cpu near 2x wall on 2
		// cores) from one waiting for the disk.
		t.Logf("Write alone: %s (cpu: user %s, system %s)", took,
			time.Duration(r1.Utime.Nano()-r0.Utime.Nano()), time.Duration(r1.Stime.Nano()-r0.Stime.Nano()))
		unix.Sync()
		t.Logf("tar -xzf of every layer, one after another: %s", testenv.UntarFloor(t, blobs, dataRoot(t, "floor")))
		return
	}
	testenv.LockDockerd(t)
	var seeded, loaded, startSeeded, startPlain []time.Duration
	for i := 0; i < runs; i++ {
		s, st := measureOnce(t, folder, true)
		l, lt := measureOnce(t, folder, false)
		seeded, loaded = append(seeded, s), append(loaded, l)
		startSeeded, startPlain = append(startSeeded, st), append(startPlain, lt)
		t.Logf("run %d: written %s (dockerd start %s), docker load %s (dockerd start %s)", i+1, s, st, l, lt)
	}
	t.Logf("median of %d: load phase written into the layer store %s, docker load %s; dockerd start %s / %s",
		runs, median(seeded), median(loaded), median(startSeeded), median(startPlain))
}

// measureOnce starts a dockerd on a fresh data root and makes the base
// available, written first or docker-loaded: the load phase's time and
// dockerd's own start (exec to API).
func measureOnce(t *testing.T, folder string, seed bool) (load, start time.Duration) {
	t.Helper()
	f, err := baseimage.Detect(folder, baseimage.HostPlatform())
	if err != nil {
		t.Fatal(err)
	}
	var s *engine.Seeding
	var ds *daemon.Seed
	if seed {
		if s = engine.PlanSeeding([]*baseimage.Folder{f}, engine.LoadOptions{}, testLog(t)); s == nil {
			t.Fatal("the folder cannot be written into the layer store")
		}
		ds = &daemon.Seed{Driver: layerstore.Driver, Write: s.Write}
	}
	unix.Sync()
	d := startLocked(t, dataRoot(t, "m"), ds)
	defer stopDaemon(t, d)
	t0 := time.Now()
	if _, err := engine.LoadFolder(context.Background(), d.Client(), f, engine.LoadOptions{Seeded: s.Holds(f) && d.Seeded()}, testLog(t)); err != nil {
		t.Fatal(err)
	}
	if seed && !d.Seeded() {
		t.Fatal("the seed was not taken")
	}
	return time.Since(t0) + d.SeedTook(), d.Elapsed()
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2].Round(10 * time.Millisecond)
}
