package daemon_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/childproc"
	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

// reapHelperEnv turns TestReapHelper into the owner that dies: a process
// that starts a daemon with a running container, says where, and waits to
// be killed.
const reapHelperEnv = "DAEMON_TEST_REAP_HELPER"

func TestReapHelper(t *testing.T) {
	if os.Getenv(reapHelperEnv) == "" {
		t.Skip("the owner process of TestReapAfterOwnerDied")
	}
	requireDockerd(t)
	ctx := context.Background()
	d, err := daemon.Start(ctx, daemon.Options{Isolated: true})
	if err != nil {
		t.Fatal(err)
	}
	_, pid := runSleeper(t, ctx, d.Client())
	fmt.Printf("reap-helper: %s %s %s %d %d %d\n", d.StateDir(), d.NamespaceID(), d.CgroupParent(), d.Pid(), d.ContainerdPid(), pid)
	select {}
}

// reapOwner is what the dead owner's daemon was.
type reapOwner struct {
	dir, ns, parent                   string
	dockerd, containerd, containerPid int
}

// A daemon whose owner died without Stop (its dockerd and containerd got
// SIGTERM from the kernel, nothing else did) is removed by Reap: dockerd,
// containerd and the shims, the container and its cgroups, the state
// folder.
func TestReapAfterOwnerDied(t *testing.T) {
	requireDockerd(t)
	unlock := testenv.LockDockerd(t)
	defer unlock()
	before := hostSnapshot(t)
	delete(before, "mounts")
	o := startDyingOwner(t)
	// dockerd, shutting down on its SIGTERM, gives the container 5 s.
	if err := syscall.Kill(o.containerPid, 0); err != nil {
		t.Fatalf("the container did not outlive its owner for a moment: %v", err)
	}
	if _, err := os.Stat(o.dir); err != nil {
		t.Fatalf("the state folder is gone before Reap: %v", err)
	}
	t.Logf("left before Reap: processes %v, cgroups %v",
		childproc.Mentioning(o.dir), existing(daemon.CgroupDirs(o.parent)))
	t0 := time.Now()
	if err := daemon.Reap(o.dir); err != nil {
		t.Fatalf("Reap: %v", err)
	}
	t.Logf("Reap took %s", time.Since(t0))
	for _, pid := range []int{o.dockerd, o.containerd, o.containerPid} {
		waitGone(t, pid, 5*time.Second)
	}
	checkGone(t, o.dir, o.ns, o.parent)
	after := hostSnapshot(t)
	delete(after, "mounts")
	compareSnapshots(t, before, after)
}

// startDyingOwner runs TestReapHelper in a child test binary, reads what it
// started, and SIGKILLs it.
func startDyingOwner(t *testing.T) reapOwner {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestReapHelper$", "-test.v")
	// The owner's own temp folders stay in ours.
	cmd.Env = append(os.Environ(), reapHelperEnv+"=1", "TMPDIR="+t.TempDir())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill() }()
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l, ok := strings.CutPrefix(sc.Text(), "reap-helper: "); ok {
				line <- l
				return
			}
			fmt.Fprintf(os.Stderr, "owner: %s\n", sc.Text())
		}
		close(line)
	}()
	var o reapOwner
	select {
	case l, ok := <-line:
		if !ok {
			t.Fatal("the owner ended without starting its daemon")
		}
		if _, err := fmt.Sscan(l, &o.dir, &o.ns, &o.parent, &o.dockerd, &o.containerd, &o.containerPid); err != nil {
			t.Fatalf("owner said %q: %v", l, err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the owner did not start its daemon within 2 minutes")
	}
	return o
}

// waitGone waits until pid has ended (a zombie counts as ended).
func waitGone(t *testing.T, pid int, wait time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(wait); ; time.Sleep(20 * time.Millisecond) {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(st), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still running after %s: %s", pid, wait, st)
		}
	}
}

func existing(paths []string) []string {
	var out []string
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// Reap kills what names the folder and removes it: it refuses any folder
// but a daemon's state folder.
func TestReapRefusesOtherFolders(t *testing.T) {
	keep := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(keep, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{keep, "dkd-1", "tmp/dkd-1"} {
		if err := daemon.Reap(dir); err == nil || !strings.Contains(err.Error(), "not the state folder") {
			t.Errorf("Reap(%q) = %v, want a refusal", dir, err)
		}
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("Reap removed %s: %v", keep, err)
	}
}
