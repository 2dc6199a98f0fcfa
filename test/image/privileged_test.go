package image

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
)

// capNames are the capabilities by number, as dockerd names them.
var capNames = []string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
	"SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
	"IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
	"SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
	"LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
	"WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}

// missingCaps lists the capabilities the kernel has but our bounding set
// lacks (a sandbox may withhold some).
func missingCaps(t testing.TB) []string {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		t.Fatal(err)
	}
	last, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var bnd uint64
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			if bnd, err = strconv.ParseUint(strings.TrimSpace(v), 16, 64); err != nil {
				t.Fatal(err)
			}
		}
	}
	var missing []string
	for c := 0; c <= last && c < len(capNames); c++ {
		if bnd&(1<<c) == 0 {
			missing = append(missing, capNames[c])
		}
	}
	return missing
}

// privileged makes hc what Concourse's privileged: true gives. dockerd
// 20.10 gives a privileged container every capability the kernel knows
// (newer ones only those of their bounding set), so where this machine
// withholds one, runc fails ("unable to apply caps"). Then the container
// gets everything privileged would, less the withheld capabilities:
// all other capabilities, no seccomp/AppArmor/SELinux confinement, no
// masked or read-only /proc paths, every device allowed; remountRW then
// makes /sys and the cgroup mounts writable, as privileged leaves them.
func privileged(t testing.TB, hc *container.HostConfig) (emulated bool) {
	missing := missingCaps(t)
	if len(missing) == 0 {
		hc.Privileged = true
		return false
	}
	hc.CapAdd = []string{"ALL"}
	hc.CapDrop = missing
	hc.SecurityOpt = []string{"seccomp=unconfined", "apparmor=unconfined", "label=disable"}
	// Empty, not nil: no masked or read-only /proc paths (what the CLI's
	// systempaths=unconfined sends).
	hc.MaskedPaths, hc.ReadonlyPaths = []string{}, []string{}
	hc.DeviceCgroupRules = []string{"a *:* rwm"}
	return true
}

// remountRW makes /sys and the cgroup mounts of a running container
// writable (from the host, with nsenter into its mount namespace).
func remountRW(t testing.TB, pid int) {
	script := `set -e
mount -o remount,rw /sys
awk '$2 ~ "^/sys/fs/cgroup" { print $2 }' /proc/self/mounts | while read -r m; do
	mount -o remount,rw "$m" 2>/dev/null || mount -o remount,bind,rw "$m"
done`
	out, err := exec.Command("nsenter", fmt.Sprintf("--mount=/proc/%d/ns/mnt", pid), "--", "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("making /sys writable in the container: %v\n%s", err, out)
	}
}
