package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/childproc"
)

// keptLogLines is how much of dockerd's log LogTail still has after Stop.
const keptLogLines = 200

func (d *Daemon) stop(ctx context.Context) error {
	var errs []error
	if d.cli != nil {
		_ = d.cli.Close()
	}
	// Containers are garbage by now; killing them first spares dockerd's
	// shutdown their stop timeouts.
	if d.cgroupParent != "" {
		_ = d.inNS(func() error {
			killAll(func() []int { return cgroupPids(cgroupMount, d.cgroupParent) }, 2*time.Second)
			return nil
		})
	}
	grace := d.opts.StopTimeout
	if d.dockerd != nil && d.dockerd.Stop(ctx, grace) {
		d.log.Warnf("dockerd did not stop within %s of SIGTERM (or the stop was cut short) and was killed", grace)
	}
	if d.containerd != nil && d.containerd.Stop(ctx, grace) {
		d.log.Warnf("containerd did not stop within %s of SIGTERM (or the stop was cut short) and was killed", grace)
	}
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

// inNS runs f on the namespace thread, where the cgroup mounts of a nested
// daemon are; directly when there is no namespace.
func (d *Daemon) inNS(f func() error) error {
	if d.ns == nil {
		return f()
	}
	return d.ns.do(f)
}
