package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/childproc"
	"github.com/docker/docker/client"
	"github.com/sirupsen/logrus"
)

// Defaults of Options.
const (
	DefaultStartupTimeout = 120 * time.Second
	DefaultStopTimeout    = 10 * time.Second
)

// pollInterval is how often Start asks whether the API is up.
const pollInterval = 20 * time.Millisecond

// logTailLines is how much of a log an error shows.
const logTailLines = 40

// Options configures Start. The zero value starts a production daemon.
type Options struct {
	// Dir is the folder in which the daemon's state folder is made; default
	// the temp folder. It must be short: sockets live below it.
	Dir string
	// DataRoot overrides the data root; it is kept on Stop. Default:
	// /scratch/docker when /scratch exists (kept), else a folder in the
	// state folder (removed).
	DataRoot string
	// StartupTimeout bounds the whole start (containerd, dockerd) until the
	// API answers; default 120 s (the old resource's startup_timeout).
	StartupTimeout time.Duration
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL;
	// default 10 s.
	StopTimeout time.Duration

	MaxConcurrentDownloads int // --max-concurrent-downloads when > 0
	MaxConcurrentUploads   int // --max-concurrent-uploads when > 0
	InsecureRegistries     []string
	RegistryMirror         string
	CACerts                []CA
	ClientCerts            []ClientCert

	// Isolated leaves the network namespace alone (no bridge, no iptables);
	// containers then have no network. For tests on a host; see the package
	// doc.
	Isolated bool
	// Log receives progress and warnings; nil discards them.
	Log *logrus.Entry
	// Binary is the dockerd to run; default "dockerd" from PATH.
	Binary string

	// PrivateNetwork runs dockerd and containerd in a throwaway network
	// namespace of their own (only a loopback, down), which goes away with
	// them: production networking (bridge, iptables, user-defined networks)
	// can run on a host without leaving a bridge or rules behind. Containers
	// then reach one another but nothing outside. For tests on a host.
	PrivateNetwork bool

	// Hosts are extra name → IP entries for dockerd's /etc/hosts, a private
	// copy in its mount namespace (the host's file is never touched). For
	// tests: a registry on loopback can then answer to a public name, such
	// as an ECR host, in the daemon's pulls and pushes.
	Hosts map[string]string
}

// StartError is returned when dockerd (or its containerd) did not come up.
type StartError struct {
	Reason  string // e.g. the old resource's startup timeout message
	LogName string // "dockerd" or "containerd"
	LogTail string // the last lines of that log
}

func (e *StartError) Error() string {
	if e.LogTail == "" {
		return e.Reason
	}
	return fmt.Sprintf("%s\nlast lines of the %s log:\n%s", e.Reason, e.LogName, e.LogTail)
}

// Daemon is a running private dockerd.
type Daemon struct {
	log          *logrus.Entry
	opts         Options
	dir          string // state folder
	data         dataRoot
	host         string
	cgroupParent string
	ns           *namespace
	containerd   *childproc.Proc
	dockerd      *childproc.Proc
	cli          *client.Client
	driver       string
	version      string
	elapsed      time.Duration
	logPath      string
	ctrdLogPath  string

	stopOnce sync.Once
	stopErr  error
	mu       sync.Mutex
	stopped  bool
	lastLog  string // dockerd's log tail, kept when Stop removes the file
}

// Start starts a private dockerd and waits until its API answers. ctx
// bounds only the start; when it fails or ctx is cancelled, everything
// started so far is stopped and removed before Start returns.
func Start(ctx context.Context, o Options) (d *Daemon, err error) {
	t0 := time.Now()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("starting dockerd: %w", err)
	}
	if o.StartupTimeout <= 0 {
		o.StartupTimeout = DefaultStartupTimeout
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	if o.Binary == "" {
		o.Binary = "dockerd"
	}
	log := o.Log
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	binary, err := exec.LookPath(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("finding dockerd: %w", err)
	}
	ctrdBinary, err := exec.LookPath("containerd")
	if err != nil {
		return nil, fmt.Errorf("finding containerd: %w", err)
	}
	deadline := t0.Add(o.StartupTimeout)

	d = &Daemon{log: log, opts: o}
	if d.dir, err = makeStateDir(o.Dir); err != nil {
		return nil, err
	}
	defer func() {
		if err == nil {
			return
		}
		// The caller's context may be the cancelled one: clean up with a
		// fresh one.
		cctx, cancel := context.WithTimeout(context.Background(), o.StopTimeout+30*time.Second)
		defer cancel()
		if serr := d.Stop(cctx); serr != nil {
			log.Warnf("cleaning up after the failed dockerd start: %v", serr)
		}
		d = nil
	}()
	d.logPath = filepath.Join(d.dir, "dockerd.log")
	d.ctrdLogPath = filepath.Join(d.dir, "containerd.log")
	sock := filepath.Join(d.dir, "d.sock")
	d.host = "unix://" + sock

	if o.DataRoot != "" {
		d.data = dataRoot{path: o.DataRoot}
		if err := os.MkdirAll(o.DataRoot, 0o711); err != nil {
			return d, fmt.Errorf("making data root %s: %w", o.DataRoot, err)
		}
	} else if d.data, err = chooseDataRoot("/scratch", d.dir); err != nil {
		return d, err
	}
	certs := filepath.Join(d.dir, "certs.d")
	if err := writeCerts(certs, o.CACerts, o.ClientCerts); err != nil {
		return d, fmt.Errorf("writing registry certificates for dockerd: %w", err)
	}

	cgroupBase := "/"
	wantCgroups := inContainer(os.Getenv)
	d.ns, err = newNamespace(o.PrivateNetwork, func() error {
		if wantCgroups {
			cgroupBase = setupCgroups(log)
		}
		stage := filepath.Join(d.dir, "ns")
		if err := privatize("/run", filepath.Join(stage, "run"), privateRunSkip); err != nil {
			return err
		}
		if err := bindCertsDir(certs, stage); err != nil {
			return err
		}
		return bindHosts(o.Hosts, filepath.Join(d.dir, "hosts"))
	})
	if err != nil {
		return d, fmt.Errorf("isolating dockerd: %w", err)
	}
	d.cgroupParent = path.Join(cgroupBase, filepath.Base(d.dir))

	if err := d.startContainerd(ctx, ctrdBinary, deadline); err != nil {
		return d, err
	}

	cfgPath := filepath.Join(d.dir, "daemon.json")
	if err := writeDaemonConfig(cfgPath, filepath.Join(d.dir, "key.json"), true); err != nil {
		return d, err
	}

	mtu := 0
	if iface, m, err := defaultRouteMTU("/proc/net/route", "/sys/class/net"); err != nil {
		log.Debugf("no --mtu for dockerd: %v", err)
	} else {
		mtu = m
		log.Debugf("default route via %s, MTU %d", iface, m)
	}
	args := []string{
		"--config-file", cfgPath,
		"--data-root", d.data.path,
		"--exec-root", filepath.Join(d.dir, "x"),
		"--pidfile", filepath.Join(d.dir, "d.pid"),
		"--host", d.host,
		"--containerd", filepath.Join(d.dir, "c.sock"),
		// cgroupfs puts containers under our parent on every system, so
		// Stop finds what is left of them.
		"--exec-opt", "native.cgroupdriver=cgroupfs",
		"--cgroup-parent", d.cgroupParent,
		// Containers still running at Stop are garbage; do not wait long.
		"--shutdown-timeout", "5",
	}
	args = append(args, flagArgs(o, mtu)...)
	mode := "default bridge network"
	if o.Isolated {
		mode = "isolated, no bridge"
	}
	log.Infof("starting dockerd (data root %s, %s)", d.data.path, mode)
	log.Debug(commandLine(binary, args))

	d.cli, err = client.NewClientWithOpts(client.WithHost(d.host), client.WithAPIVersionNegotiation())
	if err != nil {
		return d, fmt.Errorf("making a docker client for %s: %w", d.host, err)
	}
	err = d.startDockerd(ctx, binary, args, deadline)
	if se := (*StartError)(nil); errors.As(err, &se) && d.dockerd.Exited() && rejectsKeyPath(childproc.TailFile(d.logPath, logTailLines)) {
		log.Debugf("this dockerd does not know deprecated-key-path; starting it again without")
		if err := writeDaemonConfig(cfgPath, "", false); err != nil {
			return d, err
		}
		err = d.startDockerd(ctx, binary, args, deadline)
	}
	if err != nil {
		return d, err
	}
	d.elapsed = time.Since(d.dockerd.Started)

	ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	info, err := d.cli.Info(ictx)
	if err != nil {
		return d, fmt.Errorf("asking the new dockerd for its info: %w", err)
	}
	d.driver, d.version = info.Driver, info.ServerVersion
	log.Infof("dockerd %s ready in %s (%s since start), storage driver %s",
		d.version, d.elapsed.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond), d.driver)
	if d.driver == "vfs" {
		log.Warnf("!!! dockerd uses the vfs storage driver: every layer is a full copy, so builds are slow and need several times the disk. "+
			"The data root %s is on a filesystem overlay2 cannot use (a container's own overlay root); give the resource a /scratch volume on the worker's disk. !!!", d.data.path)
	}
	return d, nil
}

func writeDaemonConfig(path, keyPath string, withKeyPath bool) error {
	cfg, err := daemonConfig(keyPath, withKeyPath)
	if err != nil {
		return fmt.Errorf("encoding daemon.json: %w", err)
	}
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		return fmt.Errorf("writing daemon.json: %w", err)
	}
	return nil
}

// startDockerd starts dockerd in the namespace and waits for its API.
func (d *Daemon) startDockerd(ctx context.Context, binary string, args []string, deadline time.Time) error {
	if err := d.ns.do(func() (err error) {
		d.dockerd, err = childproc.Start(binary, args, d.logPath, childproc.Options{})
		return err
	}); err != nil {
		return err
	}
	return d.waitReady(ctx, deadline)
}

// startContainerd starts our containerd and waits for its socket.
func (d *Daemon) startContainerd(ctx context.Context, binary string, deadline time.Time) error {
	dir := filepath.Join(d.dir, "c")
	if err := os.Mkdir(dir, 0o711); err != nil {
		return fmt.Errorf("making containerd folder: %w", err)
	}
	sock := filepath.Join(d.dir, "c.sock")
	conf := filepath.Join(d.dir, "containerd.toml")
	if err := os.WriteFile(conf, containerdConfig(dir, sock), 0o600); err != nil {
		return fmt.Errorf("writing containerd config: %w", err)
	}
	if err := d.ns.do(func() (err error) {
		d.containerd, err = childproc.Start(binary, []string{"--config", conf}, d.ctrdLogPath, childproc.Options{})
		return err
	}); err != nil {
		return err
	}
	return d.poll(ctx, deadline, d.containerd, "containerd", d.ctrdLogPath, func(context.Context) error {
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// waitReady polls the API until it answers.
func (d *Daemon) waitReady(ctx context.Context, deadline time.Time) error {
	return d.poll(ctx, deadline, d.dockerd, "dockerd", d.logPath, func(ctx context.Context) error {
		_, err := d.cli.Ping(ctx)
		return err
	})
}

// poll runs check every pollInterval until it succeeds, p exits, ctx is
// done or the deadline passes.
func (d *Daemon) poll(ctx context.Context, deadline time.Time, p *childproc.Proc, name, logPath string, check func(context.Context) error) error {
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
		case <-p.Done():
			return &StartError{
				Reason:  fmt.Sprintf("%s exited during start-up (%s)", name, p.ExitText()),
				LogName: name, LogTail: childproc.TailFile(logPath, logTailLines),
			}
		case <-ctx.Done():
			return fmt.Errorf("starting dockerd: %w", ctx.Err())
		case <-timer.C:
			return &StartError{
				Reason: fmt.Sprintf("Docker failed to start within %s seconds. Consider increasing 'startup_timeout' in source configuration.",
					strconv.FormatFloat(d.opts.StartupTimeout.Seconds(), 'f', -1, 64)),
				LogName: name, LogTail: childproc.TailFile(logPath, logTailLines),
			}
		case <-tick.C:
		}
	}
}

// Client is a docker client for this daemon (API version negotiated). Stop
// closes it.
func (d *Daemon) Client() *client.Client { return d.cli }

// Host is the daemon's address, "unix:///tmp/dkd-123/d.sock".
func (d *Daemon) Host() string { return d.host }

// StorageDriver is the daemon's storage driver, e.g. "overlay2".
func (d *Daemon) StorageDriver() string { return d.driver }

// Version is the daemon's version, e.g. "20.10.24+dfsg1".
func (d *Daemon) Version() string { return d.version }

// DataRoot is the daemon's data root.
func (d *Daemon) DataRoot() string { return d.data.path }

// CertsDir is the certs.d folder dockerd reads registry CAs and client
// certificates from: <domain>/ca.crt, <domain>/*.cert + *.key.
func (d *Daemon) CertsDir() string { return filepath.Join(d.dir, "certs.d") }

// Elapsed is the time from exec of dockerd to its API's first answer.
func (d *Daemon) Elapsed() time.Duration { return d.elapsed }

// LogTail returns the last n lines of dockerd's log; after Stop, of the
// last lines kept when the log was removed.
func (d *Daemon) LogTail(n int) string {
	d.mu.Lock()
	stopped, kept := d.stopped, d.lastLog
	d.mu.Unlock()
	if !stopped {
		return childproc.TailFile(d.logPath, n)
	}
	lines := strings.Split(kept, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Stop stops dockerd and containerd (SIGTERM, SIGKILL after StopTimeout or
// when ctx is done), kills whatever is left of them and their containers,
// and removes the state folder (and a data root made for this daemon).
// Cleanup always runs, whatever ctx says; Stop is idempotent and safe from
// a defer.
func (d *Daemon) Stop(ctx context.Context) error {
	d.stopOnce.Do(func() { d.stopErr = d.stop(ctx) })
	return d.stopErr
}
