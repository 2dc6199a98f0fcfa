package imagefs

import (
	"archive/tar"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func extract(t *testing.T, img v1.Image) string {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "rootfs")
	if err := ExtractRootfs(context.Background(), img, dest, ExtractOptions{}); err != nil {
		t.Fatalf("ExtractRootfs: %v", err)
	}
	return dest
}

func readString(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mustNotExist(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s should not exist (err=%v)", p, err)
	}
}

func lstat(t *testing.T, p string) os.FileInfo {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// tree lists everything under dir as "path type" lines.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		out = append(out, rel+" "+d.Type().String())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestExtractEntryKinds(t *testing.T) {
	img := imageOfEntries(t, []ent{
		dir("./", 0o755),
		dir("bin/", 0o755),
		file("bin/tool", "#!/bin/sh\n", 0o755),
		file("bin/su", "setuid", 0o4755),
		file("bin/sg", "setgid", 0o2711),
		dir("tmp/", 0o1777),
		dir("etc/", 0o755),
		file("etc/config", "hello", 0o640),
		func() ent { e := hardlink("etc/config-link", "etc/config"); e.hdr.Mode = 0o640; return e }(),
		symlink("etc/rel-link", "config"),
		symlink("etc/abs-link", "/etc/config"),
		symlink("etc/dangling", "/nowhere"),
		special("etc/fifo", tar.TypeFifo),
		special("etc/null", tar.TypeChar),
		special("etc/blk", tar.TypeBlock),
		dir("dev/", 0o755),
		special("dev/null", tar.TypeChar),
		file("dev/regular", "no", 0o644),
		dir("var/dev/", 0o700), // only the top-level dev is left out
		file("/abs/file", "absolute names count from the root", 0o644),
	})
	dest := extract(t, img)

	if got := readString(t, filepath.Join(dest, "bin/tool")); got != "#!/bin/sh\n" {
		t.Errorf("bin/tool = %q", got)
	}
	modes := map[string]fs.FileMode{
		"bin/tool":   0o755,
		"bin/su":     0o755 | fs.ModeSetuid,
		"bin/sg":     0o711 | fs.ModeSetgid,
		"tmp":        fs.ModeDir | 0o777 | fs.ModeSticky,
		"etc/config": 0o640,
		"var/dev":    fs.ModeDir | 0o700,
		"etc":        fs.ModeDir | 0o755,
	}
	for p, want := range modes {
		if got := lstat(t, filepath.Join(dest, p)).Mode(); got != want {
			t.Errorf("%s mode = %v, want %v", p, got, want)
		}
	}
	if got := lstat(t, dest).Mode(); got != fs.ModeDir|0o755 {
		t.Errorf("rootfs mode = %v", got)
	}
	for _, p := range []string{"bin/tool", "etc", "tmp", "etc/rel-link", "etc/dangling", "."} {
		if got := lstat(t, filepath.Join(dest, p)).ModTime(); !got.Equal(testTime) {
			t.Errorf("%s mtime = %v, want %v", p, got, testTime)
		}
	}
	for link, want := range map[string]string{"etc/rel-link": "config", "etc/abs-link": "/etc/config", "etc/dangling": "/nowhere"} {
		got, err := os.Readlink(filepath.Join(dest, link))
		if err != nil || got != want {
			t.Errorf("readlink %s = %q, %v; want %q", link, got, err, want)
		}
	}
	a := lstat(t, filepath.Join(dest, "etc/config")).Sys().(*syscall.Stat_t)
	b := lstat(t, filepath.Join(dest, "etc/config-link")).Sys().(*syscall.Stat_t)
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hardlink: inodes %d/%d, nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	for _, p := range []string{"etc/fifo", "etc/null", "etc/blk", "dev"} {
		mustNotExist(t, filepath.Join(dest, p))
	}
	if got := readString(t, filepath.Join(dest, "abs/file")); !strings.HasPrefix(got, "absolute") {
		t.Errorf("abs/file = %q", got)
	}
	// Nothing but dest next to it: the temporary directory was renamed.
	if ents, _ := os.ReadDir(filepath.Dir(dest)); len(ents) != 1 {
		t.Errorf("leftovers next to rootfs: %v", ents)
	}
}

func TestExtractWhiteoutsAndOpaqueDirs(t *testing.T) {
	img := imageOfEntries(t,
		[]ent{
			dir("a/", 0o755), file("a/x", "x", 0o644), file("a/y", "y", 0o644),
			dir("b/", 0o755), file("b/z", "z", 0o644),
			dir("d/", 0o755), dir("d/sub/", 0o755), file("d/sub/f", "f", 0o644), file("d/old", "old", 0o644),
			file("keep", "keep", 0o644),
			file("samelayer", "s", 0o644),
		},
		[]ent{
			whiteout("a/.wh.x"),
			whiteout(".wh.b"),
			dir("d/", 0o750),
			file("d/early", "before the marker", 0o644), // kept: same layer
			whiteout("d/.wh..wh..opq"),
			file("d/new", "new", 0o644),
			file("newfile", "n", 0o644),
			whiteout(".wh.newfile"),              // same layer: whiteouts hide lower layers only
			whiteout("missing/.wh.nothing"),      // nothing to hide
			file(".wh..wh.plnk/123", "x", 0o644), // aufs bookkeeping: ignored
		},
		[]ent{
			whiteout(".wh.samelayer"),
			file("d/sub2", "later", 0o644),
		},
	)
	dest := extract(t, img)
	want := []string{
		"a d---------", "a/y ----------",
		"d d---------", "d/early ----------", "d/new ----------", "d/sub2 ----------",
		"keep ----------", "newfile ----------",
	}
	if got := tree(t, dest); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("tree:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := lstat(t, filepath.Join(dest, "d")).Mode().Perm(); got != 0o750 {
		t.Errorf("opaque dir mode %v", got)
	}
}

func TestExtractReplacesAcrossTypes(t *testing.T) {
	img := imageOfEntries(t,
		[]ent{dir("x/", 0o755), file("x/in", "in", 0o644), file("y", "file", 0o644), symlink("z", "y"), dir("w/", 0o755)},
		[]ent{file("x", "now a file", 0o600), dir("y/", 0o711), file("y/child", "c", 0o644), file("z", "regular now", 0o644), symlink("w", "y")},
	)
	dest := extract(t, img)
	if got := readString(t, filepath.Join(dest, "x")); got != "now a file" {
		t.Errorf("x = %q", got)
	}
	if fi := lstat(t, filepath.Join(dest, "y")); !fi.IsDir() || fi.Mode().Perm() != 0o711 {
		t.Errorf("y = %v", fi.Mode())
	}
	if fi := lstat(t, filepath.Join(dest, "z")); !fi.Mode().IsRegular() {
		t.Errorf("z = %v", fi.Mode())
	}
	if fi := lstat(t, filepath.Join(dest, "w")); fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("w = %v", fi.Mode())
	}
}

func TestExtractHardlinkAcrossLayers(t *testing.T) {
	img := imageOfEntries(t,
		[]ent{dir("usr/", 0o755), file("usr/orig", "shared content", 0o755)},
		[]ent{hardlink("linked", "usr/orig"), hardlink("./abs-linked", "/usr/orig")},
	)
	dest := extract(t, img)
	a := lstat(t, filepath.Join(dest, "usr/orig")).Sys().(*syscall.Stat_t)
	for _, l := range []string{"linked", "abs-linked"} {
		b := lstat(t, filepath.Join(dest, l)).Sys().(*syscall.Stat_t)
		if a.Ino != b.Ino {
			t.Errorf("%s is not a hardlink of usr/orig", l)
		}
	}
	if readString(t, filepath.Join(dest, "linked")) != "shared content" {
		t.Error("linked content")
	}

	missing := imageOfEntries(t, []ent{hardlink("l", "not-there")})
	if err := ExtractRootfs(context.Background(), missing, filepath.Join(t.TempDir(), "r"), ExtractOptions{}); err == nil {
		t.Error("hardlink to a missing target should fail")
	}
}

func TestExtractCompressions(t *testing.T) {
	img := imageOf(t,
		layerOf(t, gzipKind, file("gzip.txt", "g", 0o644)),
		layerOf(t, zstdKind, file("zstd.txt", "z", 0o644)),
		layerOf(t, plainKind, file("plain.txt", "p", 0o644)),
	)
	dest := extract(t, img)
	for n, want := range map[string]string{"gzip.txt": "g", "zstd.txt": "z", "plain.txt": "p"} {
		if got := readString(t, filepath.Join(dest, n)); got != want {
			t.Errorf("%s = %q", n, got)
		}
	}
}

func TestExtractDestination(t *testing.T) {
	img := imageOfEntries(t, []ent{file("f", "f", 0o644)})
	base := t.TempDir()

	empty := filepath.Join(base, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := ExtractRootfs(context.Background(), img, empty, ExtractOptions{}); err != nil {
		t.Errorf("empty destination: %v", err)
	}

	full := filepath.Join(base, "full")
	if err := os.MkdirAll(filepath.Join(full, "something"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := ExtractRootfs(context.Background(), img, full, ExtractOptions{}); err == nil {
		t.Error("non-empty destination should fail")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ExtractRootfs(ctx, img, filepath.Join(base, "cancelled"), ExtractOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	mustNotExist(t, filepath.Join(base, "cancelled"))
	ents, _ := os.ReadDir(base)
	if len(ents) != 2 {
		t.Errorf("leftovers: %v", ents)
	}
}

func TestExtractReadOnlyDirectory(t *testing.T) {
	img := imageOfEntries(t,
		[]ent{dir("ro/", 0o555), file("ro/a", "a", 0o444)},
		[]ent{file("ro/b", "b", 0o444), whiteout("ro/.wh.a")},
	)
	dest := extract(t, img)
	if got := tree(t, dest); strings.Join(got, ",") != "ro dr-xr-xr-x,ro/b ----------" && strings.Join(got, ",") != "ro d---------,ro/b ----------" {
		t.Errorf("tree %v", got)
	}
	if got := lstat(t, filepath.Join(dest, "ro")).Mode().Perm(); got != 0o555 {
		t.Errorf("ro mode %v", got)
	}
	// Let t.TempDir clean up.
	os.Chmod(filepath.Join(dest, "ro"), 0o755)
}

func TestExtractOwnership(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	img := imageOfEntries(t, []ent{
		func() ent { e := dir("home/", 0o755); e.hdr.Uid, e.hdr.Gid = 1000, 1001; return e }(),
		func() ent { e := file("home/f", "x", 0o4750); e.hdr.Uid, e.hdr.Gid = 1234, 5678; return e }(),
		func() ent { e := symlink("home/l", "f"); e.hdr.Uid, e.hdr.Gid = 42, 43; return e }(),
	})
	dest := filepath.Join(t.TempDir(), "rootfs")
	if err := ExtractRootfs(context.Background(), img, dest, ExtractOptions{Chown: true}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string][2]uint32{"home": {1000, 1001}, "home/f": {1234, 5678}, "home/l": {42, 43}} {
		st := lstat(t, filepath.Join(dest, p)).Sys().(*syscall.Stat_t)
		if st.Uid != want[0] || st.Gid != want[1] {
			t.Errorf("%s owner %d:%d, want %d:%d", p, st.Uid, st.Gid, want[0], want[1])
		}
	}
	// chown before chmod: setuid survives.
	if m := lstat(t, filepath.Join(dest, "home/f")).Mode(); m&fs.ModeSetuid == 0 {
		t.Errorf("setuid lost: %v", m)
	}

	// Without Chown everything belongs to us.
	dest2 := filepath.Join(t.TempDir(), "rootfs")
	if err := ExtractRootfs(context.Background(), img, dest2, ExtractOptions{}); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, filepath.Join(dest2, "home/f")).Sys().(*syscall.Stat_t); st.Uid != 0 {
		t.Errorf("owner without Chown: %d", st.Uid)
	}
}

// escapeCase runs an image against a dest inside a sandbox whose sibling
// "outside" holds a file; nothing outside dest may change.
type escapeCase struct {
	name    string
	layers  func(outside string) [][]ent
	wantErr bool
	check   func(t *testing.T, dest, outside string)
}

// TestExtractEscapesByName: names that climb out with "..".
func TestExtractEscapesByName(t *testing.T) {
	runEscapeCases(t, []escapeCase{
		{name: "dotdot", wantErr: true, layers: func(string) [][]ent {
			return [][]ent{{file("../../outside/pwned", "x", 0o644)}}
		}},
		{name: "abs-dotdot", wantErr: true, layers: func(string) [][]ent {
			return [][]ent{{file("/abs/../../outside/pwned", "x", 0o644)}}
		}},
		{name: "dotdot-dir", wantErr: true, layers: func(string) [][]ent {
			return [][]ent{{dir("../x/", 0o755)}}
		}},
	})
}

// TestExtractEscapesThroughSymlinks: symlinks resolve as if dest were "/".
func TestExtractEscapesThroughSymlinks(t *testing.T) {
	runEscapeCases(t, []escapeCase{
		{name: "symlink-parent-absolute", layers: func(outside string) [][]ent {
			return [][]ent{{symlink("evil", outside)}, {file("evil/pwned", "x", 0o644)}}
		}, check: func(t *testing.T, dest, outside string) {
			// Resolved as if dest were "/".
			if got := readString(t, filepath.Join(dest, outside, "pwned")); got != "x" {
				t.Errorf("content %q", got)
			}
		}},
		{name: "symlink-parent-absolute-deep", layers: func(outside string) [][]ent {
			return [][]ent{{dir("a/", 0o755), dir("a/b/", 0o755), symlink("a/b/evil", outside)}, {file("a/b/evil/pwned", "x", 0o644)}}
		}, check: func(t *testing.T, dest, outside string) {
			if got := readString(t, filepath.Join(dest, outside, "pwned")); got != "x" {
				t.Errorf("content %q", got)
			}
		}},
		{name: "symlink-parent-relative", layers: func(string) [][]ent {
			return [][]ent{{symlink("evil", "../../../../../../outside")}, {file("evil/pwned", "x", 0o644)}}
		}, check: func(t *testing.T, dest, _ string) {
			if got := readString(t, filepath.Join(dest, "outside/pwned")); got != "x" {
				t.Errorf("content %q", got)
			}
		}},
		{name: "symlink-parent-same-layer", layers: func(outside string) [][]ent {
			return [][]ent{{symlink("evil", outside), dir("evil/sub/", 0o755), file("evil/sub/pwned", "x", 0o644)}}
		}},
		{name: "symlink-chain", layers: func(outside string) [][]ent {
			return [][]ent{{symlink("a", "b"), symlink("b", "c/.."), dir("c/", 0o755), symlink("c/d", outside+"/..")}, {file("a/c/d/pwned", "x", 0o644)}}
		}},
		{name: "symlink-loop", wantErr: true, layers: func(string) [][]ent {
			return [][]ent{{symlink("l1", "l2"), symlink("l2", "l1")}, {file("l1/pwned", "x", 0o644)}}
		}},
		{name: "replace-symlink-not-follow", layers: func(outside string) [][]ent {
			return [][]ent{{symlink("f", outside+"/secret")}, {file("f", "replaced", 0o644)}}
		}, check: func(t *testing.T, dest, _ string) {
			if fi := lstat(t, filepath.Join(dest, "f")); !fi.Mode().IsRegular() {
				t.Errorf("f = %v", fi.Mode())
			}
		}},
		{name: "dev-through-symlink", layers: func(string) [][]ent {
			return [][]ent{{symlink("mydev", "/dev")}, {file("mydev/x", "x", 0o644)}}
		}, check: func(t *testing.T, dest, _ string) {
			mustNotExist(t, filepath.Join(dest, "dev"))
		}},
	})
}

// TestExtractEscapesByLinksAndMarkers: hardlinks, whiteouts and opaque
// markers that point outside.
func TestExtractEscapesByLinksAndMarkers(t *testing.T) {
	runEscapeCases(t, []escapeCase{
		{name: "hardlink-dotdot", wantErr: true, layers: func(string) [][]ent {
			return [][]ent{{hardlink("l", "../../outside/secret")}}
		}},
		{name: "hardlink-absolute-outside", wantErr: true, layers: func(outside string) [][]ent {
			return [][]ent{{hardlink("l", outside+"/secret")}}
		}},
		{name: "hardlink-through-symlink", wantErr: true, layers: func(outside string) [][]ent {
			return [][]ent{{symlink("s", outside)}, {hardlink("l", "s/secret")}}
		}},
		{name: "whiteout-through-symlink", layers: func(outside string) [][]ent {
			return [][]ent{{symlink("s", outside)}, {whiteout("s/.wh.secret")}}
		}},
		{name: "opaque-through-symlink", layers: func(outside string) [][]ent {
			return [][]ent{{symlink("s", outside)}, {whiteout("s/.wh..wh..opq"), file("s/new", "n", 0o644)}}
		}},
	})
}

func runEscapeCases(t *testing.T, cases []escapeCase) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runEscapeCase(t, c) })
	}
}

func runEscapeCase(t *testing.T, c escapeCase) {
	sandbox := t.TempDir()
	outside := filepath.Join(sandbox, "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(sandbox, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(work, "rootfs")
	img := imageOfEntries(t, c.layers(outside)...)
	err := ExtractRootfs(context.Background(), img, dest, ExtractOptions{})
	if c.wantErr && err == nil {
		t.Error("want an error")
	}
	if !c.wantErr && err != nil {
		t.Errorf("unexpected error: %v", err)
	}
	checkOutsideUntouched(t, sandbox, outside)
	if err != nil {
		mustNotExist(t, dest)
		if ents, _ := os.ReadDir(work); len(ents) != 0 {
			t.Errorf("failed extraction left %v", ents)
		}
	}
	if c.check != nil && err == nil {
		c.check(t, dest, outside)
	}
}

// checkOutsideUntouched: outside still holds only secret, unchanged and not
// hardlinked, and the sandbox only outside and work.
func checkOutsideUntouched(t *testing.T, sandbox, outside string) {
	t.Helper()
	if got := tree(t, outside); strings.Join(got, ",") != "secret ----------" {
		t.Errorf("outside changed: %v", got)
	}
	if got := readString(t, filepath.Join(outside, "secret")); got != "secret" {
		t.Errorf("secret changed: %q", got)
	}
	if st := lstat(t, filepath.Join(outside, "secret")).Sys().(*syscall.Stat_t); st.Nlink != 1 {
		t.Errorf("secret got hardlinked: nlink %d", st.Nlink)
	}
	ents, _ := os.ReadDir(sandbox)
	if len(ents) != 2 {
		t.Errorf("sandbox holds %v", ents)
	}
}

func TestExtractLogs(t *testing.T) {
	log, hook := testLog()
	img := imageOfEntries(t, []ent{file("a", "a", 0o644), special("f", tar.TypeFifo)}, []ent{file("b", "b", 0o644)})
	dest := filepath.Join(t.TempDir(), "rootfs")
	if err := ExtractRootfs(context.Background(), img, dest, ExtractOptions{Log: log}); err != nil {
		t.Fatal(err)
	}
	text := hookText(hook)
	for _, want := range []string{"extracted layer 1/2 sha256:", "extracted layer 2/2", "skipped 1 device", "extracted 2 layers into"} {
		if !strings.Contains(text, want) {
			t.Errorf("log lacks %q:\n%s", want, text)
		}
	}
}
