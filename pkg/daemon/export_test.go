package daemon

// What the package's end-to-end tests check inside a daemon. They are
// package daemon_test because they use test/testenv (registries, images, the
// machine-wide dockerd lock), and testenv starts its own dockerd through this
// package.

func (d *Daemon) StateDir() string     { return d.dir }
func (d *Daemon) NamespaceID() string  { return d.ns.id }
func (d *Daemon) CgroupParent() string { return d.cgroupParent }
func (d *Daemon) ContainerdPid() int   { return d.containerd.proc.Pid() }

var (
	DefaultRouteMTU = defaultRouteMTU
	IsolatedArgs    = isolatedArgs
)

// CgroupDirs lists the folders of cgroup parent in every hierarchy.
func CgroupDirs(parent string) []string { return cgroupDirs(cgroupMount, parent) }
