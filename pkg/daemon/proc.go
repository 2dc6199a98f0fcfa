package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is a child whose output goes to a log file.
type process struct {
	name    string
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{}
	waitErr error
	once    sync.Once
}

// startProcess starts path with args, output appended to logPath. It must
// run on the namespace thread: the child inherits the forking thread's mount
// namespace, and Pdeathsig fires when that thread ends.
func startProcess(path string, args []string, logPath string) (*process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening log for %s: %w", path, err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(path, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Own process group: a Ctrl-C meant for us does not hit the daemon
	// before we stop it in order. SIGTERM if we die without stopping it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	p := &process{name: path, cmd: cmd, done: make(chan struct{})}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", path, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitText describes how the process ended, for error messages.
func (p *process) exitText() string {
	if p.waitErr == nil {
		return "exit status 0"
	}
	return p.waitErr.Error()
}

// stop sends SIGTERM and waits up to grace or until ctx is done, then
// SIGKILLs. It reports whether SIGKILL was needed.
func (p *process) stop(ctx context.Context, grace time.Duration) (killed bool) {
	p.once.Do(func() {
		if p.exited() {
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case <-p.done:
			return
		case <-timer.C:
		case <-ctx.Done():
		}
		killed = true
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return killed
}

// tailFile returns the last n lines of a file, for error messages.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return ""
		}
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

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

// killAll SIGKILLs what find returns until it returns nothing or the
// deadline passes, and returns what is still there.
func killAll(find func() []int, wait time.Duration) []int {
	deadline := time.Now().Add(wait)
	for {
		pids := find()
		if len(pids) == 0 || time.Now().After(deadline) {
			return pids
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
