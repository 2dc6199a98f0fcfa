package daemon

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"
)

// procMatch lists the processes (other than this one) for which match
// returns true, given their pid.
func procMatch(match func(pid string) bool) []int {
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
		if match(e.Name()) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pidsInMountNS lists the processes whose mount namespace is ns
// ("mnt:[4026532]"). Zombies have no namespace and are left out.
func pidsInMountNS(ns string) []int {
	if ns == "" {
		return nil
	}
	return procMatch(func(pid string) bool {
		l, err := os.Readlink("/proc/" + pid + "/ns/mnt")
		return err == nil && l == ns
	})
}

// pidsMentioning lists processes whose command line contains s (a unique
// state path): a fallback for strays outside the namespace.
func pidsMentioning(s string) []int {
	if s == "" {
		return nil
	}
	return procMatch(func(pid string) bool {
		b, err := os.ReadFile("/proc/" + pid + "/cmdline")
		return err == nil && bytes.Contains(b, []byte(s))
	})
}

// killAll SIGKILLs what find returns until it returns nothing or wait
// has passed (at least once, also with wait 0), and returns what is still
// there.
func killAll(find func() []int, wait time.Duration) []int {
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
