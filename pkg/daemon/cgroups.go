package daemon

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/childproc"
	"github.com/concourse-docker/docker-image-resource/pkg/mountinfo"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// InContainerEnv is set to 1 by the resource image's Dockerfile. Only then
// does Start touch cgroups: on a host the same steps would move the host's
// processes and re-mount its hierarchies.
const InContainerEnv = "DOCKER_IMAGE_RESOURCE_IN_CONTAINER"

const cgroupMount = "/sys/fs/cgroup"

// inContainer reports whether the environment says we run in the resource
// container.
func inContainer(getenv func(string) string) bool {
	v := strings.TrimSpace(getenv(InContainerEnv))
	return v == "1" || strings.EqualFold(v, "true")
}

// cgroupV2Mounted reports whether root is a cgroup v2 (unified) mount; a
// cgroup v1 or hybrid system has no cgroup.controllers there.
func cgroupV2Mounted(root string) bool {
	_, err := os.Stat(filepath.Join(root, "cgroup.controllers"))
	return err == nil
}

// selfCgroupV2Path is the "0::/path" entry of /proc/self/cgroup, or "".
func selfCgroupV2Path(selfCgroup []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(selfCgroup))
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return p
		}
	}
	return ""
}

// cgroupV2Base returns the cgroup (relative to the mount) whose processes
// the v2 set-up moves and whose controllers it enables. With a cgroup
// namespace we sit at its root ("/", or "/init" once moved there by an
// earlier start); without one, /sys/fs/cgroup shows the host's tree and we
// must keep to our own cgroup, never its parents.
func cgroupV2Base(selfCgroup []byte) string {
	p := path.Clean("/" + selfCgroupV2Path(selfCgroup))
	if p == "/"+cgroupV2Init {
		return "/"
	}
	if path.Base(p) == cgroupV2Init {
		return path.Dir(p)
	}
	return p
}

// cgroupV2Init is the child cgroup the container's processes move into: a
// cgroup with processes cannot enable controllers for its children.
const cgroupV2Init = "init"

// cgroupV2 does the cgroup v2 steps of docker-in-docker on one cgroup
// folder. write is the only way it writes to cgroup files (tests record it).
type cgroupV2 struct {
	dir   string
	write func(path string, data []byte) error
	log   *logrus.Entry
}

func writeCgroupFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// setup moves every process of dir into dir/init and enables all available
// controllers in dir's cgroup.subtree_control.
func (c cgroupV2) setup() error {
	initDir := filepath.Join(c.dir, cgroupV2Init)
	if err := os.Mkdir(initDir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("making cgroup %s: %w", initDir, err)
	}
	// Processes can appear while we move the others (children forked
	// meanwhile), so read again until the cgroup is empty.
	var moveErrs []error
	for attempt := 0; attempt < 10; attempt++ {
		pids, err := readFields(filepath.Join(c.dir, "cgroup.procs"))
		if err != nil {
			return fmt.Errorf("reading processes of cgroup %s: %w", c.dir, err)
		}
		if len(pids) == 0 {
			break
		}
		moveErrs = moveErrs[:0]
		for _, pid := range pids {
			err := c.write(filepath.Join(initDir, "cgroup.procs"), []byte(pid))
			if err != nil && !errors.Is(err, syscall.ESRCH) { // ESRCH: it exited
				moveErrs = append(moveErrs, fmt.Errorf("moving process %s into %s: %w", pid, initDir, err))
			}
		}
	}
	if len(moveErrs) > 0 {
		return errors.Join(moveErrs...)
	}

	avail, err := readFields(filepath.Join(c.dir, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("reading controllers of cgroup %s: %w", c.dir, err)
	}
	enabled, err := readFields(filepath.Join(c.dir, "cgroup.subtree_control"))
	if err != nil {
		return fmt.Errorf("reading enabled controllers of cgroup %s: %w", c.dir, err)
	}
	var missing []string
	for _, ctl := range avail {
		if !slices.Contains(enabled, ctl) {
			missing = append(missing, ctl)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	ctlFile := filepath.Join(c.dir, "cgroup.subtree_control")
	if err := c.write(ctlFile, []byte("+"+strings.Join(missing, " +"))); err == nil {
		c.log.Debugf("cgroup v2: enabled controllers %s in %s", strings.Join(missing, " "), c.dir)
		return nil
	}
	// One controller the kernel refuses fails the whole write: enable what
	// can be enabled, and name the rest.
	var failed []string
	var lastErr error
	for _, ctl := range missing {
		if err := c.write(ctlFile, []byte("+"+ctl)); err != nil {
			failed = append(failed, ctl)
			lastErr = err
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("enabling cgroup controllers %s in %s: %w", strings.Join(failed, ", "), ctlFile, lastErr)
	}
	return nil
}

func readFields(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}

// v1Mount is one cgroup v1 hierarchy to (re)mount under the cgroup root.
type v1Mount struct {
	Dir     string   // folder under the cgroup root, e.g. "cpu,cpuacct"
	Options string   // mount options, e.g. "cpu,cpuacct" or "none,name=systemd"
	Links   []string // subsystem names that become symlinks to Dir
}

// planCgroupV1 decides which cgroup v1 hierarchies to mount, as the old
// resource did: every enabled subsystem of /proc/cgroups, grouped as in
// /proc/self/cgroup (co-mounted ones share a folder, with a symlink per
// subsystem), plus a name=systemd hierarchy when there is none.
func planCgroupV1(procCgroups, selfCgroup []byte, haveSystemd bool) []v1Mount {
	var groupings [][]string
	sc := bufio.NewScanner(bytes.NewReader(selfCgroup))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), ":", 3)
		if len(f) == 3 && f[1] != "" {
			groupings = append(groupings, strings.Split(f[1], ","))
		}
	}
	var plan []v1Mount
	seen := map[string]int{}
	sc = bufio.NewScanner(bytes.NewReader(procCgroups))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || strings.HasPrefix(f[0], "#") || f[3] != "1" {
			continue
		}
		sys := f[0]
		grouping := sys
		for _, g := range groupings {
			if slices.Contains(g, sys) {
				grouping = strings.Join(g, ",")
				break
			}
		}
		i, ok := seen[grouping]
		if !ok {
			i = len(plan)
			seen[grouping] = i
			plan = append(plan, v1Mount{Dir: grouping, Options: grouping})
		}
		if grouping != sys {
			plan[i].Links = append(plan[i].Links, sys)
		}
	}
	if !haveSystemd {
		plan = append(plan, v1Mount{Dir: "systemd", Options: "none,name=systemd"})
	}
	return plan
}

// applyCgroupV1 mounts the plan under root. It runs on the namespace
// thread: the mounts exist only in the daemon's namespace. A hierarchy that
// cannot be mounted is logged, not fatal: only RUN steps need it.
func applyCgroupV1(root string, plan []v1Mount, log *logrus.Entry) error {
	mps, err := mountinfo.Points("/proc/thread-self/mountinfo")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("making %s: %w", root, err)
	}
	if !mps[root] {
		if err := unix.Mount("cgroup", root, "tmpfs", 0, "uid=0,gid=0,mode=0755"); err != nil {
			return fmt.Errorf("mounting a tmpfs at %s: %w", root, err)
		}
	}
	// A read-only bind mount gets writable by a bind remount; a read-only
	// tmpfs by a plain one.
	if err := unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_BIND, ""); err != nil {
		if err := unix.Mount("", root, "", unix.MS_REMOUNT, "mode=0755"); err != nil {
			log.Warnf("cgroup v1: cannot make %s writable: %v", root, err)
		}
	}
	for _, m := range plan {
		dir := filepath.Join(root, m.Dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			log.Warnf("cgroup v1: making %s: %v", dir, err)
			continue
		}
		if mps[dir] {
			// The existing mount may be read-only: replace it.
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				log.Warnf("cgroup v1: unmounting %s: %v", dir, err)
			}
		}
		if err := unix.Mount("cgroup", dir, "cgroup", 0, m.Options); err != nil {
			log.Warnf("cgroup v1: mounting %s at %s: %v", m.Options, dir, err)
			continue
		}
		for _, l := range m.Links {
			lp := filepath.Join(root, l)
			if fi, err := os.Lstat(lp); err == nil && fi.Mode()&os.ModeSymlink != 0 {
				_ = os.Remove(lp)
			}
			if err := os.Symlink(m.Dir, lp); err != nil && !errors.Is(err, os.ErrExist) {
				log.Warnf("cgroup v1: linking %s: %v", lp, err)
			}
		}
	}
	return nil
}

// setupCgroups prepares cgroups for a nested daemon; it runs on the
// namespace thread before containerd and dockerd start, and only in the
// resource container. It returns the base for the containers' cgroup
// parent. Failures are warnings: loading and pushing need no cgroups.
func setupCgroups(log *logrus.Entry) string {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		log.Warnf("cgroups: reading /proc/self/cgroup: %v; leaving cgroups alone", err)
		return "/"
	}
	if cgroupV2Mounted(cgroupMount) {
		// A read-only cgroup mount (seen in some runtimes) is writable by a
		// bind remount in our namespace, when privileged.
		_ = unix.Mount("", cgroupMount, "", unix.MS_REMOUNT|unix.MS_BIND, "")
		base := cgroupV2Base(self)
		c := cgroupV2{dir: filepath.Join(cgroupMount, base), write: writeCgroupFile, log: log}
		if err := c.setup(); err != nil {
			log.Warnf("cgroup v2 set-up for a nested dockerd failed, RUN steps may fail: %v", err)
		} else {
			log.Debugf("cgroup v2: processes of %s moved into %s, controllers enabled", c.dir, cgroupV2Init)
		}
		return base
	}
	procCgroups, err := os.ReadFile("/proc/cgroups")
	if err != nil {
		log.Warnf("cgroups: reading /proc/cgroups: %v; leaving cgroups alone", err)
		return "/"
	}
	_, serr := os.Stat(filepath.Join(cgroupMount, "systemd"))
	plan := planCgroupV1(procCgroups, self, serr == nil)
	if err := applyCgroupV1(cgroupMount, plan, log); err != nil {
		log.Warnf("cgroup v1 set-up for a nested dockerd failed, RUN steps may fail: %v", err)
	}
	return "/"
}

// cgroupDirs lists the folders of cgroup parent in every hierarchy under
// root (one on cgroup v2, one per mounted hierarchy on v1). A parent that
// is the root itself ("", "/", ".") has none: what is listed here gets its
// processes killed and its cgroups removed, and the root holds every
// process of the machine.
func cgroupDirs(root, parent string) []string {
	if path.Clean("/"+parent) == "/" {
		return nil
	}
	if cgroupV2Mounted(root) {
		return []string{filepath.Join(root, parent)}
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() { // symlinks such as cpu -> cpu,cpuacct are skipped
			out = append(out, filepath.Join(root, e.Name(), parent))
		}
	}
	return out
}

// cgroupTree lists top and the cgroups below it, parents first.
func cgroupTree(top string) []string {
	var dirs []string
	_ = filepath.WalkDir(top, func(p string, de os.DirEntry, err error) error {
		if err == nil && de.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	return dirs
}

// cgroupPids lists the processes in the cgroups under parent.
func cgroupPids(root, parent string) []int {
	var pids []int
	for _, top := range cgroupDirs(root, parent) {
		for _, dir := range cgroupTree(top) {
			b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
					pids = append(pids, pid)
				}
			}
		}
	}
	return pids
}

// removeCgroups kills what is left in the cgroups under parent (containers
// of a daemon that did not stop them) and removes the cgroups.
func removeCgroups(root, parent string) error {
	var lastErr error
	for attempt := 0; attempt < 50; attempt++ {
		lastErr = nil
		childproc.KillAll(func() []int { return cgroupPids(root, parent) }, 0)
		for _, top := range cgroupDirs(root, parent) {
			dirs := cgroupTree(top)
			for i := len(dirs) - 1; i >= 0; i-- { // children first
				if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
					lastErr = fmt.Errorf("removing cgroup %s: %w", dirs[i], err)
				}
			}
		}
		if lastErr == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return lastErr
}
