package daemon

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// settleTimeout bounds how long Stop waits, before it sends dockerd
// SIGTERM, for the containers to die and for dockerd to finish the API
// requests still open. dockerd 24 and later wait up to 5 s after their own
// shutdown for open HTTP requests (moby#45314), then log "Error shutting
// down http server"; 20.10 only closes its listeners. A request the put
// has closed stays open in dockerd until its handler notices and returns:
// for a build, once the RUN step's process is gone, within a few hundred
// milliseconds; for a docker save stream, at its next write.
const settleTimeout = 2 * time.Second

// waitsForRequests reports whether a dockerd of this version may wait for
// open API requests when it stops: any after 20.10 (moby#45314 came with
// 24.0; 23.x is treated alike), and one of unknown version.
func waitsForRequests(version string) bool {
	major, _, _ := strings.Cut(version, ".")
	n, err := strconv.Atoi(major)
	return err != nil || n > 20
}

// settle readies dockerd for SIGTERM. It kills every process in the
// daemon's cgroups — containers and RUN steps are garbage by now, and
// killing them spares dockerd's shutdown their stop timeouts — again and
// again, since a RUN step BuildKit was starting when its build was
// cancelled may appear only now, and a build request does not end while
// its step runs. It returns when the cgroups are empty and dockerd holds
// no API connection (when its shutdown would wait for one), or after
// settleTimeout.
func (d *Daemon) settle() {
	sock := strings.TrimPrefix(d.host, "unix://")
	alive := d.dockerd.proc != nil && !d.dockerd.proc.Exited() && waitsForRequests(d.version)
	start := time.Now()
	killed, first := map[int]bool{}, -1
	for {
		var pids []int
		if d.cgroupParent != "" {
			_ = d.inNS(func() error {
				pids = cgroupPids(cgroupMount, d.cgroupParent)
				return nil
			})
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killed[pid] = true
		}
		conns := 0
		if alive {
			n, err := apiConns(d.dockerd.proc.Pid(), sock)
			if err != nil {
				d.log.Debugf("cannot see dockerd's API connections: %v", err)
				alive = false
			}
			conns = n
		}
		if first < 0 {
			first = conns
		}
		took := time.Since(start)
		if len(pids) == 0 && conns == 0 {
			if first > 0 || len(killed) > 0 {
				d.log.Debugf("before stopping dockerd: %s open, %s killed; settled in %s",
					count(first, "API request", "API requests"), count(len(killed), "container process", "container processes"), took.Round(time.Millisecond))
			}
			return
		}
		if took >= settleTimeout {
			if conns > 0 {
				d.log.Warnf("dockerd still has %s open %s after the put closed them; its shutdown may wait up to 5 s for them",
					count(conns, "API request", "API requests"), settleTimeout)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// apiConns counts the connections dockerd has accepted on its API socket
// sock and not closed yet, from /proc/<pid>/net/unix (dockerd's network
// namespace): an accepted socket carries the listener's path, in state
// connected (03), and stays listed after the client closed its end until
// dockerd closes its own.
func apiConns(pid int, sock string) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/unix", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode Path
		fields := strings.Fields(sc.Text())
		if len(fields) == 8 && fields[5] == "03" && fields[7] == sock {
			n++
		}
	}
	return n, sc.Err()
}

func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
