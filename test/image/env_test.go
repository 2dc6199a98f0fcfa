package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/sirupsen/logrus"
)

const (
	imageTag     = "docker-image-resource:e2e"
	imageVersion = "e2e" // fixed, so the cached image survives commits
	registryTag  = "e2e/registry:2"
	netName      = "e2e"
)

// testLog sends logrus output to t.Log, line by line, until the test ends.
func testLog(t testing.TB, prefix string) *logrus.Entry {
	w := &tWriter{t: t, prefix: prefix}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	l := logrus.New()
	l.SetOutput(w)
	l.SetFormatter(&logrus.TextFormatter{DisableColors: true, FullTimestamp: true, TimestampFormat: "15:04:05.000"})
	return logrus.NewEntry(l)
}

type tWriter struct {
	t      testing.TB
	prefix string
	mu     sync.Mutex
	done   bool
}

func (w *tWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(w.prefix + strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}

// builtImage returns a docker-save tarball of the resource's image built
// from local bases: from the cache when the inputs did not change,
// otherwise built in an isolated private dockerd (host networking for the
// RUN steps, which need the apt mirror and the Go module proxy).
func builtImage(t testing.TB, ctx context.Context, repo string) string {
	log := testLog(t, "build: ")
	t0 := time.Now()
	mb, err := Minbase(ctx, MinbaseOptions{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("minbase ready in %s", time.Since(t0).Round(time.Second))
	in, err := DefaultBuilderInputs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ImageKey(ctx, repo, mb, in, imageVersion)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(DefaultCacheDir, "image-"+key[:16]+".tar")
	if _, err := os.Stat(out); err == nil {
		t.Logf("image: cached %s (inputs unchanged)", out)
		return out
	}
	names := BaseNames{}
	if names.Builder, names.Runtime, err = DockerfileBases(filepath.Join(repo, "Dockerfile")); err != nil {
		t.Fatal(err)
	}

	unlock := testenv.LockDockerd(t)
	defer unlock()
	d, err := daemon.Start(ctx, daemon.Options{Isolated: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.Stop(context.WithoutCancel(ctx)); err != nil {
			t.Errorf("stopping the build daemon: %v", err)
		}
	}()
	t1 := time.Now()
	if err := ImportBases(ctx, d.Client(), mb, in, names, log); err != nil {
		t.Fatal(err)
	}
	t.Logf("local bases %s and %s ready in %s", names.Runtime, names.Builder, time.Since(t1).Round(time.Second))
	t2 := time.Now()
	// The Dockerfile's own defaults name the local bases: no build args.
	if _, err := Build(ctx, d.Client(), BuildOptions{Repo: repo, Tag: imageTag, Version: imageVersion, NetworkMode: "host"}, log); err != nil {
		t.Fatal(err)
	}
	t.Logf("image built in %s", time.Since(t2).Round(time.Second))
	if err := Save(ctx, d.Client(), imageTag, out); err != nil {
		t.Fatal(err)
	}
	removeOthers(DefaultCacheDir, "image-*.tar", out)
	t.Logf("image saved to %s; build total %s", out, time.Since(t0).Round(time.Second))
	return out
}

// env is a private dockerd run the way a Concourse worker runs containers,
// with the resource's image loaded and a user-defined network. The daemon
// lives in a throwaway network namespace: its bridges and iptables rules go
// with it, and its containers reach nothing outside.
type env struct {
	t     testing.TB
	ctx   context.Context
	d     *daemon.Daemon
	cli   *client.Client
	image string
}

func startEnv(t testing.TB, ctx context.Context, imageTar string) *env {
	log := testLog(t, "outer dockerd: ")
	d, err := daemon.Start(ctx, daemon.Options{PrivateNetwork: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(context.Background()); err != nil {
			t.Errorf("stopping the outer dockerd: %v", err)
		}
	})
	e := &env{t: t, ctx: ctx, d: d, cli: d.Client()}
	t0 := time.Now()
	res, err := engine.Load(ctx, e.cli, imageTar, log)
	if err != nil || len(res.Images) != 1 {
		t.Fatalf("loading the image: %v (%d images)", err, len(res.Images))
	}
	e.image = res.Images[0].ID
	t.Logf("image %s loaded into dockerd %s in %s", logging.ShortID(e.image), d.Version(), time.Since(t0).Round(100*time.Millisecond))
	if _, err := e.cli.NetworkCreate(ctx, netName, network.CreateOptions{Driver: "bridge"}); err != nil {
		t.Fatalf("creating network %s: %v", netName, err)
	}
	e.loadRegistryImage()
	if m := missingCaps(t); len(m) > 0 {
		t.Logf("this machine's capability bounding set lacks %v: resource containers get everything privileged gives but those", m)
	}
	return e
}

// loadRegistryImage makes a minimal image of the host's registry binary
// (dynamically linked: it gets the libraries ldd names).
func (e *env) loadRegistryImage() {
	t := e.t
	out, err := exec.Command("ldd", testenv.RegistryBinary).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", testenv.RegistryBinary, err)
	}
	paths := []string{testenv.RegistryBinary}
	for _, m := range regexp.MustCompile(`(?m)(/\S+) \(0x`).FindAllStringSubmatch(string(out), -1) {
		paths = append(paths, m[1])
	}
	var files []testenv.File
	dirs := map[string]bool{}
	for _, p := range paths {
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(real)
		if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(p, "/")
		for d := filepath.Dir(rel); d != "."; d = filepath.Dir(d) {
			if !dirs[d] {
				dirs[d] = true
				files = append(files, testenv.File{Name: d + "/", Type: tar.TypeDir})
			}
		}
		files = append(files, testenv.File{Name: rel, Mode: 0o755, Content: b})
	}
	files = append(files, testenv.File{Name: "tmp/", Type: tar.TypeDir, Mode: 0o1777})
	// Parents before children, as tar readers expect.
	sortFiles(files)
	img, err := mutate.AppendLayers(empty.Image, testenv.LayerFromFiles(t, files, "gzip"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config.Entrypoint = []string{testenv.RegistryBinary}
	cfg.Config.Cmd = []string{"serve", "/etc/registry/config.yml"}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	e.loadImage(registryTag, img)
}

func sortFiles(files []testenv.File) {
	for i := 1; i < len(files); i++ {
		for j := i; j > 0 && files[j].Name < files[j-1].Name; j-- {
			files[j], files[j-1] = files[j-1], files[j]
		}
	}
}

// loadImage loads a go-containerregistry image into the outer daemon.
func (e *env) loadImage(tag string, img v1.Image) {
	t := e.t
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tarball.Write(ref, img, &buf); err != nil {
		t.Fatal(err)
	}
	resp, err := e.cli.ImageLoad(e.ctx, &buf, client.ImageLoadWithQuiet(true))
	if err != nil {
		t.Fatalf("loading %s: %v", tag, err)
	}
	defer resp.Body.Close()
	if _, err := engine.ReadStream(e.ctx, resp.Body, nil); err != nil {
		t.Fatalf("loading %s: %v", tag, err)
	}
}

// registryOpts configures a registry container.
type registryOpts struct {
	Alias    string // its name on the network, e.g. "registry"
	Storage  string // host folder with the storage (seeded beforehand)
	Username string
	Password string
	// CertPEM and KeyPEM make it serve TLS; ClientCAPEM makes it require
	// client certificates issued by that CA.
	CertPEM, KeyPEM, ClientCAPEM []byte
	// ReadOnly makes it refuse every push (distribution's read-only
	// maintenance mode), while reads work.
	ReadOnly bool
}

// registryContainer is a distribution registry running in the outer daemon.
type registryContainer struct {
	e    *env
	id   string
	opts registryOpts
}

// startRegistry runs a registry container on the network as opts.Alias:5000.
func (e *env) startRegistry(o registryOpts) *registryContainer {
	t := e.t
	cfgDir := t.TempDir()
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: %t
http:
  addr: :5000
  secret: e2e-%d
`, o.ReadOnly, time.Now().UnixNano())
	if o.CertPEM != nil {
		writeTestFile(t, filepath.Join(cfgDir, "server.crt"), o.CertPEM)
		writeTestFile(t, filepath.Join(cfgDir, "server.key"), o.KeyPEM)
		cfg += "  tls:\n    certificate: /etc/registry/server.crt\n    key: /etc/registry/server.key\n"
		if o.ClientCAPEM != nil {
			writeTestFile(t, filepath.Join(cfgDir, "client-ca.crt"), o.ClientCAPEM)
			cfg += "    clientcas:\n      - /etc/registry/client-ca.crt\n"
		}
	}
	if o.Username != "" {
		// bcrypt: the only hash the registry's htpasswd accepts.
		b, err := exec.Command("htpasswd", "-Bbn", o.Username, o.Password).Output()
		if err != nil {
			t.Fatalf("htpasswd (apt-get install apache2-utils): %v", err)
		}
		writeTestFile(t, filepath.Join(cfgDir, "htpasswd"), b)
		cfg += "auth:\n  htpasswd:\n    realm: e2e\n    path: /etc/registry/htpasswd\n"
	}
	writeTestFile(t, filepath.Join(cfgDir, "config.yml"), []byte(cfg))
	c, err := e.cli.ContainerCreate(e.ctx,
		&container.Config{Image: registryTag},
		&container.HostConfig{
			NetworkMode: netName,
			Mounts: []mount.Mount{
				{Type: mount.TypeBind, Source: cfgDir, Target: "/etc/registry", ReadOnly: true},
				{Type: mount.TypeBind, Source: o.Storage, Target: "/var/lib/registry"},
			},
		},
		&network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{netName: {Aliases: []string{o.Alias}}}},
		nil, "registry-"+o.Alias)
	if err != nil {
		t.Fatalf("creating registry container %s: %v", o.Alias, err)
	}
	r := &registryContainer{e: e, id: c.ID, opts: o}
	r.start()
	return r
}

// start starts the container and waits until the registry listens (it
// logs "listening on" once per start).
func (r *registryContainer) start() {
	t, e := r.e.t, r.e
	before := r.listenCount()
	if err := e.cli.ContainerStart(e.ctx, r.id, container.StartOptions{}); err != nil {
		t.Fatalf("starting registry %s: %v", r.opts.Alias, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for r.listenCount() <= before {
		if time.Now().After(deadline) {
			t.Fatalf("registry %s did not start listening:\n%s", r.opts.Alias, r.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *registryContainer) stop() {
	timeout := 5
	if err := r.e.cli.ContainerStop(r.e.ctx, r.id, container.StopOptions{Timeout: &timeout}); err != nil {
		r.e.t.Fatalf("stopping registry %s: %v", r.opts.Alias, err)
	}
}

func (r *registryContainer) listenCount() int {
	return strings.Count(r.logs(), "listening on")
}

func (r *registryContainer) logs() string {
	rc, err := r.e.cli.ContainerLogs(r.e.ctx, r.id, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return fmt.Sprintf("(logs: %v)", err)
	}
	defer rc.Close()
	var b bytes.Buffer
	_, _ = stdcopy.StdCopy(&b, &b, rc)
	return b.String()
}

func writeTestFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// step is one run of a resource command, as Concourse runs it: a fresh
// privileged container whose init does nothing, an empty volume at
// /scratch, the command exec'ed in it with the request on stdin.
type step struct {
	Cmd    []string      // e.g. /opt/resource/in /tmp/build/get
	Env    []string      // the command's own variables, beside the image's
	Req    any           // JSON on stdin
	Binds  []mount.Mount // the get's folder, the put's inputs
	OnLine func(line string, pid int)
	// OnStart is called with the command's pid (the host's) as it starts,
	// before it reads the request: e.g. to watch its memory.
	OnStart func(pid int)
}

type stepResult struct {
	Stdout, Stderr string
	Code           int
	Took           time.Duration
	Exited         time.Time
	// Left are the processes still in the container after the command
	// exited, its init aside: a daemon that outlived the put shows here.
	Left []string
	// TmpEntries are the names in the container's /tmp afterwards (the
	// put's daemon state folders are made there).
	TmpEntries []string
}

func (e *env) run(s step) stepResult {
	t := e.t
	t.Helper()
	mounts := append([]mount.Mount{{Type: mount.TypeVolume, Target: "/scratch"}}, s.Binds...)
	init := true
	hc := &container.HostConfig{
		// An init that reaps what is orphaned in the container (shims),
		// like Concourse's; it runs sleep, the container's only work.
		Init:        &init,
		NetworkMode: netName,
		Mounts:      mounts,
		// Containers get a cgroup namespace of their own, as on cgroup v2
		// hosts (Docker's default there): the nested daemon's cgroups then
		// stay under the container's.
		CgroupnsMode: container.CgroupnsModePrivate,
	}
	emulated := privileged(t, hc)
	c, err := e.cli.ContainerCreate(e.ctx, &container.Config{Image: e.image, Cmd: []string{"sleep", "infinity"}}, hc, nil, nil, "")
	if err != nil {
		t.Fatalf("creating the step container: %v", err)
	}
	defer func() {
		if err := e.cli.ContainerRemove(context.WithoutCancel(e.ctx), c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
			t.Errorf("removing the step container: %v", err)
		}
	}()
	if err := e.cli.ContainerStart(e.ctx, c.ID, container.StartOptions{}); err != nil {
		t.Fatalf("starting the step container: %v", err)
	}
	if emulated {
		ins, err := e.cli.ContainerInspect(e.ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		remountRW(t, ins.State.Pid)
	}
	in, err := json.Marshal(s.Req)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := e.cli.ContainerExecCreate(e.ctx, c.ID, container.ExecOptions{
		Cmd: s.Cmd, Env: s.Env, AttachStdin: true, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		t.Fatalf("exec %v: %v", s.Cmd, err)
	}
	hj, err := e.cli.ContainerExecAttach(e.ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		t.Fatalf("attaching to %v: %v", s.Cmd, err)
	}
	defer hj.Close()
	t0 := time.Now()
	pid := 0
	for pid == 0 && time.Since(t0) < 10*time.Second {
		if ins, err := e.cli.ContainerExecInspect(e.ctx, ex.ID); err == nil {
			pid = ins.Pid
		}
		if pid == 0 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if s.OnStart != nil && pid != 0 {
		s.OnStart(pid)
	}
	if _, err := hj.Conn.Write(in); err != nil {
		t.Fatalf("writing the request: %v", err)
	}
	if err := hj.CloseWrite(); err != nil {
		t.Fatalf("closing stdin: %v", err)
	}
	var stdout, stderr bytes.Buffer
	lines := &lineWriter{buf: &stderr, fn: func(l string) {
		if s.OnLine != nil {
			s.OnLine(l, pid)
		}
	}}
	if _, err := stdcopy.StdCopy(&stdout, lines, hj.Reader); err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("reading the output of %v: %v", s.Cmd, err)
	}
	res := stepResult{Stdout: stdout.String(), Code: -1}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ins, err := e.cli.ContainerExecInspect(e.ctx, ex.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !ins.Running {
			res.Code = ins.ExitCode
			break
		}
	}
	res.Exited = time.Now()
	res.Took = res.Exited.Sub(t0)
	res.Stderr = stderr.String()
	if res.Code < 0 {
		t.Fatalf("%v still running after its output ended", s.Cmd)
	}
	res.Left = e.processes(c.ID)
	res.Left = append(res.Left, e.nsProcesses(c.ID)...)
	res.TmpEntries = e.listDir(c.ID, "/tmp")
	return res
}

// processes lists the container's live processes other than its init and
// its sleep.
func (e *env) processes(id string) []string {
	top, err := e.cli.ContainerTop(e.ctx, id, []string{"-o", "pid,stat,args"})
	if err != nil {
		e.t.Fatalf("listing the container's processes: %v", err)
	}
	var left []string
	for _, p := range top.Processes {
		if len(p) < 3 || strings.HasPrefix(p[1], "Z") || isInitOrSleep(p[2]) {
			continue
		}
		left = append(left, strings.Join(p, " "))
	}
	return left
}

func isInitOrSleep(args string) bool {
	return strings.Contains(args, "docker-init") || args == "sleep infinity"
}

// nsProcesses lists the host's processes in the container's pid namespace
// other than its init: a second look that does not rely on cgroups.
func (e *env) nsProcesses(id string) []string {
	ins, err := e.cli.ContainerInspect(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", ins.State.Pid))
	if err != nil {
		e.t.Fatalf("the container's pid namespace: %v", err)
	}
	var left []string
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		if l, err := os.Readlink(p + "/ns/pid"); err != nil || l != ns || testenv.ParentOf(p) == 0 { // 0 for zombies
			continue
		}
		b, _ := os.ReadFile(p + "/cmdline")
		args := strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
		if !isInitOrSleep(args) {
			left = append(left, fmt.Sprintf("pid %s: %s", filepath.Base(p), args))
		}
	}
	return left
}

// listDir lists the names in a folder of the container.
func (e *env) listDir(id, dir string) []string {
	rc, _, err := e.cli.CopyFromContainer(e.ctx, id, dir)
	if err != nil {
		e.t.Fatalf("reading %s of the container: %v", dir, err)
	}
	defer rc.Close()
	var names []string
	tr := tar.NewReader(rc)
	base := filepath.Base(dir)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(h.Name, base), "/")
		if rel != "" && !strings.Contains(strings.TrimSuffix(rel, "/"), "/") {
			names = append(names, strings.TrimSuffix(rel, "/"))
		}
	}
	return names
}

// lineWriter passes complete lines to fn and everything to buf.
type lineWriter struct {
	buf     *bytes.Buffer
	pending []byte
	fn      func(string)
}

func (w *lineWriter) Write(b []byte) (int, error) {
	w.buf.Write(b)
	w.pending = append(w.pending, b...)
	for {
		i := bytes.IndexByte(w.pending, '\n')
		if i < 0 {
			break
		}
		w.fn(string(w.pending[:i]))
		w.pending = w.pending[i+1:]
	}
	return len(b), nil
}

// killPid sends sig to a process of the host's pid namespace (the outer
// daemon runs in it, so exec pids are host pids).
func killPid(pid int, sig syscall.Signal) error { return syscall.Kill(pid, sig) }

// scanLines splits text into lines (for assertions on logs).
func scanLines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}
