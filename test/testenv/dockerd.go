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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/childproc"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// SystemContainerdSocket is where dockerd 20.10 looks for a containerd to
// reuse silently instead of starting its own.
const SystemContainerdSocket = "/run/containerd/containerd.sock"

// dockerdLockName is an abstract unix socket: only one process can bind it,
// it vanishes with its holder and leaves nothing on disk.
const dockerdLockName = "@github.com/concourse-docker/docker-image-resource/testenv-dockerd"

// DockerdOptions configures StartDockerdWith.
type DockerdOptions struct {
	// OwnContainerd starts a containerd of our own and passes --containerd,
	// instead of letting dockerd start one. Forced when the host has
	// SystemContainerdSocket (the private /run hides it from dockerd too).
	OwnContainerd bool
}

// Dockerd is a private docker daemon that changes nothing on the host: no
// bridge, no iptables rules, state in a short temp dir, and a private mount
// namespace (see nsScript) for what it would write under /run and /opt.
type Dockerd struct {
	Host     string // "unix:///tmp/dk-123/d.sock"
	Dir      string // state dir: socket, exec-root, pidfile, config, logs
	DataRoot string
	// ContainerdAddress is the private containerd's socket; empty when
	// dockerd started and manages its own containerd.
	ContainerdAddress string
	// CgroupParent holds the cgroups of containers ("/testenv-dk-123"), so
	// Stop can kill what is left in them and remove them.
	CgroupParent string

	dataRootOwned bool
	nsenter       string
	holder        *childproc.Proc // keeps the private mount namespace alive
	dockerd       *childproc.Proc
	containerd    *childproc.Proc
	logPath       string
	ctrdLogPath   string
	cli           *client.Client
	unlock        func()
	stopOnce      sync.Once
	stopErr       error
}

// StartDockerd starts a private dockerd; see StartDockerdWith.
func StartDockerd(t testing.TB) *Dockerd {
	t.Helper()
	return StartDockerdWith(t, DockerdOptions{})
}

// StartDockerdWith starts a private dockerd and waits until it answers a
// ping. Only one runs at a time across all test binaries: a second caller
// waits. Do not call it from parallel tests. Stopped on cleanup.
func StartDockerdWith(t testing.TB, o DockerdOptions) *Dockerd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("testenv: StartDockerd needs root")
	}
	dockerdPath, err := exec.LookPath("dockerd")
	if err != nil {
		t.Skipf("testenv: dockerd not installed (apt-get install docker.io): %v", err)
	}
	for _, tool := range []string{"nsenter", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("testenv: %s not found (apt-get install util-linux mount): %v", tool, err)
		}
	}
	if _, err := os.Stat(SystemContainerdSocket); err == nil {
		o.OwnContainerd = true
	}

	d := &Dockerd{}
	d.unlock = LockDockerd(t)
	sweepStale(t)
	d.Dir = ShortTempDir(t, "dk-")
	// Cleanups run last-in first-out: this stop runs before the dir removal
	// and the lock release registered above, also when the start fails.
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("testenv: stopping dockerd: %v", err)
		}
		if t.Failed() {
			d.logTails(t)
		}
	})
	d.DataRoot = filepath.Join(d.Dir, "root")
	if onOverlay("/tmp") {
		// overlay2 cannot sit on overlayfs; dockerd would silently pick vfs.
		if fi, err := os.Stat("/scratch"); err == nil && fi.IsDir() {
			if d.DataRoot, err = os.MkdirTemp("/scratch", "dk-root-"); err != nil {
				t.Fatalf("testenv: making data root under /scratch: %v", err)
			}
			d.dataRootOwned = true
		}
	}
	// The marker lets a later run clean up after a test binary that died
	// without its cleanups; Stop removes it.
	writeFile(t, filepath.Join(d.Dir, staleMarker), []byte(d.DataRoot))
	d.logPath = filepath.Join(d.Dir, "dockerd.log")
	sock := filepath.Join(d.Dir, "d.sock")
	d.CgroupParent = "/testenv-" + filepath.Base(d.Dir)
	d.Host = "unix://" + sock

	d.startNamespace(t)
	if o.OwnContainerd {
		d.startContainerd(t)
	}

	// Own config file: never read the host's /etc/docker/daemon.json, and keep
	// the 20.10 trust key out of /etc/docker/key.json.
	cfg, err := json.Marshal(map[string]any{"deprecated-key-path": filepath.Join(d.Dir, "key.json")})
	if err != nil {
		t.Fatalf("testenv: encoding daemon.json: %v", err)
	}
	cfgPath := filepath.Join(d.Dir, "daemon.json")
	writeFile(t, cfgPath, cfg)
	args := []string{
		"--config-file", cfgPath,
		"--data-root", d.DataRoot,
		"--exec-root", filepath.Join(d.Dir, "x"),
		"--pidfile", filepath.Join(d.Dir, "d.pid"),
		"-H", d.Host,
		"--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
		"--cgroup-parent", d.CgroupParent,
		// Containers a test left running must not hold Stop for long.
		"--shutdown-timeout", "5",
	}
	if d.ContainerdAddress != "" {
		args = append(args, "--containerd", d.ContainerdAddress)
	}
	// SIGTERM if the test binary dies: dockerd then shuts down cleanly.
	d.dockerd, err = childproc.Start(d.nsenter, d.inNamespace(dockerdPath, args...), d.logPath, childproc.Options{DeathSignal: syscall.SIGTERM, Start: spawn})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	d.cli, err = client.NewClientWithOpts(client.WithHost(d.Host), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatalf("testenv: docker client for %s: %v", d.Host, err)
	}
	if err := d.waitPing(60 * time.Second); err != nil {
		t.Fatalf("testenv: dockerd did not answer: %v\ndockerd log tail:\n%s", err, childproc.TailFile(d.logPath, 60))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if info, err := d.cli.Info(ctx); err == nil {
		t.Logf("testenv: dockerd %s at %s, storage driver %s, data root %s", info.ServerVersion, d.Host, info.Driver, info.DockerRootDir)
	}
	return d
}

// nsScript runs in a new private mount namespace. It lays a tmpfs over /run
// and /opt that rebinds every existing entry except docker's and
// containerd's, so what dockerd and containerd make there (/run/docker,
// /run/containerd/s shim sockets, /opt/containerd) never reaches the host,
// and a system containerd socket stays invisible. Then it holds the
// namespace open.
const nsScript = `set -eu
privatize() {
	dir=$1 stage=$2
	[ -d "$dir" ] || return 0
	mkdir -p "$stage"
	mount -n -t tmpfs -o mode=755 testenv "$stage"
	for e in "$dir"/* "$dir"/.[!.]* "$dir"/..?*; do
		[ -e "$e" ] || [ -L "$e" ] || continue
		n=${e##*/}
		case "$n" in docker|docker.sock|docker.pid|containerd) continue ;; esac
		if [ -L "$e" ]; then cp -P "$e" "$stage/$n"
		elif [ -d "$e" ]; then mkdir "$stage/$n" && mount -n --rbind "$e" "$stage/$n"
		else : >"$stage/$n" && mount -n --bind "$e" "$stage/$n"
		fi
	done
	mount -n --move "$stage" "$dir"
}
privatize /run "$1/ns/run"
privatize /opt "$1/ns/opt"
echo testenv-namespace-ready
exec sleep 2147483647
`

func (d *Dockerd) startNamespace(t testing.TB) {
	t.Helper()
	var err error
	if d.nsenter, err = exec.LookPath("nsenter"); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	logPath := filepath.Join(d.Dir, "namespace.log")
	d.holder, err = childproc.Start("/bin/sh", []string{"-c", nsScript, "sh", d.Dir}, logPath, childproc.Options{DeathSignal: syscall.SIGKILL, Unshare: syscall.CLONE_NEWNS, Start: spawn})
	if err != nil {
		t.Fatalf("testenv: starting mount namespace holder: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		if bytes.Contains(b, []byte("testenv-namespace-ready")) {
			return
		}
		if d.holder.Exited() || time.Now().After(deadline) {
			t.Fatalf("testenv: private mount namespace not set up (%v):\n%s", d.holder.Err(), b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// inNamespace wraps a command to run in the holder's mount namespace.
// nsenter execs it in place, so the pid and Pdeathsig stay the command's.
func (d *Dockerd) inNamespace(cmd string, args ...string) []string {
	return append([]string{fmt.Sprintf("--mount=/proc/%d/ns/mnt", d.holder.Pid()), "--", cmd}, args...)
}

// MountNamespace is the holder's mount namespace link, e.g. "mnt:[4026532]".
func (d *Dockerd) MountNamespace() string {
	l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", d.holder.Pid()))
	return l
}

func (d *Dockerd) startContainerd(t testing.TB) {
	t.Helper()
	ctrd, err := exec.LookPath("containerd")
	if err != nil {
		t.Fatalf("testenv: a containerd of our own is needed but not installed: %v", err)
	}
	c := filepath.Join(d.Dir, "c")
	if err := os.MkdirAll(c, 0o711); err != nil {
		t.Fatalf("testenv: making containerd dir: %v", err)
	}
	d.ContainerdAddress = filepath.Join(d.Dir, "c.sock")
	// The opt plugin would create /opt/containerd (the private /opt hides it
	// too; this keeps it in the state dir also without the namespace).
	conf := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  address = ""

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %q
`, filepath.Join(c, "root"), filepath.Join(c, "state"), d.ContainerdAddress, d.ContainerdAddress+".ttrpc", filepath.Join(c, "opt"))
	confPath := filepath.Join(d.Dir, "containerd.toml")
	writeFile(t, confPath, []byte(conf))
	d.ctrdLogPath = filepath.Join(d.Dir, "containerd.log")
	d.containerd, err = childproc.Start(d.nsenter, d.inNamespace(ctrd, "--config", confPath), d.ctrdLogPath, childproc.Options{DeathSignal: syscall.SIGTERM, Start: spawn})
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if d.containerd.Exited() {
			t.Fatalf("testenv: containerd exited: %v\nlog tail:\n%s", d.containerd.Err(), childproc.TailFile(d.ctrdLogPath, 40))
		}
		if c, err := net.DialTimeout("unix", d.ContainerdAddress, time.Second); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: containerd socket %s not up after 30s\nlog tail:\n%s", d.ContainerdAddress, childproc.TailFile(d.ctrdLogPath, 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *Dockerd) waitPing(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		if d.dockerd.Exited() {
			return fmt.Errorf("dockerd exited: %v", d.dockerd.Err())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := d.cli.Ping(ctx)
		cancel()
		if err == nil {
			return nil
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no ping within %s: %w", timeout, lastErr)
}

// Client is a docker client for this daemon, negotiating the API version.
func (d *Dockerd) Client() *client.Client { return d.cli }

// Pid is dockerd's process id.
func (d *Dockerd) Pid() int { return d.dockerd.Pid() }

// LogTail returns the last n lines of dockerd's log.
func (d *Dockerd) LogTail(n int) string { return childproc.TailFile(d.logPath, n) }

func (d *Dockerd) logTails(t testing.TB) {
	if d.logPath != "" {
		t.Logf("testenv: dockerd log tail:\n%s", childproc.TailFile(d.logPath, 60))
	}
	if d.ctrdLogPath != "" {
		t.Logf("testenv: containerd log tail:\n%s", childproc.TailFile(d.ctrdLogPath, 30))
	}
}

// Stop stops dockerd (SIGTERM, SIGKILL after 15s) and its containerd, kills
// anything left that runs from the state dir, unmounts what is left under it
// (the netns nsfs mount stays after exit) and removes it. Idempotent.
func (d *Dockerd) Stop() error {
	d.stopOnce.Do(func() { d.stopErr = d.stop() })
	return d.stopErr
}

func (d *Dockerd) stop() error {
	var errs []error
	if d.cli != nil {
		_ = d.cli.Close()
	}
	// Containers are garbage by now; killing them first spares dockerd's
	// shutdown the container stop timeouts (10s for a shell as PID 1).
	killCgroupProcs(d.CgroupParent)
	if d.dockerd != nil && d.dockerd.Stop(context.Background(), 15*time.Second) {
		errs = append(errs, errors.New("dockerd ignored SIGTERM for 15s and was killed"))
	}
	if d.containerd != nil && d.containerd.Stop(context.Background(), 15*time.Second) {
		errs = append(errs, errors.New("containerd ignored SIGTERM for 15s and was killed"))
	}
	if d.holder != nil {
		_ = syscall.Kill(d.holder.Pid(), syscall.SIGKILL)
		d.holder.Stop(context.Background(), 5*time.Second)
	}
	if d.Dir != "" {
		// A killed dockerd leaves its managed containerd and shims behind.
		for _, dir := range []string{d.Dir, d.DataRoot} {
			for _, pid := range pidsMentioning(dir) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for len(pidsMentioning(d.Dir)) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if left := pidsMentioning(d.Dir); len(left) > 0 {
			errs = append(errs, fmt.Errorf("processes still running from %s: %v", d.Dir, left))
		}
		if err := removeCgroups(d.CgroupParent); err != nil {
			errs = append(errs, err)
		}
		for _, dir := range []string{d.DataRoot, d.Dir} {
			if err := unmountAll(dir); err != nil {
				errs = append(errs, err)
			}
		}
		if d.dataRootOwned {
			if err := os.RemoveAll(d.DataRoot); err != nil {
				errs = append(errs, fmt.Errorf("removing data root: %w", err))
			}
		}
		// Logs are kept until ShortTempDir's cleanup, for the failure report;
		// the rest, stale marker included, goes now.
		ents, _ := os.ReadDir(d.Dir)
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".log") {
				continue
			}
			if err := os.RemoveAll(filepath.Join(d.Dir, e.Name())); err != nil {
				errs = append(errs, fmt.Errorf("removing dockerd state: %w", err))
			}
		}
	}
	if d.unlock != nil {
		d.unlock()
	}
	return errors.Join(errs...)
}

const staleMarker = "testenv-dockerd"

// sweepStale removes what a test binary killed before its cleanups (a
// timeout panic) left: its state dir, data root, cgroups and stray
// processes. Its daemons got Pdeathsig already. Called under the lock, so
// no marked dir belongs to a live daemon.
func sweepStale(t testing.TB) {
	dirs, _ := filepath.Glob("/tmp/dk-*/" + staleMarker)
	for _, m := range dirs {
		dir := filepath.Dir(m)
		dataRoot, _ := os.ReadFile(m)
		for _, pid := range pidsMentioning(dir) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		errs := []error{removeCgroups("/testenv-" + filepath.Base(dir)), unmountAll(dir)}
		if dr := string(dataRoot); strings.HasPrefix(dr, "/scratch/dk-root-") {
			errs = append(errs, unmountAll(dr), os.RemoveAll(dr))
		}
		errs = append(errs, os.RemoveAll(dir))
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

func onOverlay(path string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return false
	}
	return st.Type == 0x794c7630 // OVERLAYFS_SUPER_MAGIC
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
	resp, err := d.cli.ImageLoad(ctx, &buf, client.ImageLoadWithQuiet(true))
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
	ins, err := d.cli.ImageInspect(ctx, tag)
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

// cgroupDirs lists the directories named parent in every cgroup hierarchy
// (one on cgroup v2, one per controller on v1).
func cgroupDirs(parent string) []string {
	const root = "/sys/fs/cgroup"
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		return []string{filepath.Join(root, parent)}
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() { // skips the cpu,cpuacct style symlinks
			out = append(out, filepath.Join(root, e.Name(), parent))
		}
	}
	return out
}

// removeCgroups kills the processes left in the cgroups under parent (those
// of containers a killed daemon left behind) and removes the cgroups.
func removeCgroups(parent string) error {
	if parent == "" {
		return nil
	}
	var lastErr error
	for attempt := 0; attempt < 50; attempt++ {
		lastErr = nil
		killCgroupProcs(parent)
		for _, top := range cgroupDirs(parent) {
			dirs := cgroupTree(top)
			// Children before parents.
			for i := len(dirs) - 1; i >= 0; i-- {
				if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
					lastErr = fmt.Errorf("removing cgroup %s: %w", dirs[i], err)
				}
			}
		}
		if lastErr == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return lastErr
}

// cgroupTree lists top and the cgroups below it, parents first.
func cgroupTree(top string) []string {
	var dirs []string
	_ = filepath.WalkDir(top, func(p string, de os.DirEntry, err error) error {
		if err == nil && de.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	return dirs
}

// killCgroupProcs SIGKILLs every process in the cgroups under parent.
func killCgroupProcs(parent string) {
	if parent == "" {
		return
	}
	for _, top := range cgroupDirs(parent) {
		for _, dir := range cgroupTree(top) {
			b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
}
