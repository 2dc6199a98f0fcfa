package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/childproc"
	"github.com/docker/docker/client"
)

// The steps of Start, in order.

// findBinaries finds dockerd (as Options.Binary names it) and containerd.
func findBinaries(dockerd string) (dockerdPath, containerdPath string, err error) {
	if dockerdPath, err = exec.LookPath(dockerd); err != nil {
		return "", "", fmt.Errorf("finding dockerd: %w", err)
	}
	if containerdPath, err = exec.LookPath("containerd"); err != nil {
		return "", "", fmt.Errorf("finding containerd: %w", err)
	}
	return dockerdPath, containerdPath, nil
}

// prepareState makes the data root and the certs.d folder.
func (d *Daemon) prepareState() (err error) {
	if d.data, err = pickDataRoot(d.opts.DataRoot, "/scratch", d.dir); err != nil {
		return err
	}
	if err := writeCerts(d.CertsDir(), d.opts.CACerts, d.opts.ClientCerts); err != nil {
		return fmt.Errorf("writing registry certificates for dockerd: %w", err)
	}
	return nil
}

// isolate makes the private namespace dockerd and containerd will run in
// (see the package doc) and the containers' cgroup parent.
func (d *Daemon) isolate() (err error) {
	cgroupBase := "/"
	getenv := d.opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	wantCgroups := inContainer(getenv)
	d.ns, err = newNamespace(d.opts.PrivateNetwork, func() error {
		if wantCgroups {
			cgroupBase = setupCgroups(d.log)
		}
		return d.privatizeFiles()
	})
	if err != nil {
		return fmt.Errorf("isolating dockerd: %w", err)
	}
	d.cgroupParent = path.Join(cgroupBase, filepath.Base(d.dir))
	return nil
}

// privatizeFiles runs in the namespace: a private /run, the daemon's
// certs.d at /etc/docker/certs.d and its /etc/hosts entries.
func (d *Daemon) privatizeFiles() error {
	stage := filepath.Join(d.dir, "ns")
	if err := privatize("/run", filepath.Join(stage, "run"), privateRunSkip); err != nil {
		return err
	}
	if err := bindCertsDir(d.CertsDir(), stage); err != nil {
		return err
	}
	return bindHosts(d.opts.Hosts, filepath.Join(d.dir, "hosts"))
}

// startContainerd starts our containerd and waits for its socket.
func (d *Daemon) startContainerd(ctx context.Context, binary string, deadline time.Time) error {
	dir := filepath.Join(d.dir, "c")
	if err := os.Mkdir(dir, 0o711); err != nil {
		return fmt.Errorf("making containerd folder: %w", err)
	}
	sock := d.containerdSocket()
	conf := filepath.Join(d.dir, "containerd.toml")
	root := ""
	if d.opts.ContainerdStore {
		// On the containerd store containerd's root holds the images'
		// snapshots: it must be where overlay mounts work, the data
		// root (/scratch), not the state folder in /tmp, which in a
		// container is itself an overlay ("invalid argument" on the
		// first RUN step).
		root = filepath.Join(d.data.path, "containerd")
	}
	if err := os.WriteFile(conf, containerdConfig(dir, root, sock), 0o600); err != nil {
		return fmt.Errorf("writing containerd config: %w", err)
	}
	args := []string{"--config", conf}
	if d.opts.Debug {
		args = append(args, "--log-level", "debug")
	}
	if err := d.run(&d.containerd, binary, args); err != nil {
		return err
	}
	return d.poll(ctx, deadline, &d.containerd, func(context.Context) error {
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func (d *Daemon) containerdSocket() string { return filepath.Join(d.dir, "c.sock") }

// startDockerd writes daemon.json, starts dockerd and waits for its API. A
// dockerd that rejects daemon.json's deprecated-key-path is started again
// without it.
func (d *Daemon) startDockerd(ctx context.Context, binary string, deadline time.Time) (err error) {
	cfgPath := filepath.Join(d.dir, "daemon.json")
	if err := writeDaemonConfig(cfgPath, filepath.Join(d.dir, "key.json"), true, d.opts.ContainerdStore); err != nil {
		return err
	}
	args := d.dockerdArgs(cfgPath)
	if d.seeded {
		args = append(args, "--storage-driver", d.opts.Seed.Driver)
	}
	mode := "default bridge network"
	if d.opts.Isolated {
		mode = "isolated, no bridge"
	}
	d.log.Infof("starting dockerd (data root %s, %s)", d.data.path, mode)
	d.log.Debug(commandLine(binary, args))

	if d.cli, err = client.NewClientWithOpts(client.WithHost(d.host), client.WithAPIVersionNegotiation()); err != nil {
		return fmt.Errorf("making a docker client for %s: %w", d.host, err)
	}
	err = d.runDockerd(ctx, binary, args, deadline)
	if se := (*StartError)(nil); errors.As(err, &se) && d.dockerd.proc.Exited() && rejectsKeyPath(childproc.TailFile(d.dockerd.log, logTailLines)) {
		d.log.Debugf("this dockerd does not know deprecated-key-path; starting it again without")
		if err := writeDaemonConfig(cfgPath, "", false, d.opts.ContainerdStore); err != nil {
			return err
		}
		err = d.runDockerd(ctx, binary, args, deadline)
	}
	if se := (*StartError)(nil); errors.As(err, &se) && d.dockerd.proc.Exited() && d.seeded {
		// The seed's driver was refused: start as without a seed.
		d.log.Infof("load: dockerd did not start with the %s driver the written data root needs; emptying it and starting dockerd as usual", d.opts.Seed.Driver)
		d.log.Debugf("dockerd's last lines: %s", se.LogTail)
		d.seeded = false
		d.clearDataRoot()
		err = d.runDockerd(ctx, binary, args[:len(args)-2], deadline)
	}
	if err != nil {
		return err
	}
	d.elapsed = time.Since(d.dockerd.proc.Started)
	return nil
}

// runDockerd starts dockerd and waits for its API.
func (d *Daemon) runDockerd(ctx context.Context, binary string, args []string, deadline time.Time) error {
	if err := d.run(&d.dockerd, binary, args); err != nil {
		return err
	}
	return d.poll(ctx, deadline, &d.dockerd, func(ctx context.Context) error {
		_, err := d.cli.Ping(ctx)
		return err
	})
}

// run starts c in the namespace: a child inherits the mount namespace of
// the thread that forks it.
func (d *Daemon) run(c *child, binary string, args []string) error {
	return d.ns.do(func() (err error) {
		c.proc, err = childproc.Start(binary, args, c.log, childproc.Options{})
		return err
	})
}

// poll runs check every pollInterval until it succeeds, c exits, ctx is
// done or the deadline passes.
func (d *Daemon) poll(ctx context.Context, deadline time.Time, c *child, check func(context.Context) error) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		cctx, cancel := context.WithDeadline(ctx, deadline)
		err := check(cctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-c.proc.Done():
			return &StartError{
				Reason:  fmt.Sprintf("%s exited during start-up (%s)", c.name, c.proc.ExitText()),
				LogName: c.name, LogTail: childproc.TailFile(c.log, logTailLines),
			}
		case <-ctx.Done():
			return fmt.Errorf("starting dockerd: %w", ctx.Err())
		case <-timer.C:
			return &StartError{
				Reason: fmt.Sprintf("Docker failed to start within %s seconds. Consider increasing 'startup_timeout' in source configuration.",
					strconv.FormatFloat(d.opts.StartupTimeout.Seconds(), 'f', -1, 64)),
				LogName: c.name, LogTail: childproc.TailFile(c.log, logTailLines),
			}
		case <-tick.C:
		}
	}
}

// describe asks the new dockerd for its version and storage driver and
// says how the start went.
func (d *Daemon) describe(ctx context.Context, t0 time.Time) error {
	ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	info, err := d.cli.Info(ictx)
	if err != nil {
		return fmt.Errorf("asking the new dockerd for its info: %w", err)
	}
	d.driver, d.version = info.Driver, info.ServerVersion
	store := ""
	for _, kv := range info.DriverStatus {
		if kv[0] == "driver-type" && kv[1] == containerdSnapshotter {
			d.containerdStore, store = true, ", containerd image store"
		}
	}
	d.log.Infof("dockerd %s ready in %s (%s since start), storage driver %s%s",
		d.version, d.elapsed.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond), d.driver, store)
	if d.driver == "vfs" {
		d.log.Warnf("!!! dockerd uses the vfs storage driver: every layer is a full copy, so builds are slow and need several times the disk. "+
			"The data root %s is on a filesystem overlay2 cannot use (a container's own overlay root); give the resource a /scratch volume on the worker's disk. !!!", d.data.path)
	}
	return nil
}

// containerdSnapshotter is the driver-type dockerd's info reports on the
// containerd image store.
const containerdSnapshotter = "io.containerd.snapshotter.v1"

// ContainerdStore reports whether dockerd runs the containerd image store:
// asked for with Options.ContainerdStore and supported (Docker 24 and
// later; 20.10 ignores the feature).
func (d *Daemon) ContainerdStore() bool { return d.containerdStore }
