package testenv

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// PeakRSS polls the kernel's high-water mark of pid's resident memory
// (VmHWM) until the process exits, then sends it. rusage's maxrss would be
// wrong for a child of a test process: before exec the child shares the
// big parent's memory, and that counts towards its maxrss.
func PeakRSS(pid int) <-chan int64 {
	out := make(chan int64, 1)
	go func() {
		var peak int64
		for {
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			if err != nil {
				break
			}
			exited := false
			for _, l := range strings.Split(string(st), "\n") {
				if strings.HasPrefix(l, "State:") && strings.Contains(l, "zombie") {
					exited = true
				}
				if kb, ok := strings.CutPrefix(l, "VmHWM:"); ok {
					var n int64
					fmt.Sscan(strings.TrimSuffix(strings.TrimSpace(kb), " kB"), &n)
					peak = max(peak, n<<10)
				}
			}
			if exited {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		out <- peak
	}()
	return out
}
