package testenv

import (
	"archive/tar"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// HostFile is a regular file of this machine, for images of real files:
// random bytes do not compress, real libraries and data do, and the number
// of files, not only their bytes, is what extraction costs.
type HostFile struct {
	Path string // absolute
	Size int64
}

// HostFiles picks files of this machine for an image.
type HostFiles struct {
	Roots  []string // walked in this order, each in lexical order
	Budget int64    // bytes: the walk stops once they are reached
	// MaxFile skips files bigger than this (0: no limit but the budget).
	// /usr/lib's first hundreds of MiB hold few, big files; a cap of a few
	// MiB makes the thousands of files a real base image has.
	MaxFile int64
}

// Collect lists the regular, readable, non-empty files under the roots in
// walk order until Budget bytes, skipping files that would overshoot it. It
// fails the test when the machine has less than 90% of the budget.
func (h HostFiles) Collect(t testing.TB) []HostFile {
	t.Helper()
	var out []HostFile
	var total int64
	for _, root := range h.Roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || total >= h.Budget {
				return nil // unreadable folders are skipped, as their files would be
			}
			if !d.Type().IsRegular() {
				return nil
			}
			fi, err := d.Info()
			if err != nil || fi.Size() == 0 || fi.Size() > h.Budget-total || (h.MaxFile > 0 && fi.Size() > h.MaxFile) {
				return nil
			}
			if f, err := os.Open(p); err == nil {
				f.Close()
				out = append(out, HostFile{p, fi.Size()})
				total += fi.Size()
			}
			return nil
		})
		if err != nil {
			t.Fatalf("testenv: walking %s: %v", root, err)
		}
	}
	if total < h.Budget*9/10 {
		t.Fatalf("testenv: only %d bytes of files under %v, want %d", total, h.Roots, h.Budget)
	}
	return out
}

// HostFilesSize is the sum of the files' sizes.
func HostFilesSize(files []HostFile) int64 {
	var n int64
	for _, f := range files {
		n += f.Size
	}
	return n
}

// SplitHostFiles cuts files into n groups of about equal bytes, in order.
func SplitHostFiles(files []HostFile, n int) [][]HostFile {
	total := HostFilesSize(files)
	groups := make([][]HostFile, n)
	var acc int64
	for _, f := range files {
		i := 0
		if total > 0 {
			i = min(int(acc*int64(n)/total), n-1)
		}
		groups[i] = append(groups[i], f)
		acc += f.Size
	}
	return groups
}

// HostFilesTar writes a tar of the files at their own paths (less the
// leading /), with DefaultCreated as mtime and no owner names, for
// FileLayer. Parent folders have no entries of their own.
func HostFilesTar(files []HostFile) func(io.Writer) error {
	return func(w io.Writer) error {
		tw := tar.NewWriter(w)
		for _, f := range files {
			if err := addHostFile(tw, f.Path); err != nil {
				return err
			}
		}
		return tw.Close()
	}
}

// HostFilesLayer is a gzip layer of the files (HostFilesTar), compressed
// once and kept in memory: for layers of a few hundred MiB. Bigger ones
// go to a file with FileLayer(t, dir, "gzip", HostFilesTar(files)).
func HostFilesLayer(t testing.TB, files []HostFile) v1.Layer {
	t.Helper()
	opener := func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(HostFilesTar(files)(pw)) }()
		return pr, nil
	}
	l, err := tarball.LayerFromOpener(opener, tarball.WithCompressedCaching)
	if err != nil {
		t.Fatalf("testenv: layer of host files: %v", err)
	}
	return l
}

func addHostFile(tw *tar.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	h, err := tar.FileInfoHeader(fi, "")
	if err != nil {
		return err
	}
	h.Name = strings.TrimPrefix(path, "/")
	h.ModTime, h.AccessTime, h.ChangeTime = DefaultCreated, time.Time{}, time.Time{}
	h.Uname, h.Gname = "", ""
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	// A file that grew since the walk would break the tar: copy its size.
	_, err = io.CopyN(tw, f, h.Size)
	return err
}

// CopyHostFiles copies the files under dest at their own paths
// (dest/usr/share/...), mode 0644: a build context.
func CopyHostFiles(t testing.TB, files []HostFile, dest string) {
	t.Helper()
	for _, f := range files {
		to := filepath.Join(dest, strings.TrimPrefix(f.Path, "/"))
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := copyFile(f.Path, to); err != nil {
			t.Fatalf("testenv: copying %s: %v", f.Path, err)
		}
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// LayerFile is the blob file of a layer FileLayer made, "" for any other
// layer: the compressed blob as a registry would serve it, e.g. for a
// `tar -xzf` of it.
func LayerFile(l v1.Layer) string {
	if fl, ok := l.(*fileLayer); ok {
		return fl.path
	}
	return ""
}

// UntarFloor is the extraction floor the benchmarks compare with: the
// host's `tar -xzf` of each gzip blob file, in order, into dest (made if
// missing). It returns the time of all of them.
func UntarFloor(t testing.TB, blobs []string, dest string) time.Duration {
	t.Helper()
	if err := os.MkdirAll(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, blob := range blobs {
		if out, err := exec.Command("tar", "-xzf", blob, "-C", dest).CombinedOutput(); err != nil {
			t.Fatalf("tar -xzf %s: %v\n%s", filepath.Base(blob), err, out)
		}
	}
	return time.Since(start)
}
