package test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

// symlinkChain is a folder "target" and n symlinks l1 -> target, l2 -> l1,
// ..., then a file reached through the last one.
func symlinkChain(n int) []testenv.File {
	files := []testenv.File{{Name: "target/", Type: tar.TypeDir}, {Name: "l1", Type: tar.TypeSymlink, Linkname: "target"}}
	for i := 2; i <= n; i++ {
		files = append(files, testenv.File{Name: fmt.Sprintf("l%d", i), Type: tar.TypeSymlink, Linkname: fmt.Sprintf("l%d", i-1)})
	}
	return append(files, testenv.File{Name: fmt.Sprintf("l%d/sub/file", n), Content: []byte("through the chain\n")})
}

// TestGetSymlinkChains: a path in a layer may pass 40 symlinks, as Linux
// allows (MAXSYMLINKS); one that needs 41 fails the get, as the kernel
// would fail docker's extraction, instead of being followed up to 255.
func TestGetSymlinkChains(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	get := func(t *testing.T, n int) (string, result) {
		t.Helper()
		img := testenv.AppendLayers(t, testenv.BusyboxImage(t, testenv.ImageOptions{}), testenv.LayerFromFiles(t, symlinkChain(n), "gzip"))
		repo := fmt.Sprintf("hostile/chain-%d", n)
		digest := reg.Push(t, repo+":1", img).String()
		dest := filepath.Join(t.TempDir(), "get")
		return dest, runIn(t, dest, map[string]any{
			"source":  source(reg, repo, map[string]any{"tag": "1"}),
			"version": map[string]any{"digest": digest},
			"params":  map[string]any{"rootfs": true},
		})
	}
	t.Run("40 links", func(t *testing.T) {
		dest, r := get(t, 40)
		if r.err != nil {
			t.Fatalf("the get failed: %v\n%s", r.err, r.stderr)
		}
		if got := readFile(t, filepath.Join(dest, "rootfs", "target", "sub", "file")); got != "through the chain\n" {
			t.Errorf("rootfs/target/sub/file = %q", got)
		}
		if l, err := os.Readlink(filepath.Join(dest, "rootfs", "l40")); err != nil || l != "l39" {
			t.Errorf("rootfs/l40 -> %q (%v), want l39", l, err)
		}
	})
	t.Run("41 links", func(t *testing.T) {
		dest, r := get(t, 41)
		if r.err == nil {
			t.Fatal("the get succeeded")
		}
		t.Logf("error: %v", r.err)
		for _, want := range []string{"write rootfs/", "l41/sub/file", "more than 40 symbolic links", "too many levels of symbolic links"} {
			if !strings.Contains(r.err.Error(), want) {
				t.Errorf("the error does not say %q", want)
			}
		}
		assertNothingComplete(t, dest)
	})
}

// sparseLayerSize is the sparse file TestGetSparseFiles gets.
const sparseLayerSize int64 = 16 << 30

// sparseTar makes a sparse file of size bytes holding data at each offset
// (no disk but for those blocks) and returns GNU tar's -S archive of it
// in format ("gnu": old GNU 'S' entries, "pax": PAX 1.0 sparse).
func sparseTar(t *testing.T, size int64, data map[int64]string, format string) []byte {
	t.Helper()
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("GNU tar is needed to make sparse tar files")
	}
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off, s := range data {
		if _, err := f.WriteAt([]byte(s), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	out, err := exec.Command("tar", "-S", "--format="+format, "--numeric-owner", "-cf", "-", "-C", dir, "big").Output()
	if err != nil {
		t.Fatalf("tar: %v", err)
	}
	os.RemoveAll(dir)
	return out
}

// assertSparse checks p is size bytes holding data and allocating under 1 MiB.
func assertSparse(t *testing.T, p string, size int64, data map[int64]string) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d bytes, %d KiB allocated", filepath.Base(p), st.Size, st.Blocks*512>>10)
	if st.Size != size {
		t.Errorf("%s is %d bytes, want %d", p, st.Size, size)
	}
	if st.Blocks*512 > 1<<20 {
		t.Errorf("%s allocates %d MiB of DEST's disk", p, st.Blocks*512>>20)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off, s := range data {
		b := make([]byte, len(s))
		if _, err := f.ReadAt(b, off); err != nil || string(b) != s {
			t.Errorf("%s at %d: %q (%v), want %q", p, off, b, err, s)
		}
	}
	// Zeros between: a read across the middle of a hole.
	b := make([]byte, 1<<20)
	if _, err := f.ReadAt(b, size/4); err != nil || !bytes.Equal(b, make([]byte, len(b))) {
		t.Errorf("%s at %d: not zeros (%v)", p, size/4, err)
	}
}

// TestGetSparseFiles: a layer holding a 16 GiB sparse file (old GNU 'S'
// entries and PAX 1.0 sparse, as GNU tar -S writes them) is written sparse
// into rootfs/ and into rootfs.tar, which Go's tar reader and GNU tar read
// back as the same file; DEST's disk holds kilobytes. Before, rootfs/
// allocated all 16 GiB and rootfs.tar failed with "archive/tar: missed
// writing". A sparse file claiming more than 256 GiB is refused.
func TestGetSparseFiles(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	size := sparseLayerSize
	data := map[int64]string{0: "head", size / 2: "middle", size - 4: "tail"}
	get := func(t *testing.T, name string, tarball []byte) (string, result) {
		t.Helper()
		layer := testenv.FileLayer(t, t.TempDir(), "gzip", func(w io.Writer) error { _, err := w.Write(tarball); return err })
		digest := reg.Push(t, "hostile/"+name+":1", testenv.AppendLayers(t, testenv.BusyboxImage(t, testenv.ImageOptions{}), layer)).String()
		dest := filepath.Join(t.TempDir(), "get")
		return dest, runIn(t, dest, map[string]any{
			"source":  source(reg, "hostile/"+name, map[string]any{"tag": "1"}),
			"version": map[string]any{"digest": digest},
			"params":  map[string]any{"rootfs": true},
		})
	}
	for _, format := range []string{"gnu", "pax"} {
		t.Run(format, func(t *testing.T) {
			dest, r := get(t, "sparse-"+format, sparseTar(t, size, data, format))
			if r.err != nil {
				t.Fatalf("the get failed: %v\n%s", r.err, r.stderr)
			}
			assertSparse(t, filepath.Join(dest, "rootfs", "big"), size, data)

			// busybox and the sparse file's few blocks.
			tarPath := filepath.Join(dest, "rootfs.tar")
			if fi, err := os.Stat(tarPath); err != nil || fi.Size() > 8<<20 {
				t.Fatalf("rootfs.tar: %v, %d bytes", err, fi.Size())
			}
			f, err := os.Open(tarPath)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			tr := tar.NewReader(f)
			found := false
			for {
				h, err := tr.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("rootfs.tar: %v", err)
				}
				if h.Name != "big" {
					continue
				}
				found = true
				if h.Size != size {
					t.Errorf("rootfs.tar's big is %d bytes", h.Size)
				}
				// Every data byte where it belongs, zeros elsewhere.
				var off int64
				buf := make([]byte, 4<<20)
				for off < size {
					n, err := io.ReadFull(tr, buf[:min(int64(len(buf)), size-off)])
					if err != nil {
						t.Fatalf("read big from rootfs.tar at %d: %v", off, err)
					}
					zero := make([]byte, 4096)
					for i := 0; i < n; i += 4096 {
						end := min(i+4096, n)
						if bytes.Equal(buf[i:end], zero[:end-i]) {
							continue
						}
						for j := i; j < end; j++ {
							if buf[j] == 0 {
								continue
							}
							at := off + int64(j)
							ok := false
							for o, s := range data {
								if at >= o && at < o+int64(len(s)) && s[at-o] == buf[j] {
									ok = true
								}
							}
							if !ok {
								t.Fatalf("rootfs.tar's big has %q at %d", buf[j], at)
							}
						}
					}
					off += int64(n)
				}
			}
			if !found {
				t.Fatal("rootfs.tar has no big")
			}
			out := t.TempDir()
			if b, err := exec.Command("tar", "-xSf", tarPath, "-C", out, "big").CombinedOutput(); err != nil {
				t.Fatalf("GNU tar -x rootfs.tar: %v\n%s", err, b)
			}
			assertSparse(t, filepath.Join(out, "big"), size, data)
		})
	}
	t.Run("over 256 GiB", func(t *testing.T) {
		dest, r := get(t, "sparse-huge", sparseTar(t, 300<<30, map[int64]string{1 << 30: "x"}, "pax"))
		if r.err == nil {
			t.Fatal("the get succeeded")
		}
		t.Logf("error: %v", r.err)
		want := fmt.Sprintf("sparse file big expands to %d bytes, more than the 256 GiB this resource writes: refused", int64(300<<30))
		if !strings.Contains(r.err.Error(), want) {
			t.Errorf("the error does not say %q", want)
		}
		assertNothingComplete(t, dest)
	})
}
