package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"

	"github.com/concourse-docker/docker-image-resource/pkg/mountinfo"
	"golang.org/x/sys/unix"
)

// namespace is an OS thread of this process in a private mount namespace.
// Processes started through do inherit the namespace; the thread ends (and
// with the last process in it, the namespace and all its mounts) on close.
type namespace struct {
	id   string // "mnt:[4026532]", to find the processes in it
	reqs chan func()
	done chan struct{}
	mu   sync.Mutex
	shut bool
}

// newNamespace starts the thread, unshares its mount namespace (and its
// network namespace with newNet), makes every mount private (nothing
// propagates to or from the host) and runs setup in it.
func newNamespace(newNet bool, setup func() error) (*namespace, error) {
	n := &namespace{reqs: make(chan func()), done: make(chan struct{})}
	ready := make(chan error, 1)
	onOwnThread(func() {
		defer close(n.done)
		flags := unix.CLONE_NEWNS
		if newNet {
			flags |= unix.CLONE_NEWNET
		}
		if err := unix.Unshare(flags); err != nil {
			ready <- fmt.Errorf("making a private mount namespace (needs root, or a privileged container): %w", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			ready <- fmt.Errorf("making mounts private in the daemon's namespace: %w", err)
			return
		}
		id, err := os.Readlink("/proc/thread-self/ns/mnt")
		if err != nil {
			ready <- fmt.Errorf("reading the daemon's mount namespace: %w", err)
			return
		}
		n.id = id
		if err := setup(); err != nil {
			ready <- err
			return
		}
		ready <- nil
		for f := range n.reqs {
			f()
		}
		// Returning without UnlockOSThread ends the thread: it must never
		// run other goroutines from inside this namespace.
	})
	if err := <-ready; err != nil {
		<-n.done
		return nil, err
	}
	return n, nil
}

// onOwnThread runs f in a new goroutine locked to an OS thread that is not
// the main thread, and never unlocks it, so the thread ends with f. Go never
// ends the main thread (it would stay in the namespace, and /proc/self shows
// the main thread's view).
func onOwnThread(f func()) {
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			f()
			return
		}
		// On the main thread: holding it here makes the next goroutine
		// start on another thread.
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			close(locked)
			f()
		}()
		<-locked
		runtime.UnlockOSThread()
	}()
}

// do runs f on the namespace thread and returns its error.
func (n *namespace) do(f func() error) error {
	n.mu.Lock()
	if n.shut {
		n.mu.Unlock()
		return errors.New("the daemon's mount namespace is closed")
	}
	errc := make(chan error, 1)
	n.reqs <- func() { errc <- f() }
	n.mu.Unlock()
	return <-errc
}

// close ends the thread. Children started through do get their Pdeathsig
// then: stop them first.
func (n *namespace) close() {
	n.mu.Lock()
	if !n.shut {
		n.shut = true
		close(n.reqs)
	}
	n.mu.Unlock()
	<-n.done
}

// privatize lays a tmpfs over dir that re-binds every entry of dir except
// those skip names, so what is written to dir from inside the namespace
// stays there. stage is an empty folder to build the tmpfs in. A missing
// dir is created (that only happens in containers).
func privatize(dir, stage string, skip func(name string) bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("making %s: %w", dir, err)
	}
	if err := os.MkdirAll(stage, 0o700); err != nil {
		return fmt.Errorf("making %s: %w", stage, err)
	}
	if err := unix.Mount("dockerd-private", stage, "tmpfs", 0, "mode=755"); err != nil {
		return fmt.Errorf("mounting a tmpfs for a private %s: %w", dir, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("listing %s: %w", dir, err)
	}
	for _, e := range ents {
		name := e.Name()
		if skip != nil && skip(name) {
			continue
		}
		src, dst := filepath.Join(dir, name), filepath.Join(stage, name)
		switch {
		case e.Type()&os.ModeSymlink != 0:
			target, err := os.Readlink(src)
			if err != nil {
				return fmt.Errorf("reading link %s: %w", src, err)
			}
			if err := os.Symlink(target, dst); err != nil {
				return fmt.Errorf("copying link %s: %w", src, err)
			}
		case e.IsDir():
			if err := os.Mkdir(dst, 0o755); err != nil {
				return fmt.Errorf("making %s: %w", dst, err)
			}
			if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
				return fmt.Errorf("binding %s: %w", src, err)
			}
		default: // files, sockets, fifos, devices: bind onto an empty file
			f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return fmt.Errorf("making %s: %w", dst, err)
			}
			f.Close()
			if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("binding %s: %w", src, err)
			}
		}
	}
	if err := unix.Mount(stage, dir, "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("moving the private %s into place: %w", dir, err)
	}
	return nil
}

// privateRunSkip hides what dockerd and containerd keep in /run: their
// fixed paths (/run/docker/plugins, /run/containerd/s shim sockets) land in
// the private tmpfs, and a system containerd's socket stays invisible.
func privateRunSkip(name string) bool {
	switch name {
	case "docker", "docker.sock", "docker.pid", "containerd":
		return true
	}
	return false
}

// bindCertsDir makes certs (the daemon's own folder) appear at
// /etc/docker/certs.d, the only place dockerd reads registry certificates
// from, without creating or changing anything under the real /etc.
func bindCertsDir(certs, stageRoot string) error {
	const etcDocker = "/etc/docker"
	if fi, err := os.Stat(etcDocker); err == nil && fi.IsDir() {
		skip := func(name string) bool { return name == "certs.d" }
		if err := privatize(etcDocker, filepath.Join(stageRoot, "etc-docker"), skip); err != nil {
			return err
		}
	} else {
		if err := privatize("/etc", filepath.Join(stageRoot, "etc"), nil); err != nil {
			return err
		}
		if err := os.Mkdir(etcDocker, 0o755); err != nil {
			return fmt.Errorf("making %s in the private /etc: %w", etcDocker, err)
		}
	}
	target := filepath.Join(etcDocker, "certs.d")
	if err := os.Mkdir(target, 0o755); err != nil {
		return fmt.Errorf("making %s in the private %s: %w", target, etcDocker, err)
	}
	if err := unix.Mount(certs, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding %s at %s: %w", certs, target, err)
	}
	return nil
}

// bindHosts lays a copy of /etc/hosts with extra entries over /etc/hosts in
// the daemon's namespace; nothing to do without entries.
func bindHosts(extra map[string]string, file string) error {
	if len(extra) == 0 {
		return nil
	}
	// A bind mount needs a file to cover; creating one could reach the
	// host's real /etc, so a missing /etc/hosts is an error.
	b, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return fmt.Errorf("reading /etc/hosts: %w", err)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	names := make([]string, 0, len(extra))
	for n := range extra {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b = fmt.Appendf(b, "%s %s\n", extra[n], n)
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		return fmt.Errorf("writing the daemon's hosts file: %w", err)
	}
	if err := unix.Mount(file, "/etc/hosts", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding %s at /etc/hosts: %w", file, err)
	}
	return nil
}

// unmountAll lazily unmounts everything at or below dir, as seen by this
// thread. Mounts made in the daemon's namespace never show up here; this
// catches anything that did propagate.
func unmountAll(dir string) error {
	return mountinfo.UnmountAll("/proc/thread-self/mountinfo", dir)
}
