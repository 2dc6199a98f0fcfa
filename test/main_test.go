package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain fails the run if the tests left anything behind on the host:
// daemons, mounts, state folders, a bridge.
func TestMain(m *testing.M) {
	before := leftovers()
	code := m.Run()
	// Killed processes take a moment to be reaped by init; give them that.
	var after []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		after = newSince(before, leftovers())
		if len(after) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, l := range after {
		fmt.Fprintf(os.Stderr, "left behind after the tests: %s\n", l)
		code = 1
	}
	os.Exit(code)
}

func newSince(before, now []string) []string {
	var out []string
	for _, l := range now {
		if !contains(before, l) {
			out = append(out, l)
		}
	}
	return out
}

func leftovers() []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		switch name := strings.TrimSpace(string(b)); name {
		case "dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "docker-registry":
			// Ours are our children, or orphans adopted by init; other test
			// binaries running meanwhile have their own.
			if ppid := parentOf(filepath.Dir(p)); ppid == os.Getpid() || ppid == 1 {
				out = append(out, "process "+name+" "+filepath.Base(filepath.Dir(p)))
			}
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "/dkd-") || strings.Contains(l, "/dk-") {
				out = append(out, "mount "+l)
			}
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "dkd-*"))
	for _, d := range dirs {
		out = append(out, "folder "+d)
	}
	if _, err := os.Stat("/sys/class/net/docker0"); err == nil {
		out = append(out, "bridge docker0")
	}
	for _, table := range []string{"filter", "nat"} {
		rules, _ := exec.Command("iptables", "-t", table, "-S").Output()
		for _, l := range strings.Split(string(rules), "\n") {
			if strings.Contains(l, "DOCKER") {
				out = append(out, "iptables rule "+l)
			}
		}
	}
	return out
}

func parentOf(procDir string) int {
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
