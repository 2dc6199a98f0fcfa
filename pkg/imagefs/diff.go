package imagefs

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// DiffOptions controls ExtractDiff.
type DiffOptions struct {
	// SpillDir holds the extraction's unlinked temporary files (directory
	// records of a huge layer); default: dir itself is not used, so give a
	// folder on the same disk, e.g. the diff directory's parent.
	SpillDir string
	// Log receives warnings (extended attributes that could not be set);
	// nil discards them.
	Log *logrus.Entry
}

// ExtractDiff unpacks one layer's uncompressed tar stream r into dir, an
// existing empty directory, the way dockerd's overlay2 driver fills a
// layer's diff directory (its ApplyDiff: archive.Unpack with the overlay
// whiteout format), so that dockerd, given the layer's metadata, takes dir
// as that layer:
//   - nothing is skipped: device nodes and fifos are made (as root), the
//     top-level dev too;
//   - a whiteout .wh.NAME becomes a character device 0/0 NAME owned as the
//     whiteout entry says; an opaque marker .wh..wh..opq sets
//     trusted.overlay.opaque=y on its directory. Neither is applied: there
//     is nothing below in this directory;
//   - owners (the process must be root), modes, times and extended
//     attributes of every entry type are kept; the root's own entry is
//     skipped, as dockerd's untar does.
//
// Containment is ExtractRootfs's (see the package doc): every name and
// hardlink target is resolved inside dir, symlinks as if dir were "/".
// r is read to its end, so a hashing reader under it sees every byte.
// On error dir is left as it is; the caller removes it.
func ExtractDiff(ctx context.Context, r io.Reader, dir string, o DiffOptions) error {
	log := logging.OrDiscard(o.Log)
	spill := o.SpillDir
	if spill == "" {
		spill = path.Dir(dir)
	}
	x, err := newExtractor(dir, spill, true, log)
	if err != nil {
		return err
	}
	defer x.close()
	x.diff = true
	x.res.skipDev = false
	if _, err := x.applyStream(ctx, r); err != nil {
		return err
	}
	if err := x.finish(); err != nil {
		return err
	}
	if x.xattrFailures > 0 {
		log.Warnf("%s: could not set %d extended attributes (last error: %v)", dir, x.xattrFailures, x.xattrErr)
	}
	return nil
}

// isRegular is a tar type regular creates.
func isRegular(typ byte) bool {
	return typ == tar.TypeReg || typ == tar.TypeGNUSparse || typ == tar.TypeCont
}

// markOpaque sets overlay's opaque flag on dir (made if missing), what
// dockerd writes for an opaque marker.
func (x *extractor) markOpaque(dir string) error {
	pdir, err := x.res.resolveDir(dir, true)
	if err != nil {
		return err
	}
	f, err := x.openDir(pdir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Fsetxattr(int(f.Fd()), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		return fmt.Errorf("mark %s opaque (setxattr trusted.overlay.opaque=y): %w", pdir, err)
	}
	return nil
}

// whiteoutDevice makes the character device 0/0 that hides dir/target in
// overlay, owned as the whiteout entry says (what dockerd writes). A name
// this layer already made is an error, as in dockerd.
func (x *extractor) whiteoutDevice(dir, target string, hdr *tar.Header) error {
	pdir, err := x.res.resolveDir(dir, true)
	if err != nil {
		return err
	}
	fd, err := x.dirFD(pdir)
	if err != nil {
		return err
	}
	full := path.Join(pdir, target)
	if err := unix.Mknodat(fd, target, unix.S_IFCHR, 0); err != nil {
		return fmt.Errorf("whiteout %s (mknod 0/0): %w", full, err)
	}
	if err := unix.Fchownat(fd, target, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown whiteout %s: %w", full, err)
	}
	return nil
}

// mknod makes a device node or fifo with the entry's mode, owner and times.
func (x *extractor) mknod(fd int, full, base string, hdr *tar.Header) error {
	mode := uint32(hdr.Mode) & 0o7777
	switch hdr.Typeflag {
	case tar.TypeChar:
		mode |= unix.S_IFCHR
	case tar.TypeBlock:
		mode |= unix.S_IFBLK
	default:
		mode |= unix.S_IFIFO
	}
	dev := unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))
	if err := unix.Mknodat(fd, base, mode, int(dev)); err != nil {
		return fmt.Errorf("create device node %s: %w", full, err)
	}
	return x.meta(fd, full, base, hdr, true)
}

// setXattrs sets the entry's extended attributes on fd/base without
// following it (a symlink's own): through /proc/self/fd, since Linux has no
// lsetxattrat. Failures are counted, as for regular files.
func (x *extractor) setXattrs(fd int, full, base string, hdr *tar.Header) {
	for k, v := range hdr.PAXRecords {
		attr, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		p := fmt.Sprintf("/proc/self/fd/%d/%s", fd, base)
		if err := unix.Lsetxattr(p, attr, []byte(v), 0); err != nil && !errors.Is(err, unix.ENODATA) {
			x.xattrFailures++
			x.xattrErr = fmt.Errorf("%s on %s: %w", attr, full, err)
		}
	}
}
