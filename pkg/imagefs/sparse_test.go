package imagefs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// sparseFile makes a sparse file of size bytes in dir holding data at each
// offset, nothing elsewhere: no disk but for those blocks.
func sparseFile(t *testing.T, dir, name string, size int64, data map[int64]string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off, s := range data {
		if _, err := f.WriteAt([]byte(s), off); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// gnuTar runs GNU tar with -S (find holes) in dir and returns the tar.
func gnuTar(t *testing.T, dir, format string, names ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("GNU tar is needed to make sparse tar files")
	}
	out, err := exec.Command("tar", append([]string{"-S", "--format=" + format, "--numeric-owner", "-cf", "-", "-C", dir}, names...)...).Output()
	if err != nil {
		t.Fatalf("tar: %v", err)
	}
	return out
}

// allocated is the disk a file takes.
func allocated(t *testing.T, p string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// readAtString reads len(want) bytes at off.
func readAt(t *testing.T, p string, off int64, n int) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkSparseFile asserts p is size bytes, holds data, and takes little disk.
func checkSparseFile(t *testing.T, p string, size int64, data map[int64]string) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != size {
		t.Errorf("%s is %d bytes, want %d", p, fi.Size(), size)
	}
	if a := allocated(t, p); a > 1<<20 {
		t.Errorf("%s allocates %d MiB", p, a>>20)
	}
	for off, s := range data {
		if got := readAt(t, p, off, len(s)); got != s {
			t.Errorf("%s at %d: %q, want %q", p, off, got, s)
		}
		if off+int64(len(s))+64 > size {
			continue
		}
		if got := readAt(t, p, off+int64(len(s)), 64); got != string(make([]byte, 64)) {
			t.Errorf("%s after %d: %q, want zeros", p, off, got)
		}
	}
}

// TestSparseEntries: old GNU ('S') and PAX sparse entries of 16 GiB are
// written sparse into rootfs/ and into rootfs.tar (as PAX 1.0), which Go's
// tar reader and GNU tar read back as the same file.
func TestSparseEntries(t *testing.T) {
	const size = 16 << 30
	data := map[int64]string{8 << 30: "hello", size - 4: "tail", 0: "head"}
	src := t.TempDir()
	sparseFile(t, src, "big", size, data)
	for _, format := range []string{"gnu", "pax"} {
		t.Run(format, func(t *testing.T) {
			img := imageOf(t, static.NewLayer(gnuTar(t, src, format, "big"), types.OCIUncompressedLayer))
			root := extract(t, img)
			checkSparseFile(t, filepath.Join(root, "big"), size, data)

			tarPath := filepath.Join(t.TempDir(), "rootfs.tar")
			if err := WriteRootfsTar(context.Background(), img, tarPath); err != nil {
				t.Fatal(err)
			}
			if fi, _ := os.Stat(tarPath); fi.Size() > 1<<20 {
				t.Errorf("rootfs.tar is %d MiB", fi.Size()>>20)
			}
			// Go's reader: the file's content, by its data runs.
			f, err := os.Open(tarPath)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			tr := tar.NewReader(f)
			h, err := tr.Next()
			for err == nil && h.Name != "big" {
				h, err = tr.Next()
			}
			if err != nil {
				t.Fatalf("rootfs.tar has no big: %v", err)
			}
			if h.Size != size {
				t.Errorf("big is %d bytes in rootfs.tar", h.Size)
			}
			got := map[int64]string{}
			if err := dataRuns(tr, h.Size, make([]byte, 1<<20), func(off int64, b []byte) error {
				got[off] = string(bytes.TrimRight(b, "\x00"))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			want := map[int64]string{0: "head", 8 << 30: "hello", size - holeBlock: string(make([]byte, holeBlock-4)) + "tail"}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("data runs %v, want %v", got, want)
			}
			// GNU tar extracts it sparse.
			out := t.TempDir()
			if b, err := exec.Command("tar", "-xSf", tarPath, "-C", out, "big").CombinedOutput(); err != nil {
				t.Fatalf("GNU tar -x: %v\n%s", err, b)
			}
			checkSparseFile(t, filepath.Join(out, "big"), size, data)
		})
	}
}

// TestSparseTooLarge: a sparse entry claiming more than MaxSparseSize is
// refused, by rootfs/ and by rootfs.tar, with a message naming it.
func TestSparseTooLarge(t *testing.T) {
	src := t.TempDir()
	sparseFile(t, src, "huge", MaxSparseSize+1, map[int64]string{0: "x"})
	img := imageOf(t, static.NewLayer(gnuTar(t, src, "pax", "huge"), types.OCIUncompressedLayer))
	var tooBig *SparseTooLargeError
	err := ExtractRootfs(context.Background(), img, filepath.Join(t.TempDir(), "rootfs"), ExtractOptions{})
	t.Logf("rootfs/: %v", err)
	if !errors.As(err, &tooBig) || tooBig.Name != "huge" {
		t.Errorf("rootfs/: want a SparseTooLargeError for huge, got %v", err)
	}
	err = WriteRootfsTar(context.Background(), img, filepath.Join(t.TempDir(), "rootfs.tar"))
	t.Logf("rootfs.tar: %v", err)
	if !errors.As(err, &tooBig) {
		t.Errorf("rootfs.tar: want a SparseTooLargeError, got %v", err)
	}
}

// TestWriteSparseTar: random data and holes, a long name, big ids and an
// xattr survive the hand-written PAX 1.0 entry, as read by Go's reader.
func TestWriteSparseTar(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	content := make([]byte, 3<<20+123)
	for off := 0; off < len(content); off += holeBlock {
		if rng.IntN(3) == 0 {
			end := min(off+holeBlock, len(content))
			for i := off + rng.IntN(end-off); i < end; i += 1 + rng.IntN(64) {
				content[i] = byte(1 + rng.IntN(255))
			}
		}
	}
	name := "a/" + string(bytes.Repeat([]byte("long-name/"), 20)) + "file"
	h := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o4755, Uid: 3000000, Gid: 12, Uname: "someone", Size: int64(len(content)),
		ModTime: testTime, PAXRecords: map[string]string{"SCHILY.xattr.user.k": "v"}}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "before", Typeflag: tar.TypeReg, Size: 3, Mode: 0o644})
	tw.Write([]byte("abc"))
	if err := writeSparseTar(tw, &buf, h, bytes.NewReader(content), t.TempDir(), make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	tw.WriteHeader(&tar.Header{Name: "after", Typeflag: tar.TypeReg, Size: 3, Mode: 0o644})
	tw.Write([]byte("xyz"))
	tw.Close()
	tr := tar.NewReader(&buf)
	var names []string
	for {
		got, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, got.Name)
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != name {
			continue
		}
		if !bytes.Equal(b, content) {
			t.Error("the content differs")
		}
		if got.Mode != 0o4755 || got.Uid != 3000000 || got.Gid != 12 || got.Uname != "someone" || !got.ModTime.Equal(testTime) || got.PAXRecords["SCHILY.xattr.user.k"] != "v" {
			t.Errorf("header %+v", got)
		}
	}
	if fmt.Sprint(names) != fmt.Sprint([]string{"before", name, "after"}) {
		t.Errorf("entries %q", names)
	}
}

// TestSparseHardlinkCopy: a hardlink to a sparse file whose name an upper
// layer replaced becomes a copy in rootfs.tar, kept and written sparse.
func TestSparseHardlinkCopy(t *testing.T) {
	const size = 16 << 30
	src := t.TempDir()
	sparseFile(t, src, "big", size, map[int64]string{4 << 30: "data"})
	img := imageOf(t,
		static.NewLayer(gnuTar(t, src, "gnu", "big"), types.OCIUncompressedLayer),
		layerOf(t, plainKind, hardlink("link", "big")),
		layerOf(t, plainKind, file("big", "small now", 0o644)),
	)
	tmp := t.TempDir()
	tarPath := filepath.Join(tmp, "rootfs.tar")
	if err := WriteRootfsTar(context.Background(), img, tarPath); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(tarPath); fi.Size() > 1<<20 {
		t.Errorf("rootfs.tar is %d MiB", fi.Size()>>20)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 1 {
		t.Errorf("left next to rootfs.tar: %v", ents)
	}
	out := t.TempDir()
	if b, err := exec.Command("tar", "-xSf", tarPath, "-C", out).CombinedOutput(); err != nil {
		t.Fatalf("GNU tar -x: %v\n%s", err, b)
	}
	checkSparseFile(t, filepath.Join(out, "link"), size, map[int64]string{4 << 30: "data"})
	if got := readString(t, filepath.Join(out, "big")); got != "small now" {
		t.Errorf("big = %q", got)
	}
}
