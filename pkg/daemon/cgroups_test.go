package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/logging"
)

func TestInContainerDecision(t *testing.T) {
	for v, want := range map[string]bool{"1": true, "true": true, " TRUE ": true, "": false, "0": false, "false": false, "yes": false} {
		got := inContainer(func(k string) string {
			if k != InContainerEnv {
				t.Fatalf("read %s", k)
			}
			return v
		})
		if got != want {
			t.Errorf("%s=%q: inContainer = %v, want %v", InContainerEnv, v, got, want)
		}
	}
}

func TestCgroupV2Base(t *testing.T) {
	for self, want := range map[string]string{
		"0::/\n":                               "/",
		"0::/init\n":                           "/", // moved there by an earlier start
		"0::/garden/abc\n":                     "/garden/abc",
		"0::/garden/abc/init\n":                "/garden/abc",
		"12:memory:/x\n1:name=systemd:/y\n":    "/", // v1 only: no entry
		"1:name=systemd:/y\n0::/kubepods/p1\n": "/kubepods/p1",
	} {
		if got := cgroupV2Base([]byte(self)); got != want {
			t.Errorf("cgroupV2Base(%q) = %q, want %q", self, got, want)
		}
	}
}

// fakeCgroupV2 is a cgroup v2 folder with regular files; its write hook
// moves pids between cgroup.procs files as the kernel would.
type fakeCgroupV2 struct {
	t      *testing.T
	dir    string
	writes []string
	refuse map[string]bool // controllers the "kernel" refuses to enable
	spawn  []string        // pids that appear in the root after the first move
}

func newFakeCgroupV2(t *testing.T, procs, controllers, subtree string) *fakeCgroupV2 {
	f := &fakeCgroupV2{t: t, dir: t.TempDir(), refuse: map[string]bool{}}
	writeTestFile(t, filepath.Join(f.dir, "cgroup.procs"), procs)
	writeTestFile(t, filepath.Join(f.dir, "cgroup.controllers"), controllers)
	writeTestFile(t, filepath.Join(f.dir, "cgroup.subtree_control"), subtree)
	return f
}

func (f *fakeCgroupV2) write(path string, data []byte) error {
	rel, _ := filepath.Rel(f.dir, path)
	f.writes = append(f.writes, rel+" < "+string(data))
	read := func(name string) []string {
		b, _ := os.ReadFile(filepath.Join(f.dir, name))
		return strings.Fields(string(b))
	}
	put := func(name string, fields []string) {
		s := strings.Join(fields, "\n")
		if s != "" {
			s += "\n"
		}
		if err := os.WriteFile(filepath.Join(f.dir, name), []byte(s), 0o644); err != nil {
			f.t.Fatal(err)
		}
	}
	switch rel {
	case "init/cgroup.procs":
		pid := string(data)
		root := read("cgroup.procs")
		if !slices.Contains(root, pid) {
			return syscall.ESRCH
		}
		root = slices.DeleteFunc(root, func(p string) bool { return p == pid })
		root = append(root, f.spawn...)
		f.spawn = nil
		put("cgroup.procs", root)
		put("init/cgroup.procs", append(read("init/cgroup.procs"), pid))
	case "cgroup.subtree_control":
		if len(read("cgroup.procs")) > 0 {
			return syscall.EBUSY // no internal processes
		}
		en := read("cgroup.subtree_control")
		for _, c := range strings.Fields(string(data)) {
			if f.refuse[strings.TrimPrefix(c, "+")] {
				return syscall.EINVAL
			}
		}
		for _, c := range strings.Fields(string(data)) {
			en = append(en, strings.TrimPrefix(c, "+"))
		}
		put("cgroup.subtree_control", en)
	default:
		return errors.New("unexpected write to " + rel)
	}
	return nil
}

func TestCgroupV2Setup(t *testing.T) {
	t.Run("moves every process, then enables all controllers", func(t *testing.T) {
		f := newFakeCgroupV2(t, "1\n7\n42\n", "cpuset cpu io memory pids\n", "")
		f.spawn = []string{"99"} // forked while we moved the others
		c := cgroupV2{dir: f.dir, write: f.write, log: logging.Discard()}
		if err := c.setup(); err != nil {
			t.Fatal(err)
		}
		init, _ := os.ReadFile(filepath.Join(f.dir, "init", "cgroup.procs"))
		if got := strings.Fields(string(init)); !reflect.DeepEqual(got, []string{"1", "7", "42", "99"}) {
			t.Errorf("init/cgroup.procs = %v", got)
		}
		sub, _ := os.ReadFile(filepath.Join(f.dir, "cgroup.subtree_control"))
		if got := strings.Fields(string(sub)); !reflect.DeepEqual(got, []string{"cpuset", "cpu", "io", "memory", "pids"}) {
			t.Errorf("subtree_control = %v", got)
		}
		if last := f.writes[len(f.writes)-1]; last != "cgroup.subtree_control < +cpuset +cpu +io +memory +pids" {
			t.Errorf("last write %q", last)
		}
	})
	t.Run("already set up: nothing written", func(t *testing.T) {
		f := newFakeCgroupV2(t, "", "cpu memory\n", "cpu memory\n")
		c := cgroupV2{dir: f.dir, write: f.write, log: logging.Discard()}
		if err := c.setup(); err != nil {
			t.Fatal(err)
		}
		if len(f.writes) != 0 {
			t.Errorf("writes %q", f.writes)
		}
	})
	t.Run("only the missing controllers, and a refused one is named", func(t *testing.T) {
		f := newFakeCgroupV2(t, "5\n", "cpu memory hugetlb pids\n", "cpu\n")
		f.refuse["hugetlb"] = true
		c := cgroupV2{dir: f.dir, write: f.write, log: logging.Discard()}
		err := c.setup()
		if err == nil || !strings.Contains(err.Error(), "hugetlb") || strings.Contains(err.Error(), "memory,") {
			t.Fatalf("err = %v, want one naming hugetlb only", err)
		}
		sub, _ := os.ReadFile(filepath.Join(f.dir, "cgroup.subtree_control"))
		if got := strings.Fields(string(sub)); !reflect.DeepEqual(got, []string{"cpu", "memory", "pids"}) {
			t.Errorf("subtree_control = %v", got)
		}
		if f.writes[1] != "cgroup.subtree_control < +memory +hugetlb +pids" {
			t.Errorf("writes %q", f.writes)
		}
	})
	t.Run("a process that exited meanwhile is no error", func(t *testing.T) {
		f := newFakeCgroupV2(t, "3\n", "cpu\n", "")
		exited := false
		c := cgroupV2{dir: f.dir, log: logging.Discard(), write: func(p string, b []byte) error {
			if strings.HasSuffix(p, "init/cgroup.procs") && !exited {
				exited = true
				writeTestFile(t, filepath.Join(f.dir, "cgroup.procs"), "")
				return syscall.ESRCH
			}
			return f.write(p, b)
		}}
		if err := c.setup(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a process that cannot move is reported", func(t *testing.T) {
		f := newFakeCgroupV2(t, "3\n", "cpu\n", "")
		c := cgroupV2{dir: f.dir, log: logging.Discard(), write: func(p string, b []byte) error {
			if strings.HasSuffix(p, "init/cgroup.procs") {
				return syscall.EPERM
			}
			return f.write(p, b)
		}}
		if err := c.setup(); err == nil || !strings.Contains(err.Error(), "moving process 3") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestPlanCgroupV1(t *testing.T) {
	procCgroups := `#subsys_name	hierarchy	num_cgroups	enabled
cpuset	3	1	1
cpu	1	1	1
cpuacct	1	1	1
memory	4	44	1
net_cls	5	1	1
net_prio	5	1	1
hugetlb	0	1	0
pids	8	1	1
`
	self := `9:name=systemd:/
8:pids:/x
5:net_cls,net_prio:/x
4:memory:/x
3:cpuset:/x
1:cpu,cpuacct:/x
0::/
`
	got := planCgroupV1([]byte(procCgroups), []byte(self), false)
	want := []v1Mount{
		{Dir: "cpuset", Options: "cpuset"},
		{Dir: "cpu,cpuacct", Options: "cpu,cpuacct", Links: []string{"cpu", "cpuacct"}},
		{Dir: "memory", Options: "memory"},
		{Dir: "net_cls,net_prio", Options: "net_cls,net_prio", Links: []string{"net_cls", "net_prio"}},
		{Dir: "pids", Options: "pids"},
		{Dir: "systemd", Options: "none,name=systemd"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("plan = %+v\nwant %+v", got, want)
	}
	// An existing systemd hierarchy is left alone; a subsystem mounted
	// nowhere gets a folder of its own.
	got = planCgroupV1([]byte("#h\nblkio\t0\t1\t1\n"), nil, true)
	if want := []v1Mount{{Dir: "blkio", Options: "blkio"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("plan = %+v, want %+v", got, want)
	}
}

func TestCgroupDirsAndRemove(t *testing.T) {
	// A v1-style root: one folder per hierarchy, a symlink for co-mounts.
	root := t.TempDir()
	for _, h := range []string{"cpu,cpuacct", "memory"} {
		if err := os.MkdirAll(filepath.Join(root, h, "dkd-1", "ctr"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("cpu,cpuacct", filepath.Join(root, "cpu")); err != nil {
		t.Fatal(err)
	}
	got := cgroupDirs(root, "/dkd-1")
	want := []string{filepath.Join(root, "cpu,cpuacct", "dkd-1"), filepath.Join(root, "memory", "dkd-1")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("cgroupDirs = %v, want %v", got, want)
	}
	if err := removeCgroups(root, "/dkd-1"); err != nil {
		t.Fatal(err)
	}
	for _, d := range want {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there", d)
		}
	}
	// v2: a single tree.
	v2 := newFakeCgroupV2(t, "", "cpu", "")
	if got := cgroupDirs(v2.dir, "/p"); !reflect.DeepEqual(got, []string{filepath.Join(v2.dir, "p")}) {
		t.Errorf("v2 cgroupDirs = %v", got)
	}
	// The root is never a daemon's parent: it holds every process.
	for _, h := range []string{"cpu,cpuacct", "memory"} {
		if err := os.MkdirAll(filepath.Join(root, h, "other"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, parent := range []string{"", "/", ".", "/.", "//", "/..", "./"} {
		if got := cgroupDirs(root, parent); got != nil {
			t.Errorf("cgroupDirs(%q) = %v, want none", parent, got)
		}
		if err := removeCgroups(root, parent); err != nil {
			t.Errorf("removeCgroups(%q): %v", parent, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "memory", "other")); err != nil {
		t.Errorf("removing the root parent removed other cgroups: %v", err)
	}
}
