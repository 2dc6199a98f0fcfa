package imagefs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Whiteout markers of the OCI/docker layer format.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// maxSymlinks bounds the symlinks one path resolution may follow, nested
// ones included: Linux's MAXSYMLINKS (ELOOP beyond it), so an image whose
// paths the kernel cannot resolve fails here too.
const maxSymlinks = 40

// maxCached bounds each of the resolver's caches: they are dropped when
// they reach it, so memory does not grow with the number of directories.
const maxCached = 1 << 14

var errSkipDev = errors.New("inside the top-level dev directory")

// maxNameLen is Linux's PATH_MAX: docker, which extracts layers through
// the kernel, cannot create longer names either. The bound also keeps one
// entry's cost in check: every lookup walks the path a component at a time,
// so a name of n components costs n² system calls.
const maxNameLen = 4096

// cleanName turns a tar entry name into a path relative to the image root
// ("" is the root itself). A leading "/" is dropped, as docker does; a name
// that climbs out of the root with "..", or is longer than PATH_MAX, is
// refused.
func cleanName(name string) (string, error) {
	if len(name) >= maxNameLen {
		return "", fmt.Errorf("tar entry name of %d bytes is longer than Linux allows (PATH_MAX %d): refused", len(name), maxNameLen)
	}
	c := path.Clean(strings.TrimLeft(name, "/"))
	if c == "." {
		return "", nil
	}
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("tar entry %q points outside the image root: refused", name)
	}
	return c, nil
}

// isDev reports whether p (relative, cleaned) is the top-level dev
// directory or inside it: rootfs/ leaves it out, the runtime provides /dev.
func isDev(p string) bool {
	return p == "dev" || strings.HasPrefix(p, "dev/")
}

// hasMetaComponent reports aufs bookkeeping paths such as .wh..wh.plnk/…
func hasMetaComponent(p string) bool {
	for _, c := range strings.Split(p, "/") {
		if strings.HasPrefix(c, whiteoutMeta) {
			return true
		}
	}
	return false
}

// resolver maps paths inside root to paths without symlinks, resolving
// symlinks as if root were "/" (what docker and containerd do when they
// apply a layer): an absolute target restarts at root and ".." stops at
// root, so nothing resolves outside it. os.Root backs every lookup, so even
// a bug here cannot reach outside the tree.
type resolver struct {
	root *os.Root
	// realDirs holds symlink-free paths known to be directories, links the
	// symlink-free paths of symlinks already followed with what they
	// resolve to, resolved caches name -> result. All are dropped whenever
	// a directory or symlink is removed, since a removal can change any
	// resolution, and each is dropped when it reaches maxCached.
	realDirs map[string]bool
	links    map[string]linkTarget
	resolved map[string]string
	// onCreate is called for directories resolveDir creates.
	onCreate func(rel string) error
	// skipDev makes a path through the top-level dev an errSkipDev.
	skipDev bool
}

// linkTarget is what a symlink resolved to: a symlink-free directory, and
// how many symlinks that took (itself included), which count again towards
// maxSymlinks whenever the link is passed.
type linkTarget struct {
	dir   string
	links int
}

func newResolver(root *os.Root, skipDev bool) *resolver {
	r := &resolver{root: root, skipDev: skipDev}
	r.forget()
	return r
}

func (r *resolver) forget() {
	r.realDirs = map[string]bool{}
	r.links = map[string]linkTarget{}
	r.resolved = map[string]string{}
}

// errLoop is a path that needs more than maxSymlinks symlinks.
func errLoop(p string) error {
	return fmt.Errorf("resolve %s: more than %d symbolic links on the way: %w", shortName(p), maxSymlinks, unix.ELOOP)
}

// pending is a symlink being followed: its target's components are at the
// front of the walk's rest until len(rest) is back to restLen.
type pending struct {
	link    string
	restLen int
	links   int // links followed before it
}

// resolveDir returns the symlink-free path of directory p. Missing
// components are created (mode 0755) when create is set, else the result
// is an fs.ErrNotExist error. A non-directory on the way is an error. A
// symlink met again is not followed again: its resolution is remembered,
// so a chain of n links costs n lookups once, not for every entry below it.
func (r *resolver) resolveDir(p string, create bool) (string, error) {
	if p == "" || p == "." {
		return "", nil
	}
	if res, ok := r.resolved[p]; ok {
		return res, nil
	}
	var out []string
	rest := strings.Split(p, "/")
	links := 0
	var open []pending
	for {
		// Symlinks whose targets are fully walked resolve to where the
		// walk is now.
		for len(open) > 0 && len(rest) == open[len(open)-1].restLen {
			o := open[len(open)-1]
			open = open[:len(open)-1]
			cache(&r.links, o.link, linkTarget{dir: path.Join(out...), links: links - o.links})
		}
		if len(rest) == 0 {
			break
		}
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			continue
		}
		if r.skipDev && len(out) == 0 && c == "dev" {
			return "", errSkipDev
		}
		cur := path.Join(path.Join(out...), c)
		if r.realDirs[cur] {
			out = append(out, c)
			continue
		}
		if t, ok := r.links[cur]; ok {
			if links += t.links; links > maxSymlinks {
				return "", errLoop(p)
			}
			out = splitPath(t.dir)
			continue
		}
		fi, err := r.root.Lstat(cur)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if !create {
				return "", fmt.Errorf("directory %s: %w", cur, fs.ErrNotExist)
			}
			// Below a new directory everything is new: create the run of
			// plain names from one handle each instead of from the root
			// (a chain of n components would cost n² lookups).
			comps := append([]string{c}, rest...)
			n, err := r.createRun(path.Join(out...), comps)
			if err != nil {
				return "", err
			}
			if n == 0 {
				return "", fmt.Errorf("create directory %s: nothing to create", cur)
			}
			out, rest = append(out, comps[:n]...), comps[n:]
			// The run may reach past a symlink's target into what follows
			// it: such links are not remembered.
			open = nil
			continue
		case err != nil:
			return "", fmt.Errorf("look up %s: %w", cur, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			if links++; links > maxSymlinks {
				return "", errLoop(p)
			}
			target, err := r.root.Readlink(cur)
			if err != nil {
				return "", fmt.Errorf("read symlink %s: %w", cur, err)
			}
			open = append(open, pending{link: cur, restLen: len(rest), links: links - 1})
			if strings.HasPrefix(target, "/") {
				out = out[:0]
			}
			rest = append(strings.Split(target, "/"), rest...)
			continue
		case !fi.IsDir():
			return "", fmt.Errorf("%s is not a directory", cur)
		}
		cache(&r.realDirs, cur, true)
		out = append(out, c)
	}
	res := path.Join(out...)
	cache(&r.resolved, p, res)
	return res, nil
}

// cache stores k in *m, starting *m afresh when it is full.
func cache[V any](m *map[string]V, k string, v V) {
	if len(*m) >= maxCached {
		*m = map[string]V{}
	}
	(*m)[k] = v
}

func splitPath(p string) []string {
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// createRun creates the leading plain names of comps as a chain of
// directories under parent, which must exist, and returns how many it
// created (at least one, or an error).
func (r *resolver) createRun(parent string, comps []string) (int, error) {
	dir := r.root
	if parent != "" {
		sub, err := r.root.OpenRoot(parent)
		if err != nil {
			return 0, fmt.Errorf("open directory %s: %w", parent, err)
		}
		dir = sub
	}
	defer func() {
		if dir != r.root {
			dir.Close()
		}
	}()
	cur := parent
	for i, c := range comps {
		if c == "" || c == "." || c == ".." || (r.skipDev && cur == "" && c == "dev") {
			return i, nil
		}
		cur = path.Join(cur, c)
		if err := dir.Mkdir(c, 0o755); err != nil {
			return i, fmt.Errorf("create directory %s: %w", cur, err)
		}
		if r.onCreate != nil {
			if err := r.onCreate(cur); err != nil {
				return i, err
			}
		}
		cache(&r.realDirs, cur, true)
		if i == len(comps)-1 {
			return i + 1, nil
		}
		next, err := dir.OpenRoot(c)
		if err != nil {
			return i + 1, fmt.Errorf("open directory %s: %w", cur, err)
		}
		if dir != r.root {
			dir.Close()
		}
		dir = next
	}
	return len(comps), nil
}

// resolveFile resolves the parent of p and keeps its last component as is
// (never followed), returning the symlink-free parent and the base name.
func (r *resolver) resolveFile(p string, create bool) (dir, base string, err error) {
	d, b := path.Split(p)
	dir, err = r.resolveDir(strings.TrimSuffix(d, "/"), create)
	if err != nil {
		return "", "", err
	}
	if r.skipDev && dir == "" && b == "dev" {
		return "", "", errSkipDev
	}
	return dir, b, nil
}
