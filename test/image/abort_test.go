package image

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/docker/api/types/mount"
)

// Bounds of an aborted put of the image, from SIGTERM to out.
const (
	// abortBuildBound: a build, in a RUN step, and its dockerd.
	abortBuildBound = time.Second
	// abortOtherBound: the other phases. Stop waits for dockerd to finish
	// the request the put closed (a docker save stream ends only when
	// dockerd next writes to it), up to its settle timeout of 2 s.
	abortOtherBound = 3 * time.Second
	// abortFrozenBound: a push through the daemon to a registry that
	// answers nothing: the put's 2 s wait for dockerd to finish the push,
	// then dockerd's own 5 s.
	abortFrozenBound = 9 * time.Second
	// dockerdShutdownBound: from dockerd's "Processing signal" to its exit.
	// dockerd 26.1 waits up to 5 s for API requests still open.
	dockerdShutdownBound = time.Second
)

// TestImageAbort aborts puts the way Concourse does, SIGTERM to out in its
// container, in every phase that holds a request to the image's dockerd
// (26.1) open: a BuildKit build with its session (while a RUN step runs,
// and as it starts), a classic build, a load, the docker save stream of a
// push straight to the registry, and a push through the daemon. Each time
// out says "aborted (SIGTERM) during <phase>" and no more, pushes nothing
// and leaves nothing, and dockerd stops by itself at once: no SIGKILL, and
// no "Error shutting down http server" in its log (shown by the put with
// debug: true), which dockerd 26.1 logs when its shutdown waited 5 s for a
// request still open. The one request dockerd cannot end, a push to a
// registry that answers nothing, is waited for, and the put says why.
func TestImageAbort(t *testing.T) {
	imageTar := imageForTest(t)

	seed := testenv.StartRegistry(t, testenv.RegistryOptions{NoAuth: true})
	// A base big enough that docker load and docker save take a while.
	base := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{96 << 20, 96 << 20}})
	baseDigest := seed.Push(t, "abort/base:1", base).String()
	seed.Stop()

	testenv.LockDockerd(t)
	e := startEnv(t, t.Context(), imageTar)
	const user, pass = "concourse", "abort-secret-5d2c"
	reg := e.startRegistry(registryOpts{Alias: "registry", Storage: filepath.Join(seed.Dir, "data"), Username: user, Password: pass})
	source := registrySource(user, pass)

	srcDir := t.TempDir()
	if err := os.Mkdir(filepath.Join(srcDir, "base"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := e.run(step{
		Cmd:   []string{"/opt/resource/in", "/tmp/build/get"},
		Req:   map[string]any{"source": source("abort/base", map[string]any{"tag": "1"}), "version": map[string]any{"digest": baseDigest}, "params": map[string]any{"save": true}},
		Binds: []mount.Mount{{Type: mount.TypeBind, Source: filepath.Join(srcDir, "base"), Target: "/tmp/build/get"}},
	})
	requireOK(t, "in", r)
	from := "FROM registry:5000/abort/base:1\n"
	writeTestFile(t, filepath.Join(srcDir, "slow/Dockerfile"), []byte(from+"RUN echo $((6*7)) is running && sleep 60\n"))
	writeTestFile(t, filepath.Join(srcDir, "quick/Dockerfile"), []byte(from+"RUN echo built > /built\n"))
	writeTestFile(t, filepath.Join(srcDir, "rootfs.tar"), randomRootfs(t, 32<<20))

	type abortCase struct {
		name, phase string
		params      map[string]any
		ready       string        // the line of out's log after which SIGTERM is sent
		after       time.Duration // that long after it
		bound       time.Duration // for out's exit (and, builds, dockerd's)
		// freezeAt is a line of out's log after which the registry is
		// frozen: it accepts connections and answers nothing. dockerd 26.1
		// cannot cancel a push whose registry does not answer its first
		// request (GET /v2/), and waits 5 s for it when it stops: the put
		// must say so, and dockerd still exits by itself.
		freezeAt string
	}
	cases := []abortCase{
		{"BuildKit, RUN running", "build", map[string]any{"build": "slow", "load_base": "base"}, "42 is running", 0, abortBuildBound, ""},
		{"BuildKit, RUN starting", "build", map[string]any{"build": "slow", "load_base": "base"}, "] RUN echo", 0, abortBuildBound, ""},
		// Through BuildKit's control API on the containerd store
		// (issue 16): the gRPC solve is cancelled with the put.
		{"BuildKit control API, RUN running", "build", map[string]any{"build": "slow", "load_base": "base", "cache_repository": "registry:5000/abort/cache"}, "42 is running", 0, abortBuildBound, ""},
		{"classic build", "build", map[string]any{"build": "slow", "load_base": "base", "docker_buildkit": 0}, "42 is running", 0, abortBuildBound, ""},
		// The push reads the new layer from dockerd's layer store, then
		// uploads it (the base is written into the layer store before
		// dockerd starts: host TestAbortPut aborts that).
		{"push from the layer store", "push", map[string]any{"build": "quick", "load_base": "base"}, "from dockerd's layer store", 0, abortOtherBound, ""},
		// dockerd is uploading the 32 MiB layer (it compresses it as it goes).
		{"push through the daemon", "push", map[string]any{"import_file": "rootfs.tar"}, ": Pushing", 200 * time.Millisecond, abortOtherBound, ""},
		// Frozen while dockerd imports the rootfs, before the push.
		{"push through the daemon, registry frozen", "push", map[string]any{"import_file": "rootfs.tar"}, "The push refers to repository", 300 * time.Millisecond, abortFrozenBound, "importing "},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			target := fmt.Sprintf("abort/put-%d", i)
			var once sync.Once
			var signalled time.Time
			var dockerd *exitWatch
			s := step{
				Cmd:   []string{"/opt/resource/out", "/tmp/build/put"},
				Req:   map[string]any{"source": source(target, map[string]any{"debug": true}), "params": c.params},
				Binds: []mount.Mount{{Type: mount.TypeBind, Source: srcDir, Target: "/tmp/build/put"}},
			}
			frozen := false
			s.OnLine = func(line string, pid int) {
				if c.freezeAt != "" && !frozen && strings.Contains(line, c.freezeAt) {
					reg.pause()
					frozen = true
				}
				if !strings.Contains(line, c.ready) {
					return
				}
				once.Do(func() {
					time.Sleep(c.after)
					dockerd = watchExit(t, childNamed(pid, "dockerd"))
					signalled = time.Now()
					if err := killPid(pid, syscall.SIGTERM); err != nil {
						t.Errorf("SIGTERM to out (pid %d): %v", pid, err)
					}
				})
			}
			r := e.run(s)
			if frozen {
				reg.unpause()
			}
			if signalled.IsZero() {
				t.Fatalf("out never logged %q:\n%s", c.ready, r.Stderr)
			}
			outTook := r.Exited.Sub(signalled)
			gone := dockerd.wait()
			dockerdTook := gone.Sub(signalled)
			log := dockerdLog(r.Stderr)
			shutdown := gone.Sub(signalTime(t, log))
			t.Logf("TIME SIGTERM → out exit %s, → dockerd exit %s (its own shutdown %s); out's log ends:\n%s",
				outTook.Round(time.Millisecond), dockerdTook.Round(time.Millisecond), shutdown.Round(time.Millisecond), lastLines(nonDockerdLines(r.Stderr), 8))
			assertAborted(t, c.phase, r, c.bound, outTook)
			if c.bound == abortBuildBound && dockerdTook > c.bound {
				t.Errorf("dockerd exited %s after SIGTERM to out, want within %s", dockerdTook.Round(time.Millisecond), c.bound)
			}
			if !strings.Contains(r.Stderr, "dockerd exited by itself") || strings.Contains(r.Stderr, "dockerd did not stop") {
				t.Errorf("dockerd did not exit by itself")
			}
			if !strings.Contains(log, "Daemon shutdown complete") {
				t.Errorf("dockerd's log, as the put shows it, does not end with its shutdown:\n%s", log)
			}
			if c.freezeAt != "" {
				if !frozen {
					t.Errorf("out never logged %q", c.freezeAt)
				}
				if !strings.Contains(r.Stderr, "dockerd still has 1 API request open") {
					t.Errorf("the put did not say that dockerd still had the push open")
				}
			} else {
				if shutdown > dockerdShutdownBound {
					t.Errorf("dockerd took %s from SIGTERM to exit, want within %s", shutdown.Round(time.Millisecond), dockerdShutdownBound)
				}
				if strings.Contains(log, "Error shutting down http server") {
					t.Errorf("dockerd waited for a request still open")
				}
			}
			if t.Failed() {
				t.Logf("out's log:\n%s", r.Stderr)
			}
			requireClean(t, r)
			if vs := e.check(t, source(target, nil)); len(vs) != 0 {
				t.Errorf("the aborted put pushed %v", vs)
			}
		})
	}
}

// assertAborted checks what a person sees of an aborted put: exit 1,
// nothing on stdout, a last line that says what was aborted and nothing
// more (what the abort cut short is no error to report), soon enough.
func assertAborted(t *testing.T, phase string, r stepResult, bound, took time.Duration) {
	t.Helper()
	if r.Code != 1 || r.Stdout != "" {
		t.Errorf("an aborted put exited %d with stdout %q; want 1 and nothing", r.Code, r.Stdout)
	}
	if last := lastLines(r.Stderr, 1); !strings.HasSuffix(last, "aborted (SIGTERM) during "+phase) {
		t.Errorf("the last line is %q, want it to end with aborted (SIGTERM) during %s", last, phase)
	}
	if took > bound {
		t.Errorf("out exited %s after SIGTERM, want within %s", took.Round(time.Millisecond), bound)
	}
}

// check runs check in a container and returns the versions.
func (e *env) check(t *testing.T, src map[string]any) []protocol.Version {
	t.Helper()
	r := e.run(step{Cmd: []string{"/opt/resource/check"}, Req: map[string]any{"source": src}})
	requireOK(t, "check", r)
	var vs []protocol.Version
	if err := json.Unmarshal([]byte(r.Stdout), &vs); err != nil {
		t.Fatalf("check stdout %q: %v", r.Stdout, err)
	}
	return vs
}

func (r *registryContainer) pause() {
	if err := r.e.cli.ContainerPause(r.e.ctx, r.id); err != nil {
		r.e.t.Errorf("pausing registry %s: %v", r.opts.Alias, err)
	}
}

func (r *registryContainer) unpause() {
	if err := r.e.cli.ContainerUnpause(r.e.ctx, r.id); err != nil {
		r.e.t.Fatalf("unpausing registry %s: %v", r.opts.Alias, err)
	}
}

// randomRootfs is a root filesystem tarball (for import_file) with one
// file of n random bytes: its push through the daemon takes a while.
func randomRootfs(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rng := rand.NewChaCha8([32]byte{8})
	_, _ = rng.Read(b)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "random", Mode: 0o644, Size: int64(n), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// childNamed is the pid of ppid's child whose command is comm (0: none).
// Exec pids are host pids: the outer daemon runs in the host's pid
// namespace.
func childNamed(ppid int, comm string) int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(s[end+1:]) // state ppid ...
		if s[open+1:end] == comm && len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return pid
		}
	}
	return 0
}

// exitWatch notes when a process ends (is gone, or a zombie).
type exitWatch struct {
	done chan struct{}
	at   time.Time
}

func watchExit(t *testing.T, pid int) *exitWatch {
	w := &exitWatch{done: make(chan struct{})}
	if pid == 0 {
		t.Errorf("no dockerd among out's children")
		w.at = time.Now()
		close(w.done)
		return w
	}
	stat := fmt.Sprintf("/proc/%d/stat", pid)
	go func() {
		defer close(w.done)
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			b, err := os.ReadFile(stat)
			if err != nil || zombie(string(b)) {
				w.at = time.Now()
				return
			}
		}
	}()
	return w
}

func zombie(stat string) bool {
	end := strings.LastIndexByte(stat, ')')
	return end >= 0 && strings.HasPrefix(strings.TrimSpace(stat[end+1:]), "Z")
}

func (w *exitWatch) wait() time.Time {
	<-w.done
	if w.at.IsZero() {
		return time.Now()
	}
	return w.at
}

// dockerdLog is dockerd's log as a put with debug: true shows it after
// stopping it: "DEBUG dockerd: <line>".
func dockerdLog(stderr string) string {
	var out []string
	for _, l := range scanLines(stderr) {
		if line, ok := dockerdLine(l); ok {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func dockerdLine(l string) (string, bool) {
	level, rest, ok := strings.Cut(l, " dockerd: ")
	if !ok || !strings.Contains(level, "DEBUG") {
		return "", false
	}
	return rest, true
}

func nonDockerdLines(stderr string) string {
	var out []string
	for _, l := range scanLines(stderr) {
		if _, ok := dockerdLine(l); !ok {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

var signalLine = regexp.MustCompile(`time="([^"]+)" level=info msg="Processing signal 'terminated'"`)

// signalTime is when dockerd logged that it got SIGTERM.
func signalTime(t *testing.T, log string) time.Time {
	t.Helper()
	m := signalLine.FindStringSubmatch(log)
	if m == nil {
		t.Errorf("dockerd's log, as the put shows it, has no SIGTERM:\n%s", log)
		return time.Now()
	}
	at, err := time.Parse(time.RFC3339Nano, m[1])
	if err != nil {
		t.Errorf("dockerd's log time %q: %v", m[1], err)
		return time.Now()
	}
	return at
}
