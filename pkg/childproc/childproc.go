// Package childproc runs helper daemons — dockerd, containerd, a test
// registry — as children that log to a file, live in their own process group
// and get a signal when their parent goes away, and finds and kills what a
// killed child left behind. The put's daemon (pkg/daemon) and the test
// environment (test/testenv) start their processes through it.
package childproc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options adjust how a child starts.
type Options struct {
	// DeathSignal is sent to the child when the thread that forked it ends
	// (Pdeathsig); default SIGTERM.
	DeathSignal syscall.Signal
	// Unshare holds CLONE_NEW* flags for the child.
	Unshare uintptr
	// Start starts the command; default (*exec.Cmd).Start. A caller that
	// wants the death signal tied to a thread of its choice starts the
	// command on that thread.
	Start func(*exec.Cmd) error
}

// Proc is a started child.
type Proc struct {
	Name    string
	Started time.Time
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	once    sync.Once
}

// Start starts path with args, stdout and stderr appended to logPath.
func Start(path string, args []string, logPath string, o Options) (*Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening log for %s: %w", path, err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(path, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	sig := o.DeathSignal
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	// Own process group: a Ctrl-C meant for the parent does not hit the
	// child before the parent stops it in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: sig, Unshareflags: o.Unshare}
	start := o.Start
	if start == nil {
		start = (*exec.Cmd).Start
	}
	p := &Proc{Name: path, cmd: cmd, done: make(chan struct{}), Started: time.Now()}
	if err := start(cmd); err != nil {
		return nil, fmt.Errorf("starting %s: %w", path, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the child's process ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the child has ended.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the child has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is how the child ended (nil for exit status 0); only meaningful once
// Exited.
func (p *Proc) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.waitErr
}

// ExitText describes how the child ended, for error messages.
func (p *Proc) ExitText() string {
	if err := p.Err(); err != nil {
		return err.Error()
	}
	return "exit status 0"
}

// Stop sends SIGTERM and waits up to grace or until ctx is done, then
// SIGKILLs. It reports whether SIGKILL was needed. Later calls do nothing.
func (p *Proc) Stop(ctx context.Context, grace time.Duration) (killed bool) {
	p.once.Do(func() {
		if p.Exited() {
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

// TailFile returns the last n lines of a log file ("" when it does not
// exist), for error messages.
func TailFile(path string, n int) string {
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
