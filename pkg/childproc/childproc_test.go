package childproc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStartLogsAndStops(t *testing.T) {
	log := filepath.Join(t.TempDir(), "child.log")
	// The child ignores SIGTERM, so Stop must escalate to SIGKILL.
	p, err := Start("/bin/sh", []string{"-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"}, log, Options{})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for TailFile(log, 1) != "ready" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if TailFile(log, 1) != "ready" {
		t.Fatalf("log %q", TailFile(log, 5))
	}
	if pgid, _ := syscall.Getpgid(p.Pid()); pgid != p.Pid() {
		t.Errorf("child in process group %d, want its own", pgid)
	}
	if !p.Stop(context.Background(), 200*time.Millisecond) {
		t.Error("Stop did not report the SIGKILL it needed")
	}
	if !p.Exited() || !strings.Contains(p.ExitText(), "killed") {
		t.Errorf("exited %v, %q", p.Exited(), p.ExitText())
	}
	if p.Stop(context.Background(), time.Second) {
		t.Error("a second Stop killed again")
	}
}

func TestExitTextAndMissingLog(t *testing.T) {
	dir := t.TempDir()
	p, err := Start("/bin/sh", []string{"-c", "exit 3"}, filepath.Join(dir, "l"), Options{DeathSignal: syscall.SIGKILL})
	if err != nil {
		t.Fatal(err)
	}
	for !p.Exited() {
		time.Sleep(5 * time.Millisecond)
	}
	if p.ExitText() != "exit status 3" || p.Err() == nil {
		t.Errorf("ExitText %q", p.ExitText())
	}
	if _, err := Start(filepath.Join(dir, "missing"), nil, filepath.Join(dir, "l2"), Options{}); err == nil || !strings.Contains(err.Error(), "starting") {
		t.Errorf("err %v", err)
	}
	if TailFile(filepath.Join(dir, "nope"), 3) != "" {
		t.Error("a missing log should tail to nothing")
	}
	os.WriteFile(filepath.Join(dir, "three"), []byte("a\nb\nc\n"), 0o600)
	if got := TailFile(filepath.Join(dir, "three"), 2); got != "b\nc" {
		t.Errorf("tail %q", got)
	}
}

// A grandchild that outlives its parent (as a shim outlives a killed
// dockerd) is found by the path on its command line and by its mount
// namespace, and KillAll ends it.
func TestLeftoversFoundAndKilled(t *testing.T) {
	dir := t.TempDir()
	mark := filepath.Join(dir, "unique-mark")
	p, err := Start("/bin/sh", []string{"-c", "sh -c 'while :; do sleep 0.05; done' " + mark + " & echo $!"}, filepath.Join(dir, "l"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for !p.Exited() {
		time.Sleep(5 * time.Millisecond)
	}
	var orphan int
	fmt.Sscan(TailFile(filepath.Join(dir, "l"), 1), &orphan)
	if orphan <= 0 {
		t.Fatalf("no orphan pid in the log: %q", TailFile(filepath.Join(dir, "l"), 5))
	}
	// The orphan's own forks (each sleep) carry its command line until they
	// exec: those are not other matches.
	if got := slices.DeleteFunc(Mentioning(mark), func(pid int) bool { return parentOf(pid) == orphan }); !slices.Equal(got, []int{orphan}) {
		t.Errorf("Mentioning = %v, want [%d]", got, orphan)
	}
	ns, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	if got := InMountNamespace(ns); !slices.Contains(got, orphan) || slices.Contains(got, os.Getpid()) {
		t.Errorf("InMountNamespace(%s) = %v, want %d in it and not this process", ns, got, orphan)
	}
	if Mentioning("") != nil || InMountNamespace("") != nil {
		t.Error("an empty key matched processes")
	}
	if left := KillAll(func() []int { return Mentioning(mark) }, 5*time.Second); left != nil {
		t.Errorf("KillAll left %v", left)
	}
	if err := syscall.Kill(orphan, 0); err == nil {
		// A zombie until init reaps it; its command line is gone already.
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", orphan))
		if !strings.Contains(string(st), ") Z ") && len(st) > 0 {
			t.Errorf("orphan %d still running: %s", orphan, st)
		}
	}
}

// parentOf is pid's parent, 0 when it is gone.
func parentOf(pid int) int {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command, which is in parentheses: state, ppid.
	i := strings.LastIndexByte(string(st), ')')
	var state string
	var ppid int
	fmt.Sscan(string(st[i+1:]), &state, &ppid)
	return ppid
}
