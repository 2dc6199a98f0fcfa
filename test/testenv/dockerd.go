package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/sirupsen/logrus"
)

// dockerdLockName is an abstract unix socket: only one process can bind it,
// it vanishes with its holder and leaves nothing on disk.
const dockerdLockName = "@github.com/concourse-docker/docker-image-resource/testenv-dockerd"

// Dockerd is a private docker daemon, pkg/daemon's in its isolated mode:
// no bridge, no iptables rules, a containerd of its own, state in a short
// temp folder and a private mount namespace for what dockerd and
// containerd write under /run and /etc/docker. Nothing of it outlives Stop.
type Dockerd struct {
	Host string // "unix:///tmp/dk-123/dkd-456/d.sock"
	// Dir holds the daemon's state folder, a marker for sweepStale and,
	// unless it is under /scratch, DataRoot.
	Dir      string
	DataRoot string

	daemon   *daemon.Daemon
	unlock   func()
	stopOnce sync.Once
	stopErr  error
}

// StartDockerd starts a private dockerd and waits until it answers. Only
// one runs at a time across all test binaries: a second caller waits. Do
// not call it from parallel tests. Stopped on cleanup.
func StartDockerd(t testing.TB) *Dockerd {
	t.Helper()
	requireDockerd(t)
	d := &Dockerd{unlock: LockDockerd(t)}
	sweepStale(t)
	d.Dir = ShortTempDir(t, "dk-")
	// Cleanups run last-in first-out: this one runs before the dir removal
	// and the lock release registered above, also when the start fails.
	t.Cleanup(func() { d.cleanup(t) })
	d.DataRoot = dataRootFor(t, d.Dir)
	// The marker lets a later run clean up after a test binary that died
	// without its cleanups; Stop removes it.
	writeFile(t, filepath.Join(d.Dir, staleMarker), []byte(d.DataRoot))
	dd, err := daemon.Start(context.Background(), daemon.Options{
		Dir:      d.Dir,
		DataRoot: d.DataRoot,
		Isolated: true,
		// As long as a slow machine may need; a test that left containers
		// running must not hold Stop for long.
		StartupTimeout: 90 * time.Second,
		StopTimeout:    15 * time.Second,
		Log:            daemonLog(t),
	})
	if err != nil {
		t.Fatalf("testenv: dockerd did not start: %v", err)
	}
	d.daemon, d.Host = dd, dd.Host()
	t.Logf("testenv: dockerd %s at %s, storage driver %s, data root %s", dd.Version(), d.Host, dd.StorageDriver(), dd.DataRoot())
	return d
}

func requireDockerd(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("testenv: StartDockerd needs root")
	}
	for _, b := range []string{"dockerd", "containerd"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("testenv: %s not installed (apt-get install docker.io): %v", b, err)
		}
	}
}

// dataRootFor is the daemon's data root: in dir, or under /scratch when
// /tmp is on overlayfs, where overlay2 cannot sit (dockerd would silently
// pick vfs). pkg/daemon keeps a data root it is given; Stop removes it.
func dataRootFor(t testing.TB, dir string) string {
	t.Helper()
	if fi, err := os.Stat("/scratch"); err == nil && fi.IsDir() && onOverlay("/tmp") {
		p, err := os.MkdirTemp("/scratch", "dk-root-")
		if err != nil {
			t.Fatalf("testenv: making data root under /scratch: %v", err)
		}
		return p
	}
	return filepath.Join(dir, "root")
}

func onOverlay(path string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == 0x794c7630 // OVERLAYFS_SUPER_MAGIC
}

// daemonLog passes the daemon's warnings (a child killed on Stop, the vfs
// driver) to the test log; progress lines stay out of it.
func daemonLog(t testing.TB) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.WarnLevel)
	l.AddHook(testLogHook{t})
	return logrus.NewEntry(l)
}

type testLogHook struct{ t testing.TB }

func (testLogHook) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

func (h testLogHook) Fire(e *logrus.Entry) error {
	h.t.Logf("testenv: dockerd: %s", e.Message)
	return nil
}

// Client is a docker client for this daemon, negotiating the API version.
func (d *Dockerd) Client() *client.Client { return d.daemon.Client() }

// Pid is dockerd's process id.
func (d *Dockerd) Pid() int { return d.daemon.Pid() }

func (d *Dockerd) cleanup(t testing.TB) {
	if err := d.Stop(); err != nil {
		t.Errorf("testenv: %v", err)
	}
	if t.Failed() && d.daemon != nil {
		t.Logf("testenv: dockerd log tail:\n%s", d.daemon.LogTail(60))
		t.Logf("testenv: containerd log tail:\n%s", d.daemon.ContainerdLogTail(30))
	}
}

// Stop stops dockerd and its containerd (SIGTERM, SIGKILL after 15s), kills
// what is left of them and their containers, removes the state folder and
// the data root, and releases the dockerd lock. Idempotent.
func (d *Dockerd) Stop() error {
	d.stopOnce.Do(func() { d.stopErr = d.stop() })
	return d.stopErr
}

func (d *Dockerd) stop() error {
	var errs []error
	if d.daemon != nil {
		errs = append(errs, d.daemon.Stop(context.Background()))
	}
	if d.DataRoot != "" {
		if err := os.RemoveAll(d.DataRoot); err != nil {
			errs = append(errs, fmt.Errorf("removing dockerd's data root: %w", err))
		}
	}
	if d.Dir != "" {
		if err := os.Remove(filepath.Join(d.Dir, staleMarker)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	d.unlock()
	return errors.Join(errs...)
}

const staleMarker = "testenv-dockerd"

// sweepStale removes what a test binary killed before its cleanups (a
// timeout panic) left: its daemon's state folder, processes, containers and
// cgroups (daemon.Reap), and its data root. Called under the lock, so no
// marked dir belongs to a live daemon.
func sweepStale(t testing.TB) {
	markers, _ := filepath.Glob("/tmp/dk-*/" + staleMarker)
	if os.TempDir() != "/tmp" {
		more, _ := filepath.Glob(filepath.Join(os.TempDir(), "dk-*", staleMarker))
		markers = append(markers, more...)
	}
	for _, m := range markers {
		dir := filepath.Dir(m)
		dataRoot, _ := os.ReadFile(m)
		var errs []error
		states, _ := filepath.Glob(filepath.Join(dir, "dkd-*"))
		for _, s := range states {
			errs = append(errs, daemon.Reap(s))
		}
		if dr := string(dataRoot); strings.HasPrefix(dr, "/scratch/dk-root-") {
			errs = append(errs, unmountAll(dr), os.RemoveAll(dr))
		}
		errs = append(errs, unmountAll(dir), os.RemoveAll(dir))
		if err := errors.Join(errs...); err != nil {
			t.Logf("testenv: cleaning stale dockerd state %s: %v", dir, err)
		} else {
			t.Logf("testenv: removed stale dockerd state %s", dir)
		}
	}
}

// LockDockerd takes the repository-wide dockerd lock, waiting while another
// test (in any test binary) holds it. StartDockerd takes it itself; code that
// starts a dockerd some other way should take it too. It is released by
// unlock or on cleanup.
func LockDockerd(t testing.TB) (unlock func()) {
	t.Helper()
	l := acquireDockerdLock(t)
	var once sync.Once
	unlock = func() { once.Do(func() { _ = l.Close() }) }
	t.Cleanup(unlock)
	return unlock
}

func acquireDockerdLock(t testing.TB) net.Listener {
	t.Helper()
	deadline := time.Now().Add(8 * time.Minute)
	logged := false
	for {
		l, err := net.Listen("unix", dockerdLockName)
		if err == nil {
			return l
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("testenv: taking the dockerd lock: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: another test's dockerd held the lock for 8 minutes")
		}
		if !logged {
			t.Logf("testenv: waiting for another test's dockerd to stop")
			logged = true
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// LoadImage loads img into the daemon as tag through a docker-save tarball
// and returns the image ID, checked against the image's config digest.
func (d *Dockerd) LoadImage(t testing.TB, tag string, img v1.Image) string {
	t.Helper()
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatalf("testenv: parsing tag %q: %v", tag, err)
	}
	var buf bytes.Buffer
	if err := tarball.Write(ref, img, &buf); err != nil {
		t.Fatalf("testenv: writing image tarball: %v", err)
	}
	ctx := ctxFor(t)
	resp, err := d.Client().ImageLoad(ctx, &buf, client.ImageLoadWithQuiet(true))
	if err != nil {
		t.Fatalf("testenv: loading %s: %v", tag, err)
	}
	defer resp.Body.Close()
	if _, err := ReadJSONStream(resp.Body); err != nil {
		t.Fatalf("testenv: loading %s: %v", tag, err)
	}
	want, err := img.ConfigName()
	if err != nil {
		t.Fatalf("testenv: config digest: %v", err)
	}
	ins, err := d.Client().ImageInspect(ctx, tag)
	if err != nil {
		t.Fatalf("testenv: inspecting loaded %s: %v", tag, err)
	}
	if ins.ID != want.String() {
		t.Fatalf("testenv: loaded %s has ID %s, want config digest %s", tag, ins.ID, want)
	}
	return ins.ID
}

// JSONMessage is one message of the engine's JSON progress stream.
type JSONMessage struct {
	Stream      string                    `json:"stream,omitempty"`
	Status      string                    `json:"status,omitempty"`
	ID          string                    `json:"id,omitempty"`
	Error       string                    `json:"error,omitempty"`
	ErrorDetail *struct{ Message string } `json:"errorDetail,omitempty"`
	Aux         json.RawMessage           `json:"aux,omitempty"`
}

// ReadJSONStream reads a whole engine JSON stream. The engine reports load,
// build and push failures inside it with HTTP 200, so any error message
// becomes the returned error.
func ReadJSONStream(r io.Reader) ([]JSONMessage, error) {
	dec := json.NewDecoder(r)
	var msgs []JSONMessage
	for {
		var m JSONMessage
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return msgs, nil
			}
			return msgs, fmt.Errorf("decoding engine message stream: %w", err)
		}
		msgs = append(msgs, m)
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			return msgs, fmt.Errorf("engine: %s", m.ErrorDetail.Message)
		}
		if m.Error != "" {
			return msgs, fmt.Errorf("engine: %s", m.Error)
		}
	}
}
