package childproc

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"
)

// What a child leaves behind when it is killed (a dockerd's shims, a
// containerd's shims' children) is found by what it has in common with it:
// a unique path on its command line, or a private mount namespace.

// Mentioning lists the processes other than this one whose command line
// contains s, a unique path such as a daemon's state folder.
func Mentioning(s string) []int {
	if s == "" {
		return nil
	}
	return match(func(pid string) bool {
		b, err := os.ReadFile("/proc/" + pid + "/cmdline")
		return err == nil && bytes.Contains(b, []byte(s))
	})
}

// InMountNamespace lists the processes other than this one whose mount
// namespace is ns ("mnt:[4026532]"). Zombies have no namespace and are left
// out.
func InMountNamespace(ns string) []int {
	if ns == "" {
		return nil
	}
	return match(func(pid string) bool {
		l, err := os.Readlink("/proc/" + pid + "/ns/mnt")
		return err == nil && l == ns
	})
}

// match lists the processes other than this one for which f returns true,
// given their pid.
func match(f func(pid string) bool) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if f(e.Name()) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// KillAll SIGKILLs what find returns until it returns nothing or wait has
// passed (at least once, also with wait 0), and returns what is still
// there.
func KillAll(find func() []int, wait time.Duration) []int {
	deadline := time.Now().Add(wait)
	for {
		pids := find()
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			return find()
		}
		time.Sleep(20 * time.Millisecond)
	}
}
