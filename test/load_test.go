package test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/resource"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

// getMemoryBound is the peak RSS a get may reach, whatever the image's
// size: blobs are streamed to disk and files written from them, so memory
// does not grow with the image (make bench measures 15 MiB for 1 GiB).
const getMemoryBound = 64 << 20

// treeSum hashes a folder's tree: names, types, modes, link targets and
// file contents.
func treeSum(t *testing.T, root string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v\n", rel, fi.Mode())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "-> %s\n", l)
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("hashing %s: %v", root, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestLoadConcurrentGets: 8 gets (save: true) of one 200 MiB image into 8
// folders at once, through the built in binary, against one registry. All
// succeed, with the same files, each under the get's memory bound.
func TestLoadConcurrentGets(t *testing.T) {
	const gets = 8
	bin := buildBinaries(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	// Random bytes: compressed, the layers are as big as unpacked.
	img := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{50 << 20, 50 << 20, 50 << 20, 50 << 20}, RandomSeed: 8})
	digest := reg.Push(t, "load/get:1", img).String()
	id, _ := img.ConfigName()
	req, _ := json.Marshal(map[string]any{
		"source":  source(reg, "load/get", map[string]any{"tag": "1"}),
		"version": map[string]any{"digest": digest},
		"params":  map[string]any{"save": true},
	})

	type run struct {
		dest   string
		err    error
		stderr string
		took   time.Duration
		rss    int64
	}
	runs := make([]run, gets)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range runs {
		runs[i].dest = filepath.Join(t.TempDir(), "get")
		wg.Add(1)
		go func(r *run) {
			defer wg.Done()
			cmd := exec.Command(filepath.Join(bin, "in"), r.dest)
			cmd.Stdin = bytes.NewReader(req)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			t0 := time.Now()
			if r.err = cmd.Start(); r.err != nil {
				return
			}
			peak := testenv.PeakRSS(cmd.Process.Pid)
			r.err = cmd.Wait()
			r.took, r.rss, r.stderr = time.Since(t0), <-peak, stderr.String()
		}(&runs[i])
	}
	wg.Wait()
	wall := time.Since(start)

	var maxRSS int64
	for i, r := range runs {
		if r.err != nil {
			t.Errorf("get %d: %v\n%s", i, r.err, r.stderr)
			continue
		}
		maxRSS = max(maxRSS, r.rss)
		t.Logf("get %d: %s, peak RSS %.1f MiB", i, r.took.Round(10*time.Millisecond), float64(r.rss)/(1<<20))
		if r.rss > getMemoryBound {
			t.Errorf("get %d: peak RSS %d MiB, above the bound of %d MiB", i, r.rss>>20, getMemoryBound>>20)
		}
	}
	if t.Failed() {
		return
	}
	t.Logf("%d concurrent gets of a %d MiB image: %s wall, highest peak RSS %.1f MiB", gets, 200, wall.Round(10*time.Millisecond), float64(maxRSS)/(1<<20))

	// Every folder holds the same, right files.
	wantRootfs := treeSum(t, filepath.Join(runs[0].dest, "rootfs"))
	wantImage := fileSum(t, filepath.Join(runs[0].dest, "image"))
	for i, r := range runs {
		if got := strings.TrimSpace(readFile(t, filepath.Join(r.dest, "image-id"))); got != id.String() {
			t.Errorf("get %d: image-id %s, want %s", i, got, id)
		}
		if got := strings.TrimSpace(readFile(t, filepath.Join(r.dest, "digest"))); got != digest {
			t.Errorf("get %d: digest %s, want %s", i, got, digest)
		}
		if i == 0 {
			continue
		}
		if got := treeSum(t, filepath.Join(r.dest, "rootfs")); got != wantRootfs {
			t.Errorf("get %d: rootfs/ differs from get 0's", i)
		}
		if got := fileSum(t, filepath.Join(r.dest, "image")); got != wantImage {
			t.Errorf("get %d: image differs from get 0's", i)
		}
	}
	if fi, err := os.Stat(filepath.Join(runs[0].dest, "image")); err != nil || fi.Size() < 200<<20 {
		t.Errorf("image: %v %v", fi, err)
	}
}

var dataRootLine = regexp.MustCompile(`starting dockerd \(data root (\S+),`)

// TestLoadConcurrentPuts: 3 puts at once, each with its own daemon (own
// state folder, data root, sockets, mount namespace and network namespace
// with its own bridge), building on one loaded base and pushing to one
// registry. All succeed and leave nothing behind. The dockerd lock is held
// once for the whole test, so no other test's daemon runs meanwhile.
func TestLoadConcurrentPuts(t *testing.T) {
	const puts = 3
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	base := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{8 << 20}})
	baseDigest := reg.Push(t, "load/base:1", base).String()
	srcDir := t.TempDir()
	getOK(t, filepath.Join(srcDir, "base"), map[string]any{
		"source": source(reg, "load/base", map[string]any{"tag": "1"}), "version": map[string]any{"digest": baseDigest},
		"params": map[string]any{"save": true},
	})
	// RUN steps use the daemon's default bridge, in its own network
	// namespace: each sees its own eth0 on its own docker0.
	writeFiles(t, srcDir, map[string]string{
		"app/Dockerfile": "FROM " + reg.Host + "/load/base:1\nARG N\nRUN ip -o addr show eth0 > /net && echo \"$N\" > /n\nCOPY data /data\n",
		"app/data":       strings.Repeat("concurrent put\n", 100000),
	})

	unlock := testenv.LockDockerd(t)
	defer unlock()
	before := testenv.Leftovers()

	type run struct {
		stdout, stderr strings.Builder
		err            error
		took           time.Duration
	}
	runs := make([]*run, puts)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range runs {
		r := &run{}
		runs[i] = r
		b, _ := json.Marshal(map[string]any{
			"source": source(reg, fmt.Sprintf("load/app%d", i), nil),
			"params": map[string]any{"build": "app", "load_base": "base", "build_args": map[string]any{"N": i}},
		})
		env := resource.Env{Stdin: bytes.NewReader(b), Stdout: &r.stdout, Stderr: &r.stderr, Args: []string{"out", srcDir}}
		env.Hooks.Daemon = func(o *daemon.Options) { o.PrivateNetwork = true }
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			r.err = resource.Out(t.Context(), env)
			r.took = time.Since(t0)
		}()
	}
	wg.Wait()
	t.Logf("%d concurrent puts: %s wall", puts, time.Since(start).Round(10*time.Millisecond))

	var roots []string
	for i, r := range runs {
		if r.err != nil {
			t.Errorf("put %d: %v\n%s", i, r.err, r.stderr.String())
			continue
		}
		t.Logf("put %d: %s", i, r.took.Round(10*time.Millisecond))
		if testing.Verbose() {
			t.Logf("put %d's log:\n%s", i, r.stderr.String())
		}
		m := dataRootLine.FindStringSubmatch(r.stderr.String())
		if m == nil {
			t.Errorf("put %d: no data root in the log", i)
		} else {
			roots = append(roots, m[1])
		}
		var resp struct {
			Version struct{ Digest string }
		}
		if err := json.Unmarshal([]byte(r.stdout.String()), &resp); err != nil {
			t.Errorf("put %d: stdout %q", i, r.stdout.String())
			continue
		}
		if got := assertComplete(t, reg, fmt.Sprintf("load/app%d:latest", i)); got.String() != resp.Version.Digest {
			t.Errorf("put %d: the registry has %s, the put said %s", i, got, resp.Version.Digest)
		}
	}
	slices.Sort(roots)
	if len(slices.Compact(slices.Clone(roots))) != len(roots) {
		t.Errorf("the daemons shared a data root: %v", roots)
	}

	for _, l := range testenv.LeftoversSince(before, 10*time.Second) {
		t.Errorf("left behind after the puts: %s", l)
	}
}
