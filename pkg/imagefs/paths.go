package imagefs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
)

// Whiteout markers of the OCI/docker layer format.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// maxSymlinks bounds symlink resolution, as the kernel does (ELOOP).
const maxSymlinks = 255

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
	// realDirs holds symlink-free paths known to be directories; resolved
	// caches name -> result. Both are dropped whenever a directory or
	// symlink is removed, since a removal can change any resolution.
	realDirs map[string]bool
	resolved map[string]string
	// onCreate is called for directories resolveDir creates.
	onCreate func(rel string)
	// skipDev makes a path through the top-level dev an errSkipDev.
	skipDev bool
}

func newResolver(root *os.Root, skipDev bool) *resolver {
	return &resolver{root: root, realDirs: map[string]bool{}, resolved: map[string]string{}, skipDev: skipDev}
}

func (r *resolver) forget() {
	r.realDirs = map[string]bool{}
	r.resolved = map[string]string{}
}

// resolveDir returns the symlink-free path of directory p. Missing
// components are created (mode 0755) when create is set, else the result
// is an fs.ErrNotExist error. A non-directory on the way is an error.
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
	for len(rest) > 0 {
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
			continue
		case err != nil:
			return "", fmt.Errorf("look up %s: %w", cur, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			links++
			if links > maxSymlinks {
				return "", fmt.Errorf("resolve %s: too many levels of symbolic links", p)
			}
			target, err := r.root.Readlink(cur)
			if err != nil {
				return "", fmt.Errorf("read symlink %s: %w", cur, err)
			}
			if strings.HasPrefix(target, "/") {
				out = out[:0]
			}
			rest = append(strings.Split(target, "/"), rest...)
			continue
		case !fi.IsDir():
			return "", fmt.Errorf("%s is not a directory", cur)
		}
		r.realDirs[cur] = true
		out = append(out, c)
	}
	res := path.Join(out...)
	r.resolved[p] = res
	return res, nil
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
			r.onCreate(cur)
		}
		r.realDirs[cur] = true
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
