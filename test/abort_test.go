package test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/resource"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// abortBound is how long a command may take to exit after SIGTERM.
const abortBound = 30 * time.Second

// aborted is what one SIGTERM did.
type aborted struct {
	code           int
	stdout, stderr string
	took           time.Duration // from SIGTERM to exit
}

// abortBinary runs the built command name with stdin req and args, sends it
// SIGTERM once ready(stderr so far) is true, and waits for it to exit. The
// command's temp folder (TMPDIR: the put's daemon state, the push's temp
// files) is a fresh one that must be empty afterwards, and nothing of it may
// be left on the host (processes, mounts, cgroups).
func abortBinary(t *testing.T, bin, name string, req map[string]any, ready func(stderr string) bool, args ...string) aborted {
	t.Helper()
	tmp := testenv.ShortTempDir(t, "ab-")
	before := testenv.Leftovers()
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, name), args...)
	cmd.Stdin = bytes.NewReader(b)
	var stdout bytes.Buffer
	var stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, resource.TestDaemonEnv+"=isolated")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(2 * time.Minute)
	for !ready(stderr.String()) {
		select {
		case err := <-exited:
			t.Fatalf("%s exited (%v) before the phase to abort:\n%s", name, err, stderr.String())
		case <-deadline:
			_ = cmd.Process.Kill()
			<-exited
			t.Fatalf("%s never reached the phase to abort:\n%s", name, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var a aborted
	select {
	case err := <-exited:
		a.took = time.Since(sent)
		a.code = -1
		if ee, ok := err.(*exec.ExitError); ok {
			a.code = ee.ExitCode()
		} else if err == nil {
			a.code = 0
		}
	case <-time.After(abortBound):
		_ = cmd.Process.Kill()
		<-exited
		t.Fatalf("%s did not exit within %s of SIGTERM:\n%s", name, abortBound, stderr.String())
	}
	a.stdout, a.stderr = stdout.String(), stderr.String()
	if testing.Verbose() {
		t.Logf("%s's log:\n%s", name, a.stderr)
	}
	if a.code != 1 || a.stdout != "" {
		t.Errorf("exit code %d, stdout %q; want 1 and nothing", a.code, a.stdout)
	}
	for _, l := range testenv.LeftoversSince(before, 10*time.Second) {
		t.Errorf("left behind after the abort: %s", l)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) > 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("temporary state left in TMPDIR: %v", names)
	}
	return a
}

// assertDaemonStopped checks, in the debug log of a put aborted after its
// dockerd started, that dockerd stopped by itself without waiting for an
// open request: dockerd 23+ logs "Error shutting down http server" after
// waiting 5 s for one (20.10 does not wait; PATH can name another dockerd).
func assertDaemonStopped(t *testing.T, a aborted) {
	t.Helper()
	if !strings.Contains(a.stderr, "dockerd exited by itself") {
		t.Errorf("the put's log does not say that dockerd exited by itself:\n%s", a.stderr)
	}
	if !strings.Contains(a.stderr, "dockerd: ") || strings.Contains(a.stderr, "Error shutting down http server") {
		t.Errorf("dockerd's log is missing or shows it waited for an open request:\n%s", a.stderr)
	}
}

func assertAbortMessage(t *testing.T, a aborted, phase string) {
	t.Helper()
	want := "aborted (SIGTERM) during " + phase
	last := strings.TrimSpace(a.stderr)
	if i := strings.LastIndexByte(last, '\n'); i >= 0 {
		last = last[i+1:]
	}
	t.Logf("exited %s after SIGTERM: %s", a.took.Round(time.Millisecond), last)
	if !strings.Contains(last, want) {
		t.Errorf("the last line is %q, want it to say %q", last, want)
	}
	if strings.Contains(last, "context canceled") {
		t.Errorf("the last line speaks of a cancelled context: %q", last)
	}
}

// TestAbortPut sends SIGTERM to the built out binary in each phase: daemon
// start, load, build and push. Each exits promptly with "aborted (SIGTERM)
// during <phase>", pushes nothing and leaves no daemon, mount or temp state.
func TestAbortPut(t *testing.T) {
	bin := buildBinaries(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	// A base big enough that docker load takes a while.
	base := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{96 << 20, 96 << 20}})
	baseDigest := reg.Push(t, "abort/base:1", base).String()
	srcDir := t.TempDir()
	getOK(t, filepath.Join(srcDir, "base"), map[string]any{
		"source": source(reg, "abort/base", map[string]any{"tag": "1"}), "version": map[string]any{"digest": baseDigest},
		"params": map[string]any{"save": true},
	})
	from := "FROM " + reg.Host + "/abort/base:1\n"
	writeFiles(t, srcDir, map[string]string{
		"quick/Dockerfile": from + "RUN echo built > /built\n",
		"slow/Dockerfile":  from + "RUN echo $((6*7)) is running && sleep 120\n",
	})
	unlock := testenv.LockDockerd(t)
	defer unlock()

	pushed := func(t *testing.T, repo string) {
		t.Helper()
		if _, err := remote.Head(reg.Ref(t, repo+":latest"), reg.RemoteOptions()...); err == nil {
			t.Errorf("the aborted put pushed %s", repo)
		}
	}
	run := func(t *testing.T, repo string, src map[string]any, params map[string]any, ready func(string) bool) aborted {
		return abortBinary(t, bin, "out", map[string]any{"source": src, "params": params}, ready, srcDir)
	}
	contains := func(s string) func(string) bool { return func(log string) bool { return strings.Contains(log, s) } }

	// Without a base folder nothing is written while dockerd starts.
	t.Run("daemon start", func(t *testing.T) {
		a := run(t, "abort/start", source(reg, "abort/start", nil), map[string]any{"build": "quick"}, contains("starting dockerd"))
		assertAbortMessage(t, a, "daemon start")
		pushed(t, "abort/start")
	})
	// The base is written into dockerd's layer store while dockerd starts.
	t.Run("load", func(t *testing.T) {
		a := run(t, "abort/load", source(reg, "abort/load", map[string]any{"debug": true}), map[string]any{"build": "quick", "load_base": "base"}, contains("straight into dockerd's layer store"))
		assertAbortMessage(t, a, "daemon start and load")
		pushed(t, "abort/load")
	})
	// While the RUN step's process runs (its own output seen), and as
	// BuildKit starts it (the step's header seen): a step started after
	// the build was cancelled is still killed.
	for name, ready := range map[string]string{"build": "42 is running", "build, RUN starting": "[2/2] RUN echo"} {
		t.Run(name, func(t *testing.T) {
			a := run(t, "abort/build", source(reg, "abort/build", map[string]any{"debug": true}), map[string]any{"build": "slow", "load_base": "base"}, contains(ready))
			assertAbortMessage(t, a, "build")
			assertDaemonStopped(t, a)
			pushed(t, "abort/build")
		})
	}
	t.Run("push", func(t *testing.T) {
		// The registry takes the first bytes of an upload and then nothing
		// more: the push is under way and stays so.
		p := testenv.StartFaultProxy(t, reg.Host, testenv.Fault{Kind: testenv.FaultStallMidBody, Count: -1, Method: "PATCH", AfterBytes: 64 << 10})
		src := map[string]any{"repository": p.Host + "/abort/push", "username": reg.Username, "password": reg.Password, "debug": true}
		a := run(t, "abort/push", src, map[string]any{"build": "quick", "load_base": "base"}, func(log string) bool {
			return strings.Contains(log, "push:") && p.Faulted() > 0
		})
		assertAbortMessage(t, a, "push")
		assertDaemonStopped(t, a)
		pushed(t, "abort/push")
		for _, rq := range p.RequestsMatching("PUT", "/manifests/") {
			t.Errorf("a manifest was written: %v", rq)
		}
	})
}

// TestAbortGet sends SIGTERM to the built in binary in the middle of a
// blob download: it exits promptly, and DEST holds nothing that looks like
// a finished get, nor the blobs.
func TestAbortGet(t *testing.T) {
	bin := buildBinaries(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{8 << 20}})
	digest := reg.Push(t, "abort/get:1", img).String()
	p := testenv.StartFaultProxy(t, reg.Host, testenv.Fault{Kind: testenv.FaultStallMidBody, Count: -1, Method: "GET", PathContains: "/blobs/", AfterBytes: 512 << 10})
	dest := filepath.Join(t.TempDir(), "get")
	// No daemon of another test may start meanwhile: the leftover check
	// compares the whole host before and after.
	unlock := testenv.LockDockerd(t)
	defer unlock()
	req := map[string]any{
		"source":  map[string]any{"repository": p.Host + "/abort/get", "tag": "1", "username": reg.Username, "password": reg.Password},
		"version": map[string]any{"digest": digest},
		"params":  map[string]any{"save": true, "rootfs": true},
	}
	a := abortBinary(t, bin, "in", req, func(log string) bool {
		return strings.Contains(log, "downloading layer") && p.Faulted() > 0
	}, dest)
	assertAbortMessage(t, a, "download")
	assertNothingComplete(t, dest)
}
