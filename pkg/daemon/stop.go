package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/childproc"
	"github.com/sirupsen/logrus"
)

// keptLogLines is how much of dockerd's log LogTail still has after Stop.
const keptLogLines = 200

func (d *Daemon) stop(ctx context.Context) error {
	var errs []error
	if d.cli != nil {
		_ = d.cli.Close()
	}
	// Before SIGTERM: dockerd 23+ waits for requests still open after its
	// shutdown, so let it finish what the put has closed.
	d.settle()
	d.stopChild(ctx, d.dockerd, "dockerd")
	d.stopChild(ctx, d.containerd, "containerd")
	// A killed dockerd leaves shims, and a killed containerd its shims'
	// children: everything still in our namespace or naming our state folder.
	find := func() []int {
		pids := pidsMentioning(d.dir)
		if d.ns != nil {
			for _, p := range pidsInMountNS(d.ns.id) {
				if !slices.Contains(pids, p) {
					pids = append(pids, p)
				}
			}
		}
		return pids
	}
	if left := killAll(find, 5*time.Second); len(left) > 0 {
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

	kept := ""
	if d.logPath != "" {
		kept = childproc.TailFile(d.logPath, keptLogLines)
	}
	d.mu.Lock()
	d.stopped, d.lastLog = true, kept
	d.mu.Unlock()
	if kept != "" && d.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		// What dockerd said, for a person debugging a put: its log goes
		// with the state folder.
		d.log.Debugf("dockerd's log, last %d lines:", keptLogLines)
		for _, l := range strings.Split(kept, "\n") {
			d.log.Debugf("dockerd: %s", l)
		}
	}

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
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stopping dockerd: %w", err)
	}
	return nil
}

// stopChild stops p (SIGTERM, SIGKILL after StopTimeout or when ctx is
// done) and says how long it took.
func (d *Daemon) stopChild(ctx context.Context, p *childproc.Proc, name string) {
	if p == nil {
		return
	}
	grace := d.opts.StopTimeout
	t := time.Now()
	if p.Exited() {
		d.log.Debugf("%s had already exited (%s)", name, p.ExitText())
		return
	}
	if p.Stop(ctx, grace) {
		d.log.Warnf("%s did not stop within %s of SIGTERM (or the stop was cut short) and was killed; its log ends:\n%s",
			name, grace, childproc.TailFile(d.childLog(name), logTailLines))
		return
	}
	d.log.Debugf("%s exited by itself %s after SIGTERM (%s)", name, time.Since(t).Round(time.Millisecond), p.ExitText())
}

func (d *Daemon) childLog(name string) string {
	if name == "containerd" {
		return d.ctrdLogPath
	}
	return d.logPath
}

// inNS runs f on the namespace thread, where the cgroup mounts of a nested
// daemon are; directly when there is no namespace.
func (d *Daemon) inNS(f func() error) error {
	if d.ns == nil {
		return f()
	}
	return d.ns.do(f)
}
