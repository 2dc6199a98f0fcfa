package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// RunCheckingLeftovers runs a package's tests (call it from TestMain) and
// fails the run when they left anything on the host: daemons, registries,
// mounts, state folders, cgroups, docker's interfaces or iptables rules.
// extraGlobs name more paths that must not outlive the tests.
func RunCheckingLeftovers(m *testing.M, extraGlobs ...string) int {
	leftovers := func() []string { return Leftovers(extraGlobs...) }
	before := leftovers()
	code := m.Run()
	// Killed processes take a moment to be reaped by init.
	var left []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		left = left[:0]
		for _, l := range leftovers() {
			if !slices.Contains(before, l) {
				left = append(left, l)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, l := range left {
		fmt.Fprintf(os.Stderr, "left behind after the tests: %s\n", l)
		code = 1
	}
	return code
}

// Leftovers lists what a test run may have left on the host; a run compares
// the list before and after.
func Leftovers(extraGlobs ...string) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		switch name := strings.TrimSpace(string(b)); name {
		case "dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "docker-registry", "debootstrap", "runc":
			// Ours are our children or orphans adopted by init; other test
			// binaries running meanwhile have their own.
			if ppid := ParentOf(filepath.Dir(p)); ppid == os.Getpid() || ppid == 1 {
				out = append(out, "process "+name+" "+filepath.Base(filepath.Dir(p)))
			}
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "/dkd-") || strings.Contains(l, "/dk-") || strings.Contains(l, "/debootstrap-") {
				out = append(out, "mount "+l)
			}
		}
	}
	for _, g := range append([]string{"/tmp/dkd-*", filepath.Join(os.TempDir(), "dkd-*"), "/sys/fs/cgroup/*/dkd-*", "/sys/fs/cgroup/dkd-*"}, extraGlobs...) {
		ms, _ := filepath.Glob(g)
		for _, m := range ms {
			out = append(out, "path "+m)
		}
	}
	ifs, _ := os.ReadDir("/sys/class/net")
	for _, i := range ifs {
		if n := i.Name(); n == "docker0" || strings.HasPrefix(n, "br-") || strings.HasPrefix(n, "veth") {
			out = append(out, "interface "+n)
		}
	}
	for _, cmd := range []string{"iptables-nft-save", "iptables-legacy-save", "ip6tables-nft-save", "ip6tables-legacy-save"} {
		b, err := exec.Command(cmd).Output()
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(strings.ToUpper(l), "DOCKER") {
				out = append(out, cmd+": "+l)
			}
		}
	}
	return out
}

// ParentOf is the parent pid of /proc/<pid> (0 for a zombie or a gone process).
func ParentOf(procDir string) int {
	b, err := os.ReadFile(filepath.Join(procDir, "stat"))
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...: comm may hold spaces, so cut at the last ')'.
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ppid := 0
	if len(fields) > 1 && fields[0] != "Z" { // a zombie is already dead
		fmt.Sscan(fields[1], &ppid)
	}
	return ppid
}

// LeftoversSince waits up to wait for Leftovers to hold nothing beyond
// before (killed processes take a moment to be reaped) and returns what
// is still there.
func LeftoversSince(before []string, wait time.Duration) []string {
	var left []string
	for end := time.Now().Add(wait); ; time.Sleep(100 * time.Millisecond) {
		left = left[:0]
		for _, l := range Leftovers() {
			if !slices.Contains(before, l) {
				left = append(left, l)
			}
		}
		if len(left) == 0 || time.Now().After(end) {
			return left
		}
	}
}
