package imagefs

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

type tarEntry struct {
	hdr  *tar.Header
	body string
}

func readTar(t *testing.T, p string) []tarEntry {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var out []tarEntry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tarEntry{h, string(b)})
	}
}

func writeRootfsTar(t *testing.T, img v1.Image) []tarEntry {
	t.Helper()
	p := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := WriteRootfsTar(context.Background(), img, p); err != nil {
		t.Fatalf("WriteRootfsTar: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 1 {
		t.Errorf("leftovers next to rootfs.tar: %v", ents)
	}
	return readTar(t, p)
}

// summary renders entries as sorted "name type content" lines.
func summary(ents []tarEntry) []string {
	var out []string
	for _, e := range ents {
		s := strings.TrimSuffix(e.hdr.Name, "/") + " " + string(e.hdr.Typeflag)
		switch e.hdr.Typeflag {
		case tar.TypeReg:
			s += " " + e.body
		case tar.TypeSymlink, tar.TypeLink:
			s += " -> " + e.hdr.Linkname
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func TestRootfsTarFlattens(t *testing.T) {
	img := imageOfEntries(t,
		[]ent{
			dir("./", 0o755),
			dir("a/", 0o755), file("a/x", "x", 0o644), file("a/y", "y", 0o644),
			dir("b/", 0o755), file("b/z", "z", 0o644),
			dir("d/", 0o755), dir("d/sub/", 0o755), file("d/sub/f", "f", 0o644),
			file("t", "old", 0o644),
			file("shared", "shared", 0o644),
			dir("dev/", 0o755), special("dev/null", tar.TypeChar),
			file("dup", "first", 0o644), file("dup", "second", 0o644),
		},
		[]ent{
			whiteout("a/.wh.x"),
			whiteout(".wh.b"),
			dir("d/", 0o700),
			whiteout("d/.wh..wh..opq"),
			file("d/new", "new", 0o644),
			hardlink("l", "t"),
			hardlink("l2", "shared"),
			dir("e/", 0o755), dir("e/f/", 0o755), file("e/f/g", "g", 0o644),
			symlink("s", "/a/y"),
		},
		[]ent{
			file("t", "new", 0o644),
			dir("e/", 0o711), // new metadata for a directory created below
		},
	)
	ents := writeRootfsTar(t, img)
	want := []string{
		"a 5", "a/y 0 y",
		"d 5", "d/new 0 new",
		"dev 5", "dev/null 3",
		"dup 0 second",
		"e 5", "e/f 5", "e/f/g 0 g",
		"l 0 old", // its target was replaced above it: a copy of what it linked to
		"l2 1 -> shared",
		"s 2 -> /a/y",
		"shared 0 shared",
		"t 0 new",
	}
	got := summary(ents)
	// The root entry is kept as "./".
	if got[0] != ". 5" {
		t.Errorf("first sorted entry %q, want the root", got[0])
	}
	if strings.Join(got[1:], "\n") != strings.Join(want, "\n") {
		t.Errorf("entries:\n%s\nwant:\n%s", strings.Join(got[1:], "\n"), strings.Join(want, "\n"))
	}

	// Order: parents before children, hardlink targets before links, each
	// name once, and directories carry the top layer's header.
	seen := map[string]bool{}
	for _, e := range ents {
		name := strings.TrimSuffix(e.hdr.Name, "/")
		if seen[name] && name != "dup" {
			t.Errorf("%s appears twice", name)
		}
		if d := path.Dir(name); d != "." && !seen[d] {
			t.Errorf("%s comes before its directory %s", name, d)
		}
		if e.hdr.Typeflag == tar.TypeLink && !seen[e.hdr.Linkname] {
			t.Errorf("hardlink %s comes before its target %s", name, e.hdr.Linkname)
		}
		seen[name] = true
		switch name {
		case "e":
			if e.hdr.Mode&0o777 != 0o711 {
				t.Errorf("e mode %o, want the top layer's 711", e.hdr.Mode)
			}
		case "d":
			if e.hdr.Mode&0o777 != 0o700 {
				t.Errorf("d mode %o", e.hdr.Mode)
			}
		}
	}
	if ents[0].hdr.Name != "./" {
		t.Errorf("first entry %q, want the root", ents[0].hdr.Name)
	}
}

// The tar and rootfs/ agree on everything but what rootfs/ leaves out.
func TestRootfsTarMatchesExtraction(t *testing.T) {
	img := imageOf(t,
		layerOf(t, gzipKind, dir("etc/", 0o755), file("etc/a", "a", 0o644), file("etc/b", "b", 0o600), symlink("lnk", "etc/a"), dir("opt/", 0o755), file("opt/o", "o", 0o644)),
		layerOf(t, zstdKind, whiteout("etc/.wh.b"), dir("opt/", 0o755), whiteout("opt/.wh..wh..opq"), file("opt/p", "p", 0o644), hardlink("etc/c", "etc/a")),
		layerOf(t, plainKind, file("etc/d", "d", 0o644), whiteout(".wh.lnk")),
	)
	ents := writeRootfsTar(t, img)
	var fromTar []string
	for _, s := range summary(ents) {
		if strings.HasPrefix(s, ". ") {
			continue
		}
		fromTar = append(fromTar, strings.Fields(s)[0])
	}
	dest := extract(t, img)
	var fromDir []string
	for _, s := range tree(t, dest) {
		fromDir = append(fromDir, strings.Fields(s)[0])
	}
	if strings.Join(fromTar, ",") != strings.Join(fromDir, ",") {
		t.Errorf("tar has %v, rootfs has %v", fromTar, fromDir)
	}
}

func TestRootfsTarRefusesEscape(t *testing.T) {
	img := imageOfEntries(t, []ent{file("../evil", "x", 0o644)})
	p := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := WriteRootfsTar(context.Background(), img, p); err == nil {
		t.Error("want an error")
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed write left %s", p)
	}
	if ents, _ := os.ReadDir(filepath.Dir(p)); len(ents) != 0 {
		t.Errorf("leftovers: %v", ents)
	}
}

func TestRootfsTarOpaqueRoot(t *testing.T) {
	img := imageOfEntries(t,
		[]ent{dir("a/", 0o755), file("a/x", "x", 0o644), file("top", "t", 0o644)},
		[]ent{whiteout("./.wh..wh..opq"), file("b", "b", 0o644)},
	)
	if got := strings.Join(summary(writeRootfsTar(t, img)), ","); got != "b 0 b" {
		t.Errorf("tar: %s", got)
	}
	if got := strings.Join(tree(t, extract(t, img)), ","); got != "b ----------" {
		t.Errorf("rootfs: %s", got)
	}
}
