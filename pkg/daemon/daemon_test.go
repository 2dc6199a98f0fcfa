package daemon_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/certs"

	"github.com/concourse-docker/docker-image-resource/pkg/childproc"
	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/mountinfo"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/sirupsen/logrus"
)

// requireDockerd skips unless dockerd can run here, and makes sure the
// cgroup set-up is never asked for on this host.
func requireDockerd(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("starting dockerd needs root")
	}
	for _, b := range []string{"dockerd", "containerd"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s not installed: %v", b, err)
		}
	}
	t.Setenv(daemon.InContainerEnv, "")
}

// logBuf collects a logger's output and copies it to the test log.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
	t  *testing.T
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.t.Logf("log: %s", bytes.TrimRight(p, "\n"))
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testLog(t *testing.T) (*logrus.Entry, *logBuf) {
	buf := &logBuf{t: t}
	l := logrus.New()
	l.SetOutput(buf)
	l.SetLevel(logrus.DebugLevel)
	l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true, DisableColors: true})
	return logrus.NewEntry(l), buf
}

// shortDir is a parent for state folders that the test can inspect after a
// failed start (the state folder's own name is gone by then).
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "dkt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// hostSnapshot records what a daemon could leave on the host.
func hostSnapshot(t *testing.T) map[string]string {
	t.Helper()
	s := map[string]string{}
	_ = filepath.WalkDir("/etc/docker", func(p string, de os.DirEntry, err error) error {
		if err != nil {
			s[p] = "error " + err.Error()
			return nil
		}
		fi, _ := de.Info()
		v := fi.Mode().String()
		if de.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			v += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		s[p] = v
		return nil
	})
	// Other tests on this machine may add network namespaces, veth pairs
	// or /run/mount/utab meanwhile: only what a daemon could leave counts.
	unrelated := map[string]bool{"netns": true, "mount": true, "xtables.lock": true}
	for _, dir := range []string{"/run", "/opt", "/var/lib", "/var/run"} {
		ents, _ := os.ReadDir(dir)
		var names []string
		for _, e := range ents {
			if !unrelated[e.Name()] {
				names = append(names, e.Name())
			}
		}
		s["ls "+dir] = strings.Join(names, " ")
	}
	for _, p := range []string{"/etc/containerd", "/var/lib/docker", "/var/lib/containerd", "/run/docker", "/run/containerd", "/opt/containerd"} {
		_, err := os.Lstat(p)
		s["exists "+p] = strconv.FormatBool(err == nil)
	}
	b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	s["ip_forward"] = strings.TrimSpace(string(b))
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil {
		var names []string
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) > 1 && (strings.HasPrefix(f[1], "docker") || strings.HasPrefix(f[1], "br-")) {
				names = append(names, f[1])
			}
		}
		s["docker links"] = strings.Join(names, " ")
	}
	for _, table := range []string{"filter", "nat"} {
		if out, err := exec.Command("iptables", "-w", "-t", table, "-S").Output(); err == nil {
			var rules []string
			for _, l := range strings.Split(string(out), "\n") {
				if strings.Contains(l, "DOCKER") || strings.Contains(l, "docker0") || strings.Contains(l, "172.17.") {
					rules = append(rules, l)
				}
			}
			s["docker iptables "+table] = strings.Join(rules, "\n")
		}
	}
	mps, err := mountinfo.Points("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var ml []string
	for mp := range mps {
		ml = append(ml, mp)
	}
	sort.Strings(ml)
	s["mounts"] = strings.Join(ml, "\n")
	cg, _ := filepath.Glob("/sys/fs/cgroup/*/dkd-*")
	cg2, _ := filepath.Glob("/sys/fs/cgroup/dkd-*")
	s["cgroups"] = strings.Join(append(cg, cg2...), " ")
	return s
}

func compareSnapshots(t *testing.T, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("host changed: %s\nbefore: %s\nafter:  %s", k, v, after[k])
		}
	}
	for k, v := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("host changed: new %s (%s)", k, v)
		}
	}
}

// checkGone fails the test if anything of a stopped daemon is left: its
// state folder, processes, mounts, cgroups, or a thread of ours still in a
// private mount namespace.
func checkGone(t *testing.T, dir, nsID, cgroupParent string) {
	t.Helper()
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		ents, _ := os.ReadDir(dir)
		t.Errorf("%s still there (%v): %v", dir, err, ents)
	}
	if pids := childproc.Mentioning(dir); len(pids) > 0 {
		t.Errorf("processes naming %s still running: %v", dir, pids)
	}
	if pids := childproc.InMountNamespace(nsID); len(pids) > 0 {
		t.Errorf("processes still in the daemon's namespace: %v", pids)
	}
	if mps, err := mountinfo.Under("/proc/self/mountinfo", dir); err != nil || len(mps) > 0 {
		t.Errorf("mounts under %s: %v %v", dir, mps, err)
	}
	if cgroupParent != "" {
		for _, d := range daemon.CgroupDirs(cgroupParent) {
			if _, err := os.Stat(d); err == nil {
				t.Errorf("cgroup %s still there", d)
			}
		}
	}
	checkThreadsOnHost(t)
}

// checkThreadsOnHost fails if a thread of this process is in another mount
// namespace than the main thread (the namespace thread must end with Stop).
func checkThreadsOnHost(t *testing.T) {
	t.Helper()
	host, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	var odd []string
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		odd = odd[:0]
		tasks, _ := filepath.Glob("/proc/self/task/*/ns/mnt")
		for _, tk := range tasks {
			if l, err := os.Readlink(tk); err == nil && l != host {
				odd = append(odd, tk+" "+l)
			}
		}
		if len(odd) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(odd) > 0 {
		t.Errorf("threads still in a private mount namespace: %v", odd)
	}
}

func cmdline(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

func flagValue(args []string, flag string) (string, bool) {
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		return "", false
	}
	return args[i+1], true
}

func TestStartPingStop(t *testing.T) {
	requireDockerd(t)
	unlock := testenv.LockDockerd(t)
	defer unlock()
	before := hostSnapshot(t)
	log, buf := testLog(t)
	ctx := context.Background()

	d, err := daemon.Start(ctx, daemon.Options{Isolated: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop(context.Background())
	if _, err := d.Client().Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if !strings.HasPrefix(d.Host(), "unix:///tmp/dkd-") || len(d.Host()) > 60 {
		t.Errorf("Host = %q", d.Host())
	}
	if d.StorageDriver() == "" || !strings.Contains(buf.String(), "storage driver "+d.StorageDriver()) {
		t.Errorf("storage driver %q not logged:\n%s", d.StorageDriver(), buf)
	}
	if d.StorageDriver() != "overlay2" {
		t.Logf("storage driver is %s (overlay2 expected on ext4)", d.StorageDriver())
	}
	if d.Elapsed() <= 0 || d.Elapsed() > time.Minute {
		t.Errorf("Elapsed = %s", d.Elapsed())
	}
	if d.Version() == "" || !strings.HasPrefix(d.DataRoot(), d.StateDir()+"/") {
		t.Errorf("Version %q DataRoot %q", d.Version(), d.DataRoot())
	}
	t.Logf("dockerd %s ready %s after exec", d.Version(), d.Elapsed())

	// dockerd and containerd run in the private namespace, and see their
	// own /run while the host's has no trace of them.
	host, _ := os.Readlink("/proc/self/ns/mnt")
	for name, pid := range map[string]int{"dockerd": d.Pid(), "containerd": d.ContainerdPid()} {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
		if l != d.NamespaceID() || l == host {
			t.Errorf("%s in mount namespace %s, want %s (host %s)", name, l, d.NamespaceID(), host)
		}
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/run/docker", d.Pid())); err != nil {
		t.Errorf("dockerd has no /run/docker in its namespace: %v", err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/root/etc/docker/certs.d", d.Pid())); err != nil {
		t.Errorf("dockerd has no certs.d: %v", err)
	}
	during := hostSnapshot(t)
	delete(during, "mounts") // the test's own temp folders may come and go
	delete(before, "mounts")
	compareSnapshots(t, before, during)
	before = hostSnapshot(t)

	dir, nsID, parent := d.StateDir(), d.NamespaceID(), d.CgroupParent()
	t0 := time.Now()
	if err := d.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("Stop took %s", time.Since(t0))
	if err := d.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if !strings.Contains(d.LogTail(20), "Daemon shutdown complete") {
		t.Errorf("LogTail after Stop:\n%s", d.LogTail(20))
	}
	checkGone(t, dir, nsID, parent)
	compareSnapshots(t, before, hostSnapshot(t))
}

func TestTwoDaemonsSideBySide(t *testing.T) {
	requireDockerd(t)
	unlock := testenv.LockDockerd(t)
	defer unlock()
	ctx := context.Background()
	log, _ := testLog(t)
	var ds []*daemon.Daemon
	for i := 0; i < 2; i++ {
		d, err := daemon.Start(ctx, daemon.Options{Isolated: true, Log: log})
		if err != nil {
			t.Fatalf("daemon %d: %v", i, err)
		}
		defer d.Stop(context.Background())
		ds = append(ds, d)
	}
	a, b := ds[0], ds[1]
	if a.Host() == b.Host() || a.DataRoot() == b.DataRoot() || a.NamespaceID() == b.NamespaceID() || a.CgroupParent() == b.CgroupParent() {
		t.Fatalf("daemons share state: %s %s / %s %s", a.Host(), a.DataRoot(), b.Host(), b.DataRoot())
	}
	for _, d := range ds {
		info, err := d.Client().Info(ctx)
		if err != nil {
			t.Fatalf("info from %s: %v", d.Host(), err)
		}
		if info.DockerRootDir != d.DataRoot() {
			t.Errorf("%s reports data root %s, want %s", d.Host(), info.DockerRootDir, d.DataRoot())
		}
	}
	// Stopping one leaves the other working.
	dir, nsID, parent := a.StateDir(), a.NamespaceID(), a.CgroupParent()
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Client().Ping(ctx); err != nil {
		t.Fatalf("second daemon after the first stopped: %v", err)
	}
	dirB, nsB, parentB := b.StateDir(), b.NamespaceID(), b.CgroupParent()
	if err := b.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	checkGone(t, dir, nsID, parent)
	checkGone(t, dirB, nsB, parentB)
}

func TestFlagsAndProxyReachDockerd(t *testing.T) {
	requireDockerd(t)
	unlock := testenv.LockDockerd(t)
	defer unlock()
	t.Setenv("HTTP_PROXY", "http://proxy.example:3128")
	t.Setenv("https_proxy", "http://sproxy.example:3129")
	t.Setenv("NO_PROXY", "localhost,127.0.0.1,.internal.example")
	ctx := context.Background()
	log, _ := testLog(t)
	d, err := daemon.Start(ctx, daemon.Options{
		Isolated:               true,
		Log:                    log,
		MaxConcurrentDownloads: 5,
		MaxConcurrentUploads:   7,
		InsecureRegistries:     []string{"myreg.example:5000", "10.99.0.0/16"},
		RegistryMirror:         "https://mirror.example.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop(context.Background())
	info, err := d.Client().Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rc := info.RegistryConfig
	if ic := rc.IndexConfigs["myreg.example:5000"]; ic == nil || ic.Secure {
		t.Errorf("myreg.example:5000 not insecure: %+v", ic)
	}
	var cidrs []string
	for _, c := range rc.InsecureRegistryCIDRs {
		cidrs = append(cidrs, c.String())
	}
	if !slices.Contains(cidrs, "10.99.0.0/16") {
		t.Errorf("insecure CIDRs %v lack 10.99.0.0/16", cidrs)
	}
	if !slices.Contains(rc.Mirrors, "https://mirror.example.com/") {
		t.Errorf("mirrors = %v", rc.Mirrors)
	}
	if info.HTTPProxy != "http://proxy.example:3128" || info.HTTPSProxy != "http://sproxy.example:3129" || info.NoProxy != "localhost,127.0.0.1,.internal.example" {
		t.Errorf("proxies: http %q https %q no %q", info.HTTPProxy, info.HTTPSProxy, info.NoProxy)
	}

	args := cmdline(t, d.Pid())
	_, wantMTU, mtuErr := daemon.DefaultRouteMTU("/proc/net/route", "/sys/class/net")
	gotMTU, ok := flagValue(args, "--mtu")
	switch {
	case mtuErr != nil && ok:
		t.Errorf("--mtu %s given without a default route MTU (%v)", gotMTU, mtuErr)
	case mtuErr == nil && gotMTU != strconv.Itoa(wantMTU):
		t.Errorf("--mtu = %q, want %d", gotMTU, wantMTU)
	}
	t.Logf("dockerd --mtu %s (default route MTU %d, %v)", gotMTU, wantMTU, mtuErr)
	for flag, want := range map[string]string{"--max-concurrent-downloads": "5", "--max-concurrent-uploads": "7"} {
		if got, _ := flagValue(args, flag); got != want {
			t.Errorf("%s = %q, want %q", flag, got, want)
		}
	}
	for _, f := range daemon.IsolatedArgs {
		if !slices.Contains(args, f) {
			t.Errorf("isolated dockerd lacks %s: %q", f, args)
		}
	}
}

func TestCertsVisibleToDockerdOnly(t *testing.T) {
	requireDockerd(t)
	unlock := testenv.LockDockerd(t)
	defer unlock()
	ca := testenv.NewCA(t)
	clientCA := testenv.NewCA(t)
	certPEM, keyPEM := clientCA.Issue(t, "client")
	const domain = "reg.example:5443"
	before := hostSnapshot(t)
	delete(before, "mounts")
	ctx := context.Background()
	log, _ := testLog(t)
	d, err := daemon.Start(ctx, daemon.Options{
		Isolated:    true,
		Log:         log,
		CACerts:     []certs.CA{{Domain: domain, Cert: string(ca.CertPEM)}},
		ClientCerts: []certs.ClientCert{{Domain: domain, Cert: string(certPEM), Key: string(keyPEM)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop(context.Background())

	root := fmt.Sprintf("/proc/%d/root", d.Pid())
	want := map[string][]byte{"ca.crt": ca.CertPEM, "client.cert": certPEM, "client.key": keyPEM}
	for name, content := range want {
		p := filepath.Join(root, "etc/docker/certs.d", domain, name)
		got, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("dockerd cannot read %s: %v", name, err)
			continue
		}
		if !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(content)) {
			t.Errorf("%s differs in dockerd's view", name)
		}
	}
	// The host's other /etc/docker entries stay visible to dockerd.
	hostEnts, _ := os.ReadDir("/etc/docker")
	for _, e := range hostEnts {
		if e.Name() == "certs.d" {
			continue
		}
		if _, err := os.Lstat(filepath.Join(root, "etc/docker", e.Name())); err != nil {
			t.Errorf("host's /etc/docker/%s hidden from dockerd: %v", e.Name(), err)
		}
	}
	if _, err := os.Stat(filepath.Join("/etc/docker/certs.d", domain)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("certificates reached the host's /etc/docker/certs.d: %v", err)
	}
	during := hostSnapshot(t)
	delete(during, "mounts")
	compareSnapshots(t, before, during)
	if err := d.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	after := hostSnapshot(t)
	delete(after, "mounts")
	compareSnapshots(t, before, after)
}

// fakeDockerd writes a dockerd that logs and hangs, recording its pids in
// pidFile.
func fakeDockerd(t *testing.T) (bin, pidFile string) {
	dir := t.TempDir()
	bin = filepath.Join(dir, "dockerd")
	pidFile = filepath.Join(dir, "pids")
	script := `#!/bin/sh
echo "fake dockerd: starting with $*"
echo "fake dockerd: stuck waiting for something" >&2
sleep 600 &
echo $$ $! >>"$FAKE_DOCKERD_PIDS"
wait
`
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKE_DOCKERD_PIDS", pidFile)
	return bin, pidFile
}

// checkPidsGone fails if a pid listed in pidFile still runs.
func checkPidsGone(t *testing.T, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("fake dockerd recorded no pids: %v", err)
	}
	for _, f := range strings.Fields(string(b)) {
		st, err := os.ReadFile("/proc/" + f + "/stat")
		if err == nil && !strings.Contains(string(st), ") Z ") {
			t.Errorf("fake dockerd process %s still running: %s", f, st)
		}
	}
}

func checkParentEmpty(t *testing.T, parent string) {
	t.Helper()
	ents, err := os.ReadDir(parent)
	if err != nil || len(ents) > 0 {
		t.Errorf("left in %s: %v %v", parent, ents, err)
	}
	if pids := childproc.Mentioning(parent); len(pids) > 0 {
		t.Errorf("processes naming %s still running: %v", parent, pids)
	}
	if mps, _ := mountinfo.Under("/proc/self/mountinfo", parent); len(mps) > 0 {
		t.Errorf("mounts under %s: %v", parent, mps)
	}
	checkThreadsOnHost(t)
}

func TestStartupTimeoutReportsLog(t *testing.T) {
	requireDockerd(t)
	unlock := testenv.LockDockerd(t)
	defer unlock()
	bin, pidFile := fakeDockerd(t)
	parent := shortDir(t)
	log, _ := testLog(t)
	t0 := time.Now()
	d, err := daemon.Start(context.Background(), daemon.Options{Isolated: true, Log: log, Binary: bin, Dir: parent, StartupTimeout: 1500 * time.Millisecond})
	took := time.Since(t0)
	if err == nil {
		d.Stop(context.Background())
		t.Fatal("the fake dockerd started")
	}
	var se *daemon.StartError
	if !errors.As(err, &se) {
		t.Fatalf("error %v is no StartError", err)
	}
	const want = "Docker failed to start within 1.5 seconds. Consider increasing 'startup_timeout' in source configuration."
	if se.Reason != want {
		t.Errorf("reason %q\nwant   %q", se.Reason, want)
	}
	if !strings.Contains(se.LogTail, "stuck waiting for something") || !strings.Contains(err.Error(), "stuck waiting for something") {
		t.Errorf("log tail missing from %q", err)
	}
	if took < 1500*time.Millisecond || took > 10*time.Second {
		t.Errorf("timed out after %s", took)
	}
	t.Logf("error after %s:\n%v", took, err)
	checkParentEmpty(t, parent)
	checkPidsGone(t, pidFile)
}

// A dockerd that rejects deprecated-key-path (as a future one might) is
// started again without it.
func TestKeyPathRejectedRetried(t *testing.T) {
	requireDockerd(t)
	unlock := testenv.LockDockerd(t)
	defer unlock()
	real, err := exec.LookPath("dockerd")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "dockerd")
	script := `#!/bin/sh
cfg=
prev=
for a in "$@"; do [ "$prev" = --config-file ] && cfg=$a; prev=$a; done
if grep -q deprecated-key-path "$cfg"; then
	echo "unable to configure the Docker daemon with file $cfg: the following directives don't match any configuration option: deprecated-key-path" >&2
	exit 1
fi
exec ` + real + ` "$@"
`
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	log, buf := testLog(t)
	d, err := daemon.Start(context.Background(), daemon.Options{Isolated: true, Log: log, Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop(context.Background())
	if !strings.Contains(buf.String(), "starting it again without") {
		t.Errorf("no retry logged:\n%s", buf)
	}
	cfg, _ := os.ReadFile(filepath.Join(d.StateDir(), "daemon.json"))
	if strings.Contains(string(cfg), "deprecated-key-path") {
		t.Errorf("daemon.json still has the key path: %s", cfg)
	}
	if _, err := d.Client().Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestEarlyExitFailsFast(t *testing.T) {
	requireDockerd(t)
	unlock := testenv.LockDockerd(t)
	defer unlock()
	parent := shortDir(t)
	log, _ := testLog(t)
	t0 := time.Now()
	d, err := daemon.Start(context.Background(), daemon.Options{Isolated: true, Log: log, Dir: parent, RegistryMirror: "ftp://mirror.example"})
	took := time.Since(t0)
	if err == nil {
		d.Stop(context.Background())
		t.Fatal("dockerd started with a bad mirror")
	}
	var se *daemon.StartError
	if !errors.As(err, &se) || !strings.HasPrefix(se.Reason, "dockerd exited during start-up") {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(se.LogTail, "invalid mirror") {
		t.Errorf("log tail %q lacks dockerd's complaint", se.LogTail)
	}
	if took > 5*time.Second {
		t.Errorf("early exit noticed after %s", took)
	}
	t.Logf("failed after %s:\n%v", took, err)
	checkParentEmpty(t, parent)
}

func TestCancelDuringStartLeavesNothing(t *testing.T) {
	requireDockerd(t)
	unlock := testenv.LockDockerd(t)
	defer unlock()
	log, _ := testLog(t)
	for _, delay := range []time.Duration{0, 20 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond, 400 * time.Millisecond} {
		t.Run(delay.String(), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if delay == 0 {
				cancel()
			} else {
				time.AfterFunc(delay, cancel)
			}
			startCancelled(t, ctx, log, func() { t.Logf("started within %s; stopping", delay) })
		})
	}
	// The put cancels its context on SIGTERM.
	t.Run("SIGTERM", func(t *testing.T) {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		time.AfterFunc(150*time.Millisecond, func() { _ = syscall.Kill(os.Getpid(), syscall.SIGTERM) })
		startCancelled(t, ctx, log, func() {
			t.Log("started before SIGTERM")
			<-ctx.Done()
		})
	})
}

// startCancelled starts a daemon with ctx, which is being cancelled: Start
// fails with context.Canceled, or it won the race and the daemon is stopped
// after started returns. Either way nothing is left.
func startCancelled(t *testing.T, ctx context.Context, log *logrus.Entry, started func()) {
	t.Helper()
	parent := shortDir(t)
	d, err := daemon.Start(ctx, daemon.Options{Isolated: true, Log: log, Dir: parent})
	if err == nil {
		started()
		if err := d.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
	} else if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	checkParentEmpty(t, parent)
}

func TestStopWithCancelledContextStillCleansUp(t *testing.T) {
	requireDockerd(t)
	unlock := testenv.LockDockerd(t)
	defer unlock()
	log, buf := testLog(t)
	d, err := daemon.Start(context.Background(), daemon.Options{Isolated: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	dir, nsID, parent := d.StateDir(), d.NamespaceID(), d.CgroupParent()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "was killed") {
		t.Errorf("no warning about the SIGKILL:\n%s", buf)
	}
	checkGone(t, dir, nsID, parent)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func TestStartupTime(t *testing.T) {
	if testing.Short() {
		t.Skip("timing five starts")
	}
	requireDockerd(t)
	unlock := testenv.LockDockerd(t)
	defer unlock()
	ctx := context.Background()
	var ready, total, stop []time.Duration
	for i := 0; i < 5; i++ {
		t0 := time.Now()
		d, err := daemon.Start(ctx, daemon.Options{Isolated: true})
		if err != nil {
			t.Fatal(err)
		}
		total = append(total, time.Since(t0))
		ready = append(ready, d.Elapsed())
		t1 := time.Now()
		if err := d.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		stop = append(stop, time.Since(t1))
	}
	t.Logf("dockerd exec -> API ready: median %s %v", median(ready), ready)
	t.Logf("Start (namespace, containerd, dockerd, info): median %s %v", median(total), total)
	t.Logf("Stop: median %s %v", median(stop), stop)
}
