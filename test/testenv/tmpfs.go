package testenv

import (
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Tmpfs mounts a tmpfs with options opts ("size=24m", "size=8g,nr_inodes=8m")
// on a fresh folder and unmounts it on cleanup (lazily if something still
// holds it), so the host keeps nothing; unmount does it sooner (the memory
// a tmpfs holds is freed then). It skips the test when not root.
func Tmpfs(t testing.TB, opts string) (dir string, unmount func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir = t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts+",mode=0755"); err != nil {
		t.Fatalf("mount a tmpfs (%s): %v", opts, err)
	}
	var once sync.Once
	unmount = func() {
		once.Do(func() {
			if err := unix.Unmount(dir, 0); err != nil {
				t.Logf("unmount %s: %v; detaching it", dir, err)
				if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
					t.Errorf("unmount %s: %v", dir, err)
				}
			}
		})
	}
	// Registered after TempDir's cleanup, so it runs before the removal.
	t.Cleanup(unmount)
	return dir, unmount
}
