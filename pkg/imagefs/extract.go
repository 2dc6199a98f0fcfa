package imagefs

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/ctxio"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// ExtractOptions controls ExtractRootfs.
type ExtractOptions struct {
	// Chown gives files the uid/gid recorded in the layers. Only root may do
	// that: set it to os.Geteuid() == 0.
	Chown bool
	// Log receives one line per layer; nil discards.
	Log *logrus.Entry
}

// ExtractRootfs applies the layers of img in order into dest, the way a
// container runtime would, with these rules:
//   - whiteouts (.wh.NAME) delete NAME from lower layers; an opaque marker
//     (.wh..wh..opq) empties its directory of lower-layer content;
//   - regular files, directories, symlinks and hardlinks (also to files of
//     earlier layers) are created with their mode (setuid/setgid/sticky
//     included), mtime, file xattrs where allowed, and owner when o.Chown;
//   - device nodes and fifos are skipped, and the top-level dev directory is
//     left out entirely (the runtime provides /dev);
//   - an entry whose name climbs out of the root with ".." is refused (an
//     error); a leading "/" counts from the root; symlinks met on the way to
//     an entry resolve inside dest as if it were "/" (like docker, whose
//     layer apply runs chrooted), so nothing is written outside dest;
//   - a hardlink must point at an existing non-directory inside the tree.
//
// It extracts into a temporary sibling of dest and renames it at the end,
// so a failure never leaves a half-written dest. dest must not exist, or be
// an empty directory.
func ExtractRootfs(ctx context.Context, img v1.Image, dest string, o ExtractOptions) (err error) {
	log := o.Log
	if log == nil {
		log = logging.Discard()
	}
	if err := checkDest(dest); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".tmp-")
	if err != nil {
		return fmt.Errorf("create temporary rootfs: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()

	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("list layers: %w", err)
	}
	x, err := newExtractor(tmp, filepath.Dir(dest), o.Chown, log)
	if err != nil {
		return err
	}
	defer x.close()

	start := time.Now()
	for i, l := range layers {
		dg, err := l.Digest()
		if err != nil {
			return fmt.Errorf("layer %d: %w", i+1, err)
		}
		ls := time.Now()
		n, err := x.applyLayer(ctx, l)
		if err != nil {
			return fmt.Errorf("extract layer %s: %w", dg, err)
		}
		log.Infof("extracted layer %d/%d %s (%d entries) in %s", i+1, len(layers), logging.ShortDigest(dg.String()), n, time.Since(ls).Round(time.Millisecond))
	}
	if err := x.finish(); err != nil {
		return err
	}
	if x.skipped > 0 {
		log.Infof("skipped %d device nodes, fifos and /dev entries", x.skipped)
	}
	if x.xattrFailures > 0 {
		log.Warnf("could not set %d extended attributes (last error: %v)", x.xattrFailures, x.xattrErr)
	}
	x.close()
	// os.Rename refuses to replace a directory; Remove only takes an empty one.
	if err := os.Remove(dest); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replace empty destination: %w", err)
	}
	if err := os.Rename(tmp, dest); err != nil {
		return fmt.Errorf("move rootfs into place: %w", err)
	}
	log.Infof("extracted %d layers into %s in %s", len(layers), dest, time.Since(start).Round(time.Millisecond))
	return nil
}

// checkDest accepts a missing dest or an empty directory (rename replaces it).
func checkDest(dest string) error {
	ents, err := os.ReadDir(dest)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check destination %s: %w", dest, err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("destination %s is not empty", dest)
	}
	return nil
}

type dirMeta struct {
	mode  uint32
	atime time.Time
	mtime time.Time // zero: leave as is
}

// dirRecord encodes a directory's metadata for the sorter: sequence number,
// mode, times, then the path. Records sort by path, deepest (and, for one
// path, latest) first.
func dirRecord(seq uint64, p string, m dirMeta) []byte {
	b := make([]byte, 0, 41+len(p))
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint32(b, m.mode)
	b = appendTime(b, m.atime)
	b = appendTime(b, m.mtime)
	return append(b, p...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, make([]byte, 14)...)
	}
	b = append(b, 1)
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix()))
	b = binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
	return append(b, 0)
}

func readTime(b []byte) time.Time {
	if b[0] == 0 {
		return time.Time{}
	}
	return time.Unix(int64(binary.BigEndian.Uint64(b[1:9])), int64(binary.BigEndian.Uint32(b[9:13])))
}

func decodeDirRecord(b []byte) (seq uint64, p string, m dirMeta) {
	return binary.BigEndian.Uint64(b), string(b[40:]), dirMeta{mode: binary.BigEndian.Uint32(b[8:]), atime: readTime(b[12:26]), mtime: readTime(b[26:40])}
}

func dirRecordLess(a, b []byte) bool {
	if c := bytes.Compare(a[40:], b[40:]); c != 0 {
		return c > 0
	}
	return binary.BigEndian.Uint64(a) > binary.BigEndian.Uint64(b)
}

type extractor struct {
	root  *os.Root
	res   *resolver
	chown bool
	log   *logrus.Entry
	buf   []byte

	// Directory modes and times are applied at the end: a read-only
	// directory must stay writable while later entries go into it, and
	// writing entries changes a directory's mtime. Every directory the
	// extraction creates or gets a header for adds a record; the latest
	// for a path wins, and records of directories gone since are skipped.
	dirs   *sorter
	dirSeq uint64
	// unpacked holds what the current layer created, so an opaque marker
	// or whiteout spares it (they only hide lower layers).
	unpacked *nameSet

	// One cached directory handle: entries arrive grouped by directory.
	cachedDir     string
	cachedDirFile *os.File

	skipped       int
	xattrFailures int
	xattrErr      error

	// diff makes this the extraction of one layer into its own overlay2
	// diff directory (ExtractDiff): nothing is skipped, whiteouts are
	// recorded in overlay's format instead of applied.
	diff bool
}

// newExtractor extracts into dir; its temporary files go to spillDir.
func newExtractor(dir, spillDir string, chown bool, log *logrus.Entry) (*extractor, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open rootfs directory: %w", err)
	}
	x := &extractor{
		root:     root,
		chown:    chown,
		log:      log,
		buf:      make([]byte, 256<<10),
		dirs:     newSorter(spillDir, dirRecordLess),
		unpacked: newNameSet(spillDir),
	}
	x.res = newResolver(root, true)
	x.res.onCreate = func(rel string) error { return x.addDir(rel, dirMeta{mode: 0o755}) }
	if err := x.addDir("", dirMeta{mode: 0o755}); err != nil {
		x.close()
		return nil, err
	}
	return x, nil
}

func (x *extractor) addDir(rel string, m dirMeta) error {
	x.dirSeq++
	return x.dirs.Add(dirRecord(x.dirSeq, rel, m))
}

func (x *extractor) close() {
	x.dropDirCache()
	if x.root != nil {
		x.root.Close()
		x.root = nil
	}
	x.dirs.Close()
	x.unpacked.Close()
}

func (x *extractor) dropDirCache() {
	if x.cachedDirFile != nil {
		x.cachedDirFile.Close()
		x.cachedDirFile = nil
	}
}

// dirFD returns a descriptor for the symlink-free directory rel; entries are
// then created with *at calls on a single name, which cannot traverse.
func (x *extractor) dirFD(rel string) (int, error) {
	if x.cachedDirFile != nil && x.cachedDir == rel {
		return int(x.cachedDirFile.Fd()), nil
	}
	x.dropDirCache()
	f, err := x.openDir(rel)
	if err != nil {
		return -1, err
	}
	x.cachedDir, x.cachedDirFile = rel, f
	return int(f.Fd()), nil
}

func (x *extractor) openDir(rel string) (*os.File, error) {
	if rel == "" {
		rel = "."
	}
	f, err := x.root.OpenFile(rel, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open directory %s: %w", rel, err)
	}
	return f, nil
}

func (x *extractor) applyLayer(ctx context.Context, l v1.Layer) (int, error) {
	rc, err := openLayer(ctx, l)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return x.applyStream(ctx, rc)
}

// applyStream applies one layer's uncompressed tar stream.
func (x *extractor) applyStream(ctx context.Context, rc io.Reader) (int, error) {
	x.unpacked.Reset()
	tr := tar.NewReader(rc)
	n := 0
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, fmt.Errorf("read tar: %w", err)
		}
		n++
		if err := x.entry(hdr, tr); err != nil {
			return n, fmt.Errorf("%s: %w", shortName(hdr.Name), err)
		}
	}
	// Read to the end so a verifying reader checks the digest.
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return n, fmt.Errorf("read layer: %w", err)
	}
	return n, nil
}

// entry applies one tar entry of the current layer.
func (x *extractor) entry(hdr *tar.Header, r io.Reader) error {
	if isFormatHeader(hdr.Typeflag) {
		return nil
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if !x.diff && isDev(name) {
		x.skipped++
		return nil
	}
	switch kind, dir, target := classifyName(name); {
	case kind == nameSkipped:
		return nil
	case kind == nameOpaque && x.diff:
		return x.markOpaque(dir)
	case kind == nameOpaque:
		return x.opaque(dir)
	case kind == nameWhiteout && x.diff:
		return x.whiteoutDevice(dir, target, hdr)
	case kind == nameWhiteout:
		return x.whiteout(dir, target)
	}
	if name == "" {
		if x.diff {
			return nil // dockerd's untar skips the root's own entry
		}
		return x.rootEntry(hdr)
	}
	pdir, base, err := x.res.resolveFile(name, true)
	if errors.Is(err, errSkipDev) {
		x.skipped++
		return nil
	}
	if err != nil {
		return err
	}
	fd, err := x.makeRoom(pdir, base, hdr.Typeflag == tar.TypeDir)
	if err != nil {
		return err
	}
	full := path.Join(pdir, base)
	if !x.diff {
		// Only a rootfs's whiteouts ask what this layer made.
		if err := x.unpacked.Add(full); err != nil {
			return err
		}
	}
	if err := x.create(fd, name, full, base, hdr, r); err != nil {
		return err
	}
	if x.diff && !isRegular(hdr.Typeflag) {
		x.setXattrs(fd, full, base, hdr) // regular files got theirs in regular
	}
	return nil
}

// isFormatHeader is a tar-format header entry (PAX, GNU long names): the tar
// reader has already applied it to the next entry.
func isFormatHeader(typ byte) bool {
	switch typ {
	case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
		return true
	}
	return false
}

// rootEntry applies the root directory's own entry: only its metadata
// matters, and only when it is a directory.
func (x *extractor) rootEntry(hdr *tar.Header) error {
	if hdr.Typeflag != tar.TypeDir {
		return nil
	}
	if err := x.addDir("", dirMeta{mode: uint32(hdr.Mode) & 0o7777, atime: hdr.AccessTime, mtime: hdr.ModTime}); err != nil {
		return err
	}
	if x.chown {
		if err := x.root.Lchown(".", hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("chown root directory: %w", err)
		}
	}
	return nil
}

// makeRoom removes whatever is at pdir/base, unless a directory (isDir)
// meets a directory, and returns a descriptor of pdir to create it in.
func (x *extractor) makeRoom(pdir, base string, isDir bool) (int, error) {
	fd, err := x.dirFD(pdir)
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	err = unix.Fstatat(fd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil:
		if st.Mode&unix.S_IFMT == unix.S_IFDIR && isDir {
			return fd, nil
		}
		if err := x.remove(pdir, base); err != nil {
			return -1, err
		}
		// Removing a directory or symlink drops the cached descriptor.
		return x.dirFD(pdir)
	case !errors.Is(err, unix.ENOENT):
		return -1, fmt.Errorf("stat %s: %w", path.Join(pdir, base), err)
	}
	return fd, nil
}

// create makes the entry at base in the directory fd (full is its path in
// the tree, name the entry's own, for logs).
func (x *extractor) create(fd int, name, full, base string, hdr *tar.Header, r io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.mkdir(fd, full, base, hdr)
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeCont:
		return x.regular(fd, full, base, hdr, r)
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, fd, base); err != nil {
			return fmt.Errorf("create symlink %s: %w", full, err)
		}
		return x.meta(fd, full, base, hdr, false)
	case tar.TypeLink:
		return x.hardlink(fd, full, base, hdr)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if x.diff {
			return x.mknod(fd, full, base, hdr)
		}
		x.skipped++
		return nil
	default:
		x.log.Warnf("skipping %s: unsupported tar entry type %q", name, hdr.Typeflag)
		return nil
	}
}

// mkdir creates a directory entry (or keeps the one there) and records its
// mode and times for finish.
func (x *extractor) mkdir(fd int, full, base string, hdr *tar.Header) error {
	if err := unix.Mkdirat(fd, base, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("create directory %s: %w", full, err)
	}
	if err := x.addDir(full, dirMeta{mode: uint32(hdr.Mode) & 0o7777, atime: hdr.AccessTime, mtime: hdr.ModTime}); err != nil {
		return err
	}
	if x.chown {
		if err := unix.Fchownat(fd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown %s: %w", full, err)
		}
	}
	return nil
}

func (x *extractor) regular(dirfd int, full, base string, hdr *tar.Header, r io.Reader) error {
	fd, err := unix.Openat(dirfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", full, err)
	}
	f := os.NewFile(uintptr(fd), full)
	defer f.Close()
	if isSparse(hdr) {
		if err := checkSparse(full, hdr); err != nil {
			return err
		}
		if err := writeSparse(f, r, hdr.Size, x.buf); err != nil {
			return fmt.Errorf("write %s: %w", full, err)
		}
		// Hide ReadFrom: os.File's would allocate a buffer per file.
	} else if _, err := io.CopyBuffer(struct{ io.Writer }{f}, r, x.buf); err != nil {
		return fmt.Errorf("write %s: %w", full, err)
	}
	// Owner first: chown clears setuid/setgid and file capabilities.
	if x.chown {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("chown %s: %w", full, err)
		}
	}
	if err := unix.Fchmod(fd, uint32(hdr.Mode)&0o7777); err != nil {
		return fmt.Errorf("chmod %s: %w", full, err)
	}
	for k, v := range hdr.PAXRecords {
		if attr, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if err := unix.Fsetxattr(fd, attr, []byte(v), 0); err != nil {
				x.xattrFailures++
				x.xattrErr = fmt.Errorf("%s on %s: %w", attr, full, err)
			}
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", full, err)
	}
	return setTimes(dirfd, base, full, hdr.AccessTime, hdr.ModTime)
}

func (x *extractor) hardlink(dirfd int, full, base string, hdr *tar.Header) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil {
		return err
	}
	if target == "" {
		return fmt.Errorf("hardlink %s to the root directory", full)
	}
	if isDev(target) {
		x.skipped++
		return nil
	}
	tdir, tbase, err := x.res.resolveFile(target, false)
	if errors.Is(err, errSkipDev) {
		x.skipped++
		return nil
	}
	if err != nil {
		return fmt.Errorf("hardlink target %s: %w", hdr.Linkname, err)
	}
	tf, err := x.openDir(tdir)
	if err != nil {
		return fmt.Errorf("hardlink target %s: %w", hdr.Linkname, err)
	}
	defer tf.Close()
	tfd := int(tf.Fd())
	var st unix.Stat_t
	if err := unix.Fstatat(tfd, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("hardlink target %s: %w", hdr.Linkname, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Errorf("hardlink target %s is a directory", hdr.Linkname)
	}
	// flags 0: link the target itself, never what a symlink points to.
	if err := unix.Linkat(tfd, tbase, dirfd, base, 0); err != nil {
		return fmt.Errorf("hardlink %s to %s: %w", full, hdr.Linkname, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return nil
	}
	return x.meta(dirfd, full, base, hdr, true)
}

// meta applies owner, mode (not for symlinks) and times to a created name.
func (x *extractor) meta(dirfd int, full, base string, hdr *tar.Header, chmod bool) error {
	if x.chown {
		if err := unix.Fchownat(dirfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown %s: %w", full, err)
		}
	}
	if chmod {
		if err := unix.Fchmodat(dirfd, base, uint32(hdr.Mode)&0o7777, 0); err != nil {
			return fmt.Errorf("chmod %s: %w", full, err)
		}
	}
	return setTimes(dirfd, base, full, hdr.AccessTime, hdr.ModTime)
}

func setTimes(dirfd int, base, full string, atime, mtime time.Time) error {
	if mtime.IsZero() {
		return nil
	}
	if atime.IsZero() {
		atime = mtime
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	if err := unix.UtimesNanoAt(dirfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times of %s: %w", full, err)
	}
	return nil
}

// remove deletes pdir/base (a whole tree for a directory) and forgets
// whatever was cached about it.
func (x *extractor) remove(pdir, base string) error {
	full := path.Join(pdir, base)
	fi, err := x.root.Lstat(full)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", full, err)
	}
	if fi.Mode().IsRegular() {
		if err := x.root.Remove(full); err != nil {
			return fmt.Errorf("remove %s: %w", full, err)
		}
		return nil
	}
	// A directory or symlink can change how any path resolves. (The
	// records of directories removed here are skipped at the end.)
	x.dropDirCache()
	x.res.forget()
	if err := x.root.RemoveAll(full); err != nil {
		return fmt.Errorf("remove %s: %w", full, err)
	}
	return nil
}

// whiteout removes dir/target unless this layer created it.
func (x *extractor) whiteout(dir, target string) error {
	pdir, err := x.res.resolveDir(dir, false)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errSkipDev) {
		return nil // nothing below to hide
	}
	if err != nil {
		return err
	}
	if pdir == "" && target == "dev" {
		return nil
	}
	full := path.Join(pdir, target)
	if ok, err := x.unpacked.Has(full); err != nil || ok {
		return err // whiteouts hide lower layers only
	}
	return x.remove(pdir, target)
}

// opaque removes everything in dir that this layer did not create.
func (x *extractor) opaque(dir string) error {
	pdir, err := x.res.resolveDir(dir, true)
	if errors.Is(err, errSkipDev) {
		return nil
	}
	if err != nil {
		return err
	}
	// A batch of names at a time, whatever the directory holds; a pass
	// that removed something is followed by another, in case removing
	// made the listing skip names.
	for {
		f, err := x.openDir(pdir)
		if err != nil {
			return err
		}
		removed, err := x.opaqueBatches(f, pdir)
		f.Close()
		if err != nil || !removed {
			return err
		}
	}
}

func (x *extractor) opaqueBatches(f *os.File, pdir string) (removed bool, err error) {
	for {
		names, err := f.Readdirnames(1024)
		if err == io.EOF {
			return removed, nil
		}
		if err != nil {
			return removed, fmt.Errorf("list %s: %w", pdir, err)
		}
		for _, n := range names {
			if ok, err := x.unpacked.Has(path.Join(pdir, n)); err != nil || ok {
				if err != nil {
					return removed, err
				}
				continue
			}
			if err := x.remove(pdir, n); err != nil {
				return removed, err
			}
			removed = true
		}
	}
}

// finish applies directory modes and times, deepest first so a read-only
// parent never blocks its children: for each path the latest record, if
// the path is still a directory.
func (x *extractor) finish() error {
	x.dropDirCache()
	// Parents are opened a component at a time from the handles of their
	// own parents, kept on a stack: opening each from the root would cost
	// n² lookups for a chain of n directories.
	st := &dirStack{x: x}
	defer st.close()
	prev, first := "", true
	return x.dirs.Each(func(rec []byte) error {
		_, p, m := decodeDirRecord(rec)
		if !first && p == prev {
			return nil // an older record of the same path
		}
		prev, first = p, false
		pdir, base := path.Split(p)
		if p == "" {
			pdir, base = "", "."
		}
		fd, err := st.open(strings.TrimSuffix(pdir, "/"))
		if gone(err) {
			return nil // removed since, or replaced by a non-directory
		}
		if err != nil {
			return err
		}
		var stt unix.Stat_t
		err = unix.Fstatat(fd, base, &stt, unix.AT_SYMLINK_NOFOLLOW)
		if gone(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("stat %s: %w", p, err)
		}
		if stt.Mode&unix.S_IFMT != unix.S_IFDIR {
			return nil // replaced since; not a directory any more
		}
		if err := unix.Fchmodat(fd, base, m.mode, 0); err != nil {
			return fmt.Errorf("chmod %s: %w", p, err)
		}
		return setTimes(fd, base, p, m.atime, m.mtime)
	})
}

// gone is an error saying a recorded directory is no longer there.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP)
}

// dirStack holds open handles of a chain of directories from the root
// down; each is opened from its parent's handle with O_NOFOLLOW, so no
// symlink is followed.
type dirStack struct {
	x     *extractor
	paths []string
	files []*os.File
}

func (s *dirStack) open(rel string) (int, error) {
	if len(s.files) == 0 {
		f, err := s.x.openDir("")
		if err != nil {
			return -1, err
		}
		s.paths, s.files = []string{""}, []*os.File{f}
	}
	for {
		top := s.paths[len(s.paths)-1]
		if top == rel || top == "" || strings.HasPrefix(rel, top+"/") {
			break
		}
		s.files[len(s.files)-1].Close()
		s.paths, s.files = s.paths[:len(s.paths)-1], s.files[:len(s.files)-1]
	}
	for {
		top, f := s.paths[len(s.paths)-1], s.files[len(s.files)-1]
		if top == rel {
			return int(f.Fd()), nil
		}
		c, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(rel, top), "/"), "/")
		next := path.Join(top, c)
		fd, err := unix.Openat(int(f.Fd()), c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("open directory %s: %w", next, err)
		}
		s.paths, s.files = append(s.paths, next), append(s.files, os.NewFile(uintptr(fd), next))
	}
}

func (s *dirStack) close() {
	for _, f := range s.files {
		f.Close()
	}
	s.paths, s.files = nil, nil
}

// openLayer opens l's uncompressed stream, read through ctxio.Reader: an
// abort stops a copy inside one entry (a 3 GiB file, or the tar reader
// skipping one) at the next read, not at the next entry.
func openLayer(ctx context.Context, l v1.Layer) (io.ReadCloser, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	return struct {
		io.Reader
		io.Closer
	}{ctxio.Reader(ctx, rc), rc}, nil
}

// shortName keeps error messages readable when a hostile layer has a name
// of kilobytes.
func shortName(n string) string {
	if len(n) > 200 {
		return n[:200] + "..."
	}
	return n
}
