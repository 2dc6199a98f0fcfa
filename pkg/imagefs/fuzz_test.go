package imagefs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// The rootfs fuzz targets extract hostile layers into ROOT/parent/dest, with
// ROOT/outside as a bait folder that entries may name by absolute path
// (@OUT@ in a spec). After every run, successful or not, ROOT must hold
// only parent, parent/dest (when the extraction succeeded) with what is
// under it, and an empty outside; dest must hold no device node or fifo.

// fuzzExtract runs ExtractRootfs on layers and checks the containment
// properties.
func fuzzExtract(t *testing.T, root string, layers ...[]byte) {
	// A sparse entry costs a pass over its expanded size: keep it small.
	maxSparseSize = 64 << 20
	parent := filepath.Join(root, "parent")
	dest := filepath.Join(parent, "dest")
	for _, d := range []string{parent, filepath.Join(root, "outside")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var ls []v1.Layer
	for _, b := range layers {
		ls = append(ls, static.NewLayer(b, types.OCIUncompressedLayer))
	}
	img := imageOf(t, ls...)
	err := fuzzExtractWithin(t, img, dest, filepath.Join(parent, "rootfs.tar"))
	if err != nil && err.Error() == "" {
		t.Fatal("empty error message")
	}
	if err2 := filepath.WalkDir(root, func(p string, d fs.DirEntry, werr error) error {
		return checkFuzzEntry(t, root, p, d, werr, err)
	}); err2 != nil {
		t.Fatalf("walk: %v", err2)
	}
}

// fuzzExtractWithin extracts img into dest and, when that succeeds, writes
// rootfs.tar at tarPath as the get does; either must finish within 50 s.
func fuzzExtractWithin(t *testing.T, img v1.Image, dest, tarPath string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	// A stuck extraction is a bug too: crash with every goroutine's stack,
	// which the fuzzer records as a failing input.
	watchdog := time.AfterFunc(60*time.Second, func() {
		debug.SetTraceback("all")
		panic("ExtractRootfs did not return within 60 s")
	})
	err := ExtractRootfs(ctx, img, dest, ExtractOptions{Chown: os.Geteuid() == 0})
	if err == nil {
		// The get writes rootfs.tar once rootfs/ is there.
		fuzzRootfsTar(t, ctx, img, tarPath)
	}
	watchdog.Stop()
	if ctx.Err() != nil {
		t.Fatal("extraction did not finish within 50 s")
	}
	return err
}

// checkFuzzEntry is the walk of root after an extraction that returned
// extractErr: root may hold only parent, an empty outside, and, after a
// success, parent/dest with no device node, fifo or socket in it.
func checkFuzzEntry(t *testing.T, root, p string, d fs.DirEntry, werr, extractErr error) error {
	rel, _ := filepath.Rel(root, p)
	if errors.Is(werr, unix.ENAMETOOLONG) && strings.HasPrefix(rel, "parent/dest/") {
		return nil // deeper than this walk can name; still inside dest
	}
	if werr != nil {
		return werr
	}
	switch {
	case rel == "." || rel == "parent" || rel == "outside":
		return nil
	case rel == "parent/dest" && extractErr == nil:
		return nil
	case strings.HasPrefix(rel, "parent/dest/") && extractErr == nil:
		return checkFuzzRootfsEntry(t, rel, p, d)
	}
	if extractErr != nil && strings.HasPrefix(rel, "parent/dest") {
		t.Errorf("failed extraction (%v) left %s behind", extractErr, rel)
	} else {
		t.Errorf("extraction (err %v) wrote outside the destination: %s", extractErr, rel)
	}
	return nil
}

// checkFuzzRootfsEntry fails on a device node, fifo or socket in the
// rootfs, and makes unreadable directories walkable.
func checkFuzzRootfsEntry(t *testing.T, rel, p string, d fs.DirEntry) error {
	fi, ierr := d.Info()
	if errors.Is(ierr, unix.ENAMETOOLONG) {
		return nil
	}
	if ierr != nil {
		return ierr
	}
	if fi.Mode()&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0 {
		t.Errorf("device node, fifo or socket in the rootfs: %s (%v)", rel, fi.Mode())
	}
	if d.IsDir() && fi.Mode().Perm()&0o500 != 0o500 {
		// Unreadable directories are legitimate image content; make
		// them walkable so the rest of the tree is checked.
		os.Chmod(p, fi.Mode().Perm()|0o700)
	}
	return nil
}

// fuzzRootfsTar writes rootfs.tar at p and checks it reads back as a tar
// of clean relative names; it leaves nothing behind.
func fuzzRootfsTar(t *testing.T, ctx context.Context, img v1.Image, p string) {
	err := WriteRootfsTar(ctx, img, p)
	defer os.Remove(p)
	if err != nil {
		if err.Error() == "" {
			t.Fatal("empty error message")
		}
		return
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("rootfs.tar does not read back: %v", err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		if c, err := cleanName(name); name != "." && (err != nil || c != name) {
			t.Errorf("rootfs.tar entry %q is not a clean relative name", h.Name)
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			t.Fatalf("rootfs.tar does not read back: %v", err)
		}
	}
}

// sparseSeed is a tar with a PAX 1.0 sparse file of 1 MiB (a few data
// blocks) and a hardlink to it.
func sparseSeed(f *testing.F) []byte {
	content := make([]byte, 1<<20)
	copy(content[8192:], "data")
	copy(content[len(content)-3:], "end")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	h := &tar.Header{Name: "sparse", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content)), ModTime: testTime}
	if err := writeSparseTar(tw, &buf, h, bytes.NewReader(content), f.TempDir(), make([]byte, 64<<10)); err != nil {
		f.Fatal(err)
	}
	tw.WriteHeader(&tar.Header{Name: "link", Typeflag: tar.TypeLink, Linkname: "sparse", ModTime: testTime})
	tw.Close()
	return buf.Bytes()
}

// FuzzExtractLayer feeds raw bytes as an uncompressed layer on top of a
// small base: malformed tar, huge headers, PAX and GNU records.
func FuzzExtractLayer(f *testing.F) {
	base := tarBytes(f, dir("etc/", 0o755), file("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644),
		symlink("lib", "/usr/lib"), dir("usr/lib/", 0o755))
	seeds := [][]byte{
		tarBytes(f, file("../escaped", "out", 0o644)),
		tarBytes(f, file("/abs/file", "x", 0o644), file("a/../../escaped", "x", 0o644)),
		tarBytes(f, symlink("evil", "/"), file("evil/x", "x", 0o644)),
		tarBytes(f, symlink("up", "../../.."), file("up/escaped", "x", 0o644)),
		tarBytes(f, hardlink("hard", "../../etc/passwd")),
		tarBytes(f, hardlink("hard", "etc/passwd"), hardlink("lib/p", "etc/passwd")),
		tarBytes(f, special("null", tar.TypeChar), special("sda", tar.TypeBlock), special("fifo", tar.TypeFifo), file("dev/console", "x", 0o644)),
		tarBytes(f, whiteout("etc/.wh.passwd"), whiteout("usr/.wh..wh..opq"), whiteout(".wh.."), whiteout(".wh.lib")),
		tarBytes(f, dir("ro/", 0o500), file("ro/f", "x", 0o4755)),
		tarBytes(f, symlink("loop", "loop"), file("loop/x", "x", 0o644)),
		tarBytes(f, ent{hdr: tar.Header{Name: "x", Typeflag: tar.TypeReg, Mode: 0o644, PAXRecords: map[string]string{"SCHILY.xattr.user.a": "b", "SCHILY.xattr.security.capability": "\x01"}}}),
		{},
		[]byte("not a tar"),
	}
	var huge bytes.Buffer
	tw := tar.NewWriter(&huge)
	tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 40})
	tw.Write(bytes.Repeat([]byte("x"), 1024))
	seeds = append(seeds, huge.Bytes())
	// Deep and over-long names: PATH_MAX (4096) and beyond is refused; a
	// deep tree below it is extracted.
	seeds = append(seeds, tarBytes(f, file(strings.Repeat("d/", 100)+"f", "x", 0o644), symlink(strings.Repeat("n", 300), strings.Repeat("../", 500))))
	seeds = append(seeds, tarBytes(f, file(strings.Repeat("d/", 2048)+"f", "x", 0o644)))
	seeds = append(seeds, sparseSeed(f))
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzExtract(t, t.TempDir(), base, data)
	})
}

// FuzzExtractEntries takes a line-based layer description, so the fuzzer
// mutates names and link targets instead of tar checksums. Each line is
// "TYPE NAME [ARG]", layers are separated by "---"; TYPE is f (file, ARG the
// content), d (dir), l (symlink to ARG), h (hardlink to ARG), c, b, p
// (char, block device, fifo), m (file with mode ARG in octal). @OUT@ in a
// name or target is the absolute path of the bait folder outside dest.
func FuzzExtractEntries(f *testing.F) {
	for _, s := range []string{
		"f ../escaped x",
		"f /@OUT@/abs x",
		"l evil @OUT@\nf evil/escaped x",
		"l evil @OUT@\n---\nf evil/escaped x",
		"l up ../../..\nd up/sub\nf up/sub/escaped x",
		"l a b\nl b a\nf a/x y",
		"d d\nl d/link ../../../outside\n---\nh d/link/hard etc/passwd",
		"f etc/passwd root\n---\nh hard @OUT@/../parent/x\nh h2 ../etc/passwd",
		"f data x\n---\nh link data\n---\nf .wh.data\nf data y",
		"c null\nb sda\np fifo\nc dev/null\nf dev/x x",
		"d dir\nf dir/a x\n---\nf dir/.wh..wh..opq\nl dir @OUT@\nf dir/b x",
		"l etc /\n---\nd etc\nf etc/hosts x",
		"m suid 4755\nm ro 0\nd ro2\nm ro2/x 0",
		"l dev @OUT@\nf dev/x x\nc dev/tty",
		"f a x\nh a a\nl b b\nh c b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		root := t.TempDir()
		out := filepath.Join(root, "outside")
		var layers [][]byte
		for _, layer := range strings.Split(spec, "\n---\n") {
			var ents []ent
			for _, line := range strings.Split(layer, "\n") {
				parts := strings.SplitN(line, " ", 3)
				if len(parts) < 2 || parts[1] == "" {
					continue
				}
				name := strings.ReplaceAll(parts[1], "@OUT@", out)
				arg := ""
				if len(parts) == 3 {
					arg = strings.ReplaceAll(parts[2], "@OUT@", out)
				}
				switch parts[0] {
				case "f":
					ents = append(ents, file(name, arg, 0o644))
				case "d":
					ents = append(ents, dir(name, 0o755))
				case "l":
					ents = append(ents, symlink(name, arg))
				case "h":
					ents = append(ents, hardlink(name, arg))
				case "c":
					ents = append(ents, special(name, tar.TypeChar))
				case "b":
					ents = append(ents, special(name, tar.TypeBlock))
				case "p":
					ents = append(ents, special(name, tar.TypeFifo))
				case "m":
					var mode int64
					for _, c := range arg {
						if c >= '0' && c <= '7' {
							mode = (mode*8 + int64(c-'0')) & 0o7777
						}
					}
					ents = append(ents, file(name, "m", mode))
				}
			}
			b, ok := tarBytesLenient(ents)
			if !ok {
				return // not representable as tar (e.g. NUL in a name)
			}
			layers = append(layers, b)
		}
		fuzzExtract(t, root, layers...)
	})
}

// tarBytesLenient is tarBytes that reports entries archive/tar refuses to
// write instead of failing.
func tarBytesLenient(ents []ent) ([]byte, bool) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(&h); err != nil {
			return nil, false
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			return nil, false
		}
	}
	if err := tw.Close(); err != nil {
		return nil, false
	}
	return buf.Bytes(), true
}

// TestExtractRefusesOverlongName: found by FuzzExtractLayer. A name of
// thousands of components took minutes (every lookup walks the path a
// component at a time) and could not be aborted; names of PATH_MAX bytes
// or more are refused, as docker's extraction through the kernel does.
func TestExtractRefusesOverlongName(t *testing.T) {
	img := imageOfEntries(t, []ent{file(strings.Repeat("d/", 3000)+"f", "x", 0o644)})
	start := time.Now()
	err := ExtractRootfs(context.Background(), img, filepath.Join(t.TempDir(), "dest"), ExtractOptions{})
	if err == nil || !strings.Contains(err.Error(), "PATH_MAX") || len(err.Error()) > 600 {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("refusal took %s", d)
	}
}
