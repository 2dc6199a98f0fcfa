package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/childproc"
	"github.com/sirupsen/logrus"
)

// keptLogLines is how much of dockerd's log LogTail still has after Stop.
const keptLogLines = 200

func (d *Daemon) stop(ctx context.Context) error {
	if d.cli != nil {
		_ = d.cli.Close()
	}
	// Before SIGTERM: dockerd 23+ waits for requests still open after its
	// shutdown, so let it finish what the put has closed.
	d.settle()
	d.stopChild(ctx, &d.dockerd)
	d.stopChild(ctx, &d.containerd)
	errs := d.reap()
	d.keepLogs()
	errs = append(errs, d.removeState()...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stopping dockerd: %w", err)
	}
	return nil
}

// Reap removes what a daemon left whose starting process died without
// Stop (a test binary killed at its timeout; its dockerd and containerd
// got SIGTERM, their shims and containers did not): the processes that
// name stateDir, the containers and their cgroups, mounts below stateDir
// and the folder itself. Only for a daemon started on a host, whose
// containers' cgroups are under /<state folder name>: a daemon in the
// resource container goes with its container.
func Reap(stateDir string) error {
	// Everything naming the folder dies and the folder goes: only ever one
	// that makeStateDir made.
	if !strings.HasPrefix(filepath.Base(stateDir), stateDirPrefix) || !filepath.IsAbs(stateDir) {
		return fmt.Errorf("%q is not the state folder of a daemon (want an absolute path to a %s* folder)", stateDir, stateDirPrefix)
	}
	d := &Daemon{dir: stateDir, cgroupParent: "/" + filepath.Base(stateDir)}
	if err := errors.Join(append(d.reap(), d.removeState()...)...); err != nil {
		return fmt.Errorf("removing what dockerd left in %s: %w", stateDir, err)
	}
	return nil
}

// reap kills whatever is left of the daemon's processes and containers
// once dockerd and containerd are gone, removes the containers' cgroups
// and what is mounted below the state folder and data root.
func (d *Daemon) reap() []error {
	var errs []error
	if left := childproc.KillAll(d.leftovers, 5*time.Second); len(left) > 0 {
		errs = append(errs, fmt.Errorf("processes of the daemon still running after SIGKILL: %v", left))
	}
	if d.cgroupParent != "" {
		if err := d.inNS(func() error { return removeCgroups(cgroupMount, d.cgroupParent) }); err != nil {
			errs = append(errs, err)
		}
	}
	if d.ns != nil {
		// With nothing left in the namespace its mounts vanish when the
		// thread ends; unmounting first also covers a straggler.
		_ = d.ns.do(func() error {
			return errors.Join(unmountAll(d.dir), unmountAll(d.data.path))
		})
		d.ns.close()
	}
	for _, dir := range []string{d.dir, d.data.path} {
		if err := unmountAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// leftovers lists what a killed dockerd leaves (shims) and a killed
// containerd (its shims' children): everything still in our namespace or
// naming our state folder.
func (d *Daemon) leftovers() []int {
	pids := childproc.Mentioning(d.dir)
	if d.ns != nil {
		for _, p := range childproc.InMountNamespace(d.ns.id) {
			if !slices.Contains(pids, p) {
				pids = append(pids, p)
			}
		}
	}
	return pids
}

// keepLogs keeps the last lines of the children's logs for LogTail, since
// the logs go with the state folder, and shows dockerd's to a person
// debugging a put.
func (d *Daemon) keepLogs() {
	d.mu.Lock()
	d.stopped = true
	for _, c := range []*child{&d.dockerd, &d.containerd} {
		if c.log != "" {
			c.kept = childproc.TailFile(c.log, keptLogLines)
		}
	}
	children := []child{d.dockerd, d.containerd}
	d.mu.Unlock()
	if !d.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		return
	}
	// containerd's too: on the containerd image store BuildKit's steps
	// run through it, and its log says why one could not start.
	for _, c := range children {
		if c.kept == "" {
			continue
		}
		d.log.Debugf("%s's log, last %d lines:", c.name, keptLogLines)
		for _, l := range strings.Split(c.kept, "\n") {
			d.log.Debugf("%s: %s", c.name, l)
		}
	}
}

// removeState removes the state folder, and the data root when it was made
// for this daemon, and releases a shared data root.
func (d *Daemon) removeState() []error {
	var errs []error
	if d.data.owned {
		if err := os.RemoveAll(d.data.path); err != nil {
			errs = append(errs, fmt.Errorf("removing data root: %w", err))
		}
	}
	if d.data.lock != nil {
		d.data.lock.Close() // releases the flock
	}
	if d.dir != "" {
		if err := os.RemoveAll(d.dir); err != nil {
			errs = append(errs, fmt.Errorf("removing the daemon's state folder: %w", err))
		}
	}
	return errs
}

// stopChild stops c (SIGTERM, SIGKILL after StopTimeout or when ctx is
// done) and says how long it took.
func (d *Daemon) stopChild(ctx context.Context, c *child) {
	p := c.proc
	if p == nil {
		return
	}
	grace := d.opts.StopTimeout
	t := time.Now()
	if p.Exited() {
		d.log.Debugf("%s had already exited (%s)", c.name, p.ExitText())
		return
	}
	if p.Stop(ctx, grace) {
		d.log.Warnf("%s did not stop within %s of SIGTERM (or the stop was cut short) and was killed; its log ends:\n%s",
			c.name, grace, childproc.TailFile(c.log, logTailLines))
		return
	}
	d.log.Debugf("%s exited by itself %s after SIGTERM (%s)", c.name, time.Since(t).Round(time.Millisecond), p.ExitText())
}

// inNS runs f on the namespace thread, where the cgroup mounts of a nested
// daemon are; directly when there is no namespace.
func (d *Daemon) inNS(f func() error) error {
	if d.ns == nil {
		return f()
	}
	return d.ns.do(f)
}
