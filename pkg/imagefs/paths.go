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

// What a layer entry's name means under the whiteout conventions.
const (
	nameEntry    = iota // an entry to create
	nameSkipped         // aufs bookkeeping, or a whiteout that names nothing
	nameOpaque          // .wh..wh..opq: dir's lower-layer contents are hidden
	nameWhiteout        // .wh.NAME: dir/NAME of lower layers is hidden
)

// classifyName says what the cleaned entry name stands for; dir is its
// parent ("" for the root) and target, for a whiteout, the hidden name's
// last component. The extraction and rootfs.tar both decide through it.
func classifyName(name string) (kind int, dir, target string) {
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	switch {
	case hasMetaComponent(dir):
		return nameSkipped, dir, ""
	case base == whiteoutOpaque:
		return nameOpaque, dir, ""
	case strings.HasPrefix(base, whiteoutMeta):
		return nameSkipped, dir, ""
	case strings.HasPrefix(base, whiteoutPrefix):
		t := strings.TrimPrefix(base, whiteoutPrefix)
		if t == "" || t == "." || t == ".." {
			return nameSkipped, dir, ""
		}
		return nameWhiteout, dir, t
	}
	return nameEntry, dir, ""
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
	w := walk{r: r, p: p, create: create, rest: strings.Split(p, "/")}
	for {
		w.settleLinks()
		if len(w.rest) == 0 {
			break
		}
		c := w.rest[0]
		w.rest = w.rest[1:]
		if err := w.step(c); err != nil {
			return "", err
		}
	}
	res := path.Join(w.out...)
	cache(&r.resolved, p, res)
	return res, nil
}

// walk is one resolveDir under way: out is the symlink-free path so far,
// rest the components still to walk (a followed symlink's target first).
type walk struct {
	r      *resolver
	p      string
	create bool
	out    []string
	rest   []string
	links  int       // symlinks followed so far
	open   []pending // symlinks whose targets are being walked
}

// settleLinks remembers what the symlinks whose targets are fully walked
// resolve to: where the walk is now.
func (w *walk) settleLinks() {
	for len(w.open) > 0 && len(w.rest) == w.open[len(w.open)-1].restLen {
		o := w.open[len(w.open)-1]
		w.open = w.open[:len(w.open)-1]
		cache(&w.r.links, o.link, linkTarget{dir: path.Join(w.out...), links: w.links - o.links})
	}
}

// step walks one component c. Nothing resolves above the root: ".." there
// stays at the root, and os.Root backs every lookup.
func (w *walk) step(c string) error {
	switch c {
	case "", ".":
		return nil
	case "..":
		if len(w.out) > 0 {
			w.out = w.out[:len(w.out)-1]
		}
		return nil
	}
	if w.r.skipDev && len(w.out) == 0 && c == "dev" {
		return errSkipDev
	}
	cur := path.Join(path.Join(w.out...), c)
	if w.r.realDirs[cur] {
		w.out = append(w.out, c)
		return nil
	}
	if t, ok := w.r.links[cur]; ok {
		if w.links += t.links; w.links > maxSymlinks {
			return errLoop(w.p)
		}
		w.out = splitPath(t.dir)
		return nil
	}
	fi, err := w.r.root.Lstat(cur)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return w.createMissing(cur, c)
	case err != nil:
		return fmt.Errorf("look up %s: %w", cur, err)
	case fi.Mode()&fs.ModeSymlink != 0:
		return w.follow(cur)
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", cur)
	}
	cache(&w.r.realDirs, cur, true)
	w.out = append(w.out, c)
	return nil
}

// createMissing creates the missing directory cur (component c) and, as
// below a new directory everything is new, the run of plain names after it,
// from one handle each instead of from the root (a chain of n components
// would cost n² lookups).
func (w *walk) createMissing(cur, c string) error {
	if !w.create {
		return fmt.Errorf("directory %s: %w", cur, fs.ErrNotExist)
	}
	comps := append([]string{c}, w.rest...)
	n, err := w.r.createRun(path.Join(w.out...), comps)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("create directory %s: nothing to create", cur)
	}
	w.out, w.rest = append(w.out, comps[:n]...), comps[n:]
	// The run may reach past a symlink's target into what follows it: such
	// links are not remembered.
	w.open = nil
	return nil
}

// follow puts the target of the symlink cur at the front of the walk: an
// absolute one restarts at the root.
func (w *walk) follow(cur string) error {
	if w.links++; w.links > maxSymlinks {
		return errLoop(w.p)
	}
	target, err := w.r.root.Readlink(cur)
	if err != nil {
		return fmt.Errorf("read symlink %s: %w", cur, err)
	}
	w.open = append(w.open, pending{link: cur, restLen: len(w.rest), links: w.links - 1})
	if strings.HasPrefix(target, "/") {
		w.out = w.out[:0]
	}
	w.rest = append(strings.Split(target, "/"), w.rest...)
	return nil
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
