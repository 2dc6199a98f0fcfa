// Package testenv is the shared real test environment for end-to-end tests:
// an in-memory CA, real registries (distribution 2.8), base images built
// without a daemon, a fault-injecting registry proxy and a private dockerd.
// Everything it starts is stopped through t.Cleanup, also when a test fails.
package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/mountinfo"
)

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freePortOn("127.0.0.1")
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return p
}

func freePortOn(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ShortTempDir makes a directory directly under TMPDIR when that is short,
// else under /tmp (unix socket paths must stay under 108 bytes, t.TempDir()
// paths are too deep), and removes it on cleanup.
func ShortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	parent := "/tmp"
	if d := os.TempDir(); len(d) <= 24 {
		parent = d
	}
	dir, err := os.MkdirTemp(parent, prefix+"*")
	if err != nil {
		t.Fatalf("testenv: making a temp dir under %s: %v", parent, err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("testenv: removing %s: %v", dir, err)
		}
	})
	return dir
}

// mountsUnder lists the mount points at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	return mountinfo.Under("/proc/self/mountinfo", dir)
}

// unmountAll lazily unmounts everything under dir.
func unmountAll(dir string) error {
	return mountinfo.UnmountAll("/proc/self/mountinfo", dir)
}

// Pdeathsig fires when the *thread* that forked the child ends, not the
// process. Go ends an OS thread when a goroutine locked to it exits (the
// daemon package does that on Stop), and that thread may be the one that
// started a registry. So every child is started from one thread that is
// locked for good and never ends.
var (
	spawnOnce sync.Once
	spawnReq  chan spawnCall
)

type spawnCall struct {
	cmd  *exec.Cmd
	done chan error
}

func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReq = make(chan spawnCall)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for c := range spawnReq {
				c.done <- c.cmd.Start()
			}
		}()
	})
	c := spawnCall{cmd: cmd, done: make(chan error, 1)}
	spawnReq <- c
	return <-c.done
}
