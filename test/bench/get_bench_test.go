// Package bench measures the resource against the old resource's way of doing
// the same work, on the same registry in the same run. Run with
// `make bench-get`; it prints a table and is never part of `make test`.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	dregistry "github.com/docker/docker/api/types/registry"
)

// BenchmarkGet compares a get with save: true (this resource: no daemon)
// against the old resource's get (start dockerd, pull by digest, save,
// create a container and export its filesystem) for a ~300 MiB, 4-layer
// image, then measures the get's peak memory on a ~1 GiB image.
func BenchmarkGet(b *testing.B) {
	bin := buildIn(b)
	reg := testenv.StartRegistry(b, testenv.RegistryOptions{})
	const mib = 1 << 20

	img := testenv.BusyboxImage(b, testenv.ImageOptions{RandomLayers: []int64{100 * mib, 100 * mib, 100 * mib}})
	digest := reg.Push(b, "bench/get:300m", img).String()
	repo := reg.Host + "/bench/get"

	var ours, old time.Duration
	var oursRSS int64
	var oursSize, oldSize int64
	for i := 0; i < b.N; i++ {
		// Ours: the median of three runs; the old way takes long enough to
		// run once.
		var runs []time.Duration
		for range 3 {
			dest := b.TempDir()
			d, rss := runGet(b, bin, dest, reg, "bench/get", "300m", digest, true)
			runs = append(runs, d)
			oursRSS = max(oursRSS, rss)
			oursSize = fileSize(b, filepath.Join(dest, "image"))
			os.RemoveAll(dest)
		}
		slices.Sort(runs)
		ours = runs[1]

		start := time.Now()
		d := testenv.StartDockerd(b)
		oldSize = oldWay(b, d, reg, repo+"@"+digest, b.TempDir())
		old = time.Since(start)
		d.Stop()
	}

	big := testenv.BusyboxImage(b, testenv.ImageOptions{RandomLayers: []int64{256 * mib, 256 * mib, 256 * mib, 256 * mib}, RandomSeed: 7})
	bigDigest := reg.Push(b, "bench/get:1g", big).String()
	bigTime, bigRSS := runGet(b, bin, b.TempDir(), reg, "bench/get", "1g", bigDigest, true)

	host, _ := os.Hostname()
	var t strings.Builder
	fmt.Fprintf(&t, "\n# get benchmark (%s, %d cores, %s)\n\n", host, numCPU(), time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&t, "| case | time | peak RSS | image file |\n|---|---|---|---|\n")
	fmt.Fprintf(&t, "| this resource: get save:true, 300 MiB / 4 layers (median of 3) | %s | %d MiB | %d MiB |\n", ours.Round(10*time.Millisecond), oursRSS>>20, oursSize>>20)
	fmt.Fprintf(&t, "| old way: start dockerd, pull, save, export into rootfs/, same image | %s | - | %d MiB (docker save) |\n", old.Round(10*time.Millisecond), oldSize>>20)
	fmt.Fprintf(&t, "| this resource: get save:true, 1 GiB / 5 layers | %s | %d MiB | - |\n", bigTime.Round(10*time.Millisecond), bigRSS>>20)
	fmt.Fprintf(&t, "\nspeed-up on the 300 MiB image: %.1fx\n", old.Seconds()/ours.Seconds())
	fmt.Print(t.String())
	if out := os.Getenv("BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(strings.TrimPrefix(t.String(), "\n")), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(old.Seconds()/ours.Seconds(), "x-faster")
	b.ReportMetric(float64(bigRSS>>20), "MiB-peak-RSS-1GiB")
}

// runGet runs the real `in` binary and returns its wall time and peak RSS.
func runGet(b testing.TB, bin, dest string, reg *testenv.Registry, repo, tag, digest string, save bool) (time.Duration, int64) {
	b.Helper()
	return runGetWith(b, bin, dest, reg, repo, tag, digest, map[string]any{"save": save})
}

// runGetWith is runGet with any params.
func runGetWith(b testing.TB, bin, dest string, reg *testenv.Registry, repo, tag, digest string, params map[string]any) (time.Duration, int64) {
	b.Helper()
	req, _ := json.Marshal(map[string]any{
		"source":  map[string]any{"repository": reg.Host + "/" + repo, "tag": tag, "username": reg.Username, "password": reg.Password},
		"version": map[string]any{"digest": digest},
		"params":  params,
	})
	cmd := exec.Command(bin, dest)
	cmd.Stdin = strings.NewReader(string(req))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	peak := testenv.PeakRSS(cmd.Process.Pid)
	if err := cmd.Wait(); err != nil {
		b.Fatalf("in: %v\n%s", err, stderr.String())
	}
	elapsed := time.Since(start)
	return elapsed, <-peak
}

// oldWay does what the old resource's get did, through the Engine API:
// pull by digest, docker save to a file, create a container and export it.
func oldWay(b *testing.B, d *testenv.Dockerd, reg *testenv.Registry, ref, dir string) int64 {
	b.Helper()
	ctx := context.Background()
	cli := d.Client()
	auth, _ := dregistry.EncodeAuthConfig(dregistry.AuthConfig{Username: reg.Username, Password: reg.Password, ServerAddress: reg.Host})
	rc, err := cli.ImagePull(ctx, ref, image.PullOptions{RegistryAuth: auth})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := testenv.ReadJSONStream(rc); err != nil {
		b.Fatalf("pull: %v", err)
	}
	rc.Close()
	saved := filepath.Join(dir, "image")
	copyTo(b, saved, func() (io.ReadCloser, error) { return cli.ImageSave(ctx, []string{ref}) })
	c, err := cli.ContainerCreate(ctx, &container.Config{Image: ref, Cmd: []string{"true"}}, &container.HostConfig{NetworkMode: "none"}, nil, nil, "")
	if err != nil {
		b.Fatal(err)
	}
	// The old get always unpacked the export into rootfs/ (docker export | tar -x).
	rootfs := filepath.Join(dir, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		b.Fatal(err)
	}
	export, err := cli.ContainerExport(ctx, c.ID)
	if err != nil {
		b.Fatal(err)
	}
	defer export.Close()
	untar := exec.Command("tar", "-x", "-C", rootfs)
	untar.Stdin = export
	if out, err := untar.CombinedOutput(); err != nil {
		b.Fatalf("tar -x: %v\n%s", err, out)
	}
	return fileSize(b, saved)
}

func copyTo(b *testing.B, path string, open func() (io.ReadCloser, error)) {
	b.Helper()
	rc, err := open()
	if err != nil {
		b.Fatal(err)
	}
	defer rc.Close()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, rc); err != nil {
		b.Fatal(err)
	}
}

func fileSize(b *testing.B, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	return fi.Size()
}

// buildIn builds cmd/in, or returns BENCH_IN when set: a binary built
// elsewhere (e.g. from an older commit, to measure before and after).
func buildIn(b *testing.B) string {
	if bin := os.Getenv("BENCH_IN"); bin != "" {
		return bin
	}
	dir := b.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/in", "../../cmd/in")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return dir + "/in"
}

func numCPU() int {
	out, _ := exec.Command("nproc").Output()
	n := 0
	fmt.Sscan(string(out), &n)
	return n
}
