package daemon

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/concourse-docker/docker-image-resource/pkg/certs"

	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"golang.org/x/sys/unix"
)

// maxStateDirLen keeps every socket dockerd and containerd put under the
// state folder below the 108-byte unix socket limit (the deepest seen is
// <state>/x/libnetwork/<12 hex>.sock, 31 bytes more), with room to spare.
const maxStateDirLen = 50

// stateDirPrefix starts the name of every state folder; the containers'
// cgroup parent has the same name.
const stateDirPrefix = "dkd-"

// makeStateDir makes the daemon's state folder under parent, or under the
// temp folder (/tmp when that path is too long) when parent is empty.
func makeStateDir(parent string) (string, error) {
	const maxParent = maxStateDirLen - len("/"+stateDirPrefix+"1234567890")
	if parent == "" {
		parent = os.TempDir()
		if len(parent) > maxParent {
			parent = "/tmp"
		}
	}
	if len(parent) > maxParent {
		return "", fmt.Errorf("state folder parent %q is too long for unix socket paths (at most %d bytes)", parent, maxParent)
	}
	dir, err := os.MkdirTemp(parent, stateDirPrefix)
	if err != nil {
		return "", fmt.Errorf("making the daemon's state folder: %w", err)
	}
	return dir, nil
}

// dataRoot is where dockerd keeps images.
type dataRoot struct {
	path  string
	owned bool     // made for this daemon: removed on Stop
	lock  *os.File // flock held on a shared data root, nil otherwise
}

// pickDataRoot is the data root given in Options (made if missing, kept on
// Stop), else chooseDataRoot's.
func pickDataRoot(given, scratch, stateDir string) (dataRoot, error) {
	if given == "" {
		return chooseDataRoot(scratch, stateDir)
	}
	if err := os.MkdirAll(given, 0o711); err != nil {
		return dataRoot{}, fmt.Errorf("making data root %s: %w", given, err)
	}
	return dataRoot{path: given}, nil
}

// chooseDataRoot picks scratch/docker when scratch is a folder and no other
// daemon of ours uses it (flock), a fresh folder under scratch when one
// does, and stateDir/data without scratch.
func chooseDataRoot(scratch, stateDir string) (dataRoot, error) {
	if fi, err := os.Stat(scratch); err != nil || !fi.IsDir() {
		p := filepath.Join(stateDir, "data")
		if err := os.Mkdir(p, 0o711); err != nil {
			return dataRoot{}, fmt.Errorf("making data root: %w", err)
		}
		return dataRoot{path: p, owned: true}, nil
	}
	shared := filepath.Join(scratch, "docker")
	if err := os.MkdirAll(shared, 0o711); err != nil {
		return dataRoot{}, fmt.Errorf("making data root %s: %w", shared, err)
	}
	f, err := os.Open(shared)
	if err != nil {
		return dataRoot{}, fmt.Errorf("opening data root %s: %w", shared, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
		return dataRoot{path: shared, lock: f}, nil
	}
	f.Close()
	p, err := os.MkdirTemp(scratch, "docker-")
	if err != nil {
		return dataRoot{}, fmt.Errorf("making data root under %s: %w", scratch, err)
	}
	return dataRoot{path: p, owned: true}, nil
}

// defaultRouteMTU returns the interface of the default route (lowest
// metric) in a /proc/net/route file and its MTU from sysClassNet.
func defaultRouteMTU(procNetRoute, sysClassNet string) (iface string, mtu int, err error) {
	b, err := os.ReadFile(procNetRoute)
	if err != nil {
		return "", 0, fmt.Errorf("reading routes: %w", err)
	}
	best := -1
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// Iface Destination Gateway Flags RefCnt Use Metric Mask ...
		if len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
			continue
		}
		flags, err := strconv.ParseUint(f[3], 16, 32)
		if err != nil || flags&unix.RTF_UP == 0 {
			continue
		}
		metric, err := strconv.Atoi(f[6])
		if err != nil {
			continue
		}
		if best < 0 || metric < best {
			best, iface = metric, f[0]
		}
	}
	if iface == "" {
		return "", 0, errors.New("no default route")
	}
	mb, err := os.ReadFile(filepath.Join(sysClassNet, iface, "mtu"))
	if err != nil {
		return iface, 0, fmt.Errorf("reading MTU of %s: %w", iface, err)
	}
	mtu, err = strconv.Atoi(strings.TrimSpace(string(mb)))
	if err != nil || mtu <= 0 {
		return iface, 0, fmt.Errorf("MTU of %s is %q", iface, strings.TrimSpace(string(mb)))
	}
	return iface, mtu, nil
}

// daemonConfig is daemon.json. One file serves every dockerd version:
// 20.10 rejects unknown top-level keys but not unknown names inside
// "features", and dockerd ignores "deprecated-key-path" since 22.06 (should
// one reject it, Start retries without it: withKeyPath false).
//
// containerdStore picks the image store: the classic one (false), pinned
// because 29 defaults fresh data roots to the containerd store, where image
// IDs are manifest digests and the resource's fast paths (the layer-store
// seed, the direct push's layer reads) do not apply; or the containerd one,
// whose BuildKit has the registry cache and OCI exporters.
func daemonConfig(keyPath string, withKeyPath, containerdStore bool) ([]byte, error) {
	cfg := map[string]any{
		"features": map[string]bool{"containerd-snapshotter": containerdStore},
	}
	if withKeyPath {
		// Up to 22.x dockerd writes a trust key, by default to
		// /etc/docker/key.json.
		cfg["deprecated-key-path"] = keyPath
	}
	return json.MarshalIndent(cfg, "", "  ")
}

func writeDaemonConfig(path, keyPath string, withKeyPath, containerdStore bool) error {
	cfg, err := daemonConfig(keyPath, withKeyPath, containerdStore)
	if err != nil {
		return fmt.Errorf("encoding daemon.json: %w", err)
	}
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		return fmt.Errorf("writing daemon.json: %w", err)
	}
	return nil
}

// rejectsKeyPath reports whether a dockerd log says daemon.json's
// deprecated-key-path is unknown.
func rejectsKeyPath(log string) bool {
	return strings.Contains(log, "don't match any configuration option") && strings.Contains(log, "deprecated-key-path")
}

// containerdConfig keeps everything of our containerd in dir: root (unless
// root is given), state, sockets and the opt folder (by default
// /opt/containerd).
func containerdConfig(dir, root, socket string) []byte {
	if root == "" {
		root = filepath.Join(dir, "root")
	}
	return fmt.Appendf(nil, `version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  address = ""

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %q
`, root, filepath.Join(dir, "state"), socket, socket+".ttrpc", filepath.Join(dir, "opt"))
}

// dockerdArgs are dockerd's flags: its files in the state folder, our
// containerd, containers' cgroups under our parent, then what the options
// ask for.
func (d *Daemon) dockerdArgs(cfgPath string) []string {
	args := []string{
		"--config-file", cfgPath,
		"--data-root", d.data.path,
		"--exec-root", filepath.Join(d.dir, "x"),
		"--pidfile", filepath.Join(d.dir, "d.pid"),
		"--host", d.host,
		"--containerd", d.containerdSocket(),
		// cgroupfs puts containers under our parent on every system, so
		// Stop finds what is left of them.
		"--exec-opt", "native.cgroupdriver=cgroupfs",
		"--cgroup-parent", d.cgroupParent,
		// Containers still running at Stop are garbage; do not wait long.
		"--shutdown-timeout", "5",
	}
	if d.opts.Debug {
		args = append(args, "--debug")
	}
	return append(args, flagArgs(d.opts, d.mtu())...)
}

// mtu is the default route's MTU for --mtu, 0 when unknown.
func (d *Daemon) mtu() int {
	iface, mtu, err := defaultRouteMTU("/proc/net/route", "/sys/class/net")
	if err != nil {
		d.log.Debugf("no --mtu for dockerd: %v", err)
		return 0
	}
	d.log.Debugf("default route via %s, MTU %d", iface, mtu)
	return mtu
}

// isolatedArgs keep dockerd from changing the network namespace: no
// docker0 bridge, no iptables rules, no ip_forward sysctl.
var isolatedArgs = []string{"--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--ip-forward=false"}

// flagArgs turns the options into dockerd flags.
func flagArgs(o Options, mtu int) []string {
	var args []string
	if mtu > 0 {
		args = append(args, "--mtu", strconv.Itoa(mtu))
	}
	if o.MaxConcurrentDownloads > 0 {
		args = append(args, "--max-concurrent-downloads", strconv.Itoa(o.MaxConcurrentDownloads))
	}
	if o.MaxConcurrentUploads > 0 {
		args = append(args, "--max-concurrent-uploads", strconv.Itoa(o.MaxConcurrentUploads))
	}
	for _, r := range o.InsecureRegistries {
		args = append(args, "--insecure-registry", r)
	}
	if o.RegistryMirror != "" {
		args = append(args, "--registry-mirror", o.RegistryMirror)
	}
	if o.Isolated {
		args = append(args, isolatedArgs...)
	}
	return args
}

// commandLine is dockerd's command line as the debug log shows it, with the
// userinfo of every URL in it masked. Validation refuses a registry_mirror
// with a username or password (dockerd would refuse it too), so none should
// get here; if one did, its password still must not reach the log.
func commandLine(binary string, args []string) string {
	words := make([]string, 0, len(args)+1)
	words = append(words, binary)
	for _, a := range args {
		words = append(words, logging.RedactURL(a))
	}
	return strings.Join(words, " ")
}

// writeCerts lays out dir as a certs.d folder: <domain>/ca.crt (all CAs of
// a domain, concatenated) and <domain>/client.cert + client.key (more pairs
// get client-N names).
func writeCerts(dir string, cas []certs.CA, clients []certs.ClientCert) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("making %s: %w", dir, err)
	}
	caPEM := map[string][]byte{}
	var order []string
	for _, ca := range cas {
		if err := checkDomain(ca.Domain); err != nil {
			return fmt.Errorf("CA certificate: %w", err)
		}
		if _, ok := caPEM[ca.Domain]; !ok {
			order = append(order, ca.Domain)
		}
		pem := strings.TrimSpace(ca.Cert) + "\n"
		caPEM[ca.Domain] = append(caPEM[ca.Domain], pem...)
	}
	for _, d := range order {
		if err := writeCertFile(filepath.Join(dir, d, "ca.crt"), caPEM[d], 0o644); err != nil {
			return err
		}
	}
	n := map[string]int{}
	for _, c := range clients {
		if err := checkDomain(c.Domain); err != nil {
			return fmt.Errorf("client certificate: %w", err)
		}
		base := "client"
		if k := n[c.Domain]; k > 0 {
			base = fmt.Sprintf("client-%d", k)
		}
		n[c.Domain]++
		if err := writeCertFile(filepath.Join(dir, c.Domain, base+".cert"), []byte(strings.TrimSpace(c.Cert)+"\n"), 0o644); err != nil {
			return err
		}
		if err := writeCertFile(filepath.Join(dir, c.Domain, base+".key"), []byte(strings.TrimSpace(c.Key)+"\n"), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// checkDomain refuses names that are not one path element: a domain becomes
// a folder name.
func checkDomain(d string) error {
	if d == "" || d == "." || d == ".." || strings.ContainsAny(d, "/\\\x00") {
		return fmt.Errorf("invalid registry domain %q (want host or host:port)", d)
	}
	return nil
}

func writeCertFile(path string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("making %s: %w", filepath.Dir(path), err)
	}
	if err := os.WriteFile(path, b, mode); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
