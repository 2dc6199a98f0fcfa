package daemon

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/certs"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"

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
	CACerts                []certs.CA
	ClientCerts            []certs.ClientCert

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

	// Seed, when set, fills a fresh data root before dockerd starts (see
	// Seed); nil starts dockerd on the data root as it is.
	Seed *Seed

	// Debug runs dockerd and containerd at debug level: their log tails,
	// which Stop shows at debug level, then say why a step failed.
	Debug bool

	// ContainerdStore starts dockerd on the containerd image store (see
	// daemonConfig) instead of the classic one. Not with Seed, which
	// writes the classic layer store.
	ContainerdStore bool

	// Getenv reads the process environment (InContainerEnv); nil:
	// os.Getenv. pkg/resource passes its Env's, so in-process tests can
	// set it.
	Getenv func(string) string
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
	containerd   child
	dockerd      child
	cli          *client.Client
	driver       string
	version      string
	// containerdStore: dockerd runs the containerd image store.
	containerdStore bool
	elapsed         time.Duration
	seeded          bool
	seedTook        time.Duration

	stopOnce sync.Once
	stopErr  error
	mu       sync.Mutex // guards stopped and the children's kept logs
	stopped  bool
}

// child is dockerd or containerd.
type child struct {
	name string // "dockerd" or "containerd"
	log  string // its log file, in the state folder
	kept string // the log's last lines, kept when Stop removes the file
	proc *childproc.Proc
}

// Start starts a private dockerd and waits until its API answers. ctx
// bounds only the start; when it fails or ctx is cancelled, everything
// started so far is stopped and removed before Start returns.
func Start(ctx context.Context, o Options) (d *Daemon, err error) {
	t0 := time.Now()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("starting dockerd: %w", err)
	}
	o = o.withDefaults()
	if o.ContainerdStore && o.Seed != nil {
		return nil, errors.New("starting dockerd: a seed writes the classic layer store, which a dockerd on the containerd image store does not read")
	}
	dockerdBin, containerdBin, err := findBinaries(o.Binary)
	if err != nil {
		return nil, err
	}
	dir, err := makeStateDir(o.Dir)
	if err != nil {
		return nil, err
	}
	d = newDaemon(o, dir)
	defer func() {
		if err != nil {
			d.abandon()
			d = nil
		}
	}()
	deadline := t0.Add(o.StartupTimeout)
	if err := d.prepareState(); err != nil {
		return d, err
	}
	// The seed is written while containerd starts; a failed start waits
	// for it too, so nothing writes into the data root after Start.
	waitSeed := d.startSeed(ctx)
	defer waitSeed()
	if err := d.isolate(); err != nil {
		return d, err
	}
	if err := d.startContainerd(ctx, containerdBin, deadline); err != nil {
		return d, err
	}
	d.seeded = waitSeed()
	if err := d.startDockerd(ctx, dockerdBin, deadline); err != nil {
		return d, err
	}
	return d, d.describe(ctx, t0)
}

func (o Options) withDefaults() Options {
	if o.StartupTimeout <= 0 {
		o.StartupTimeout = DefaultStartupTimeout
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = DefaultStopTimeout
	}
	if o.Binary == "" {
		o.Binary = "dockerd"
	}
	o.Log = logging.OrDiscard(o.Log)
	return o
}

func newDaemon(o Options, dir string) *Daemon {
	return &Daemon{
		log:        o.Log,
		opts:       o,
		dir:        dir,
		host:       "unix://" + filepath.Join(dir, "d.sock"),
		dockerd:    child{name: "dockerd", log: filepath.Join(dir, "dockerd.log")},
		containerd: child{name: "containerd", log: filepath.Join(dir, "containerd.log")},
	}
}

// abandon stops and removes what a failed start made, with a fresh
// context: the caller's may be the cancelled one.
func (d *Daemon) abandon() {
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.StopTimeout+30*time.Second)
	defer cancel()
	if err := d.Stop(ctx); err != nil {
		d.log.Warnf("cleaning up after the failed dockerd start: %v", err)
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

// Pid is dockerd's process ID.
func (d *Daemon) Pid() int { return d.dockerd.proc.Pid() }

// LogTail returns the last n lines of dockerd's log; after Stop, of the
// last lines kept when the log was removed.
func (d *Daemon) LogTail(n int) string { return d.tail(&d.dockerd, n) }

// ContainerdLogTail is LogTail for containerd's log.
func (d *Daemon) ContainerdLogTail(n int) string { return d.tail(&d.containerd, n) }

func (d *Daemon) tail(c *child, n int) string {
	d.mu.Lock()
	stopped, kept := d.stopped, c.kept
	d.mu.Unlock()
	if !stopped {
		return childproc.TailFile(c.log, n)
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
