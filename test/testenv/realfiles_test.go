package testenv

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// WriteSection replaces its own section in place, keeps the text around
// it and other sections, appends a new one, and refuses markers out of
// order instead of eating the text between them.
func TestWriteSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bench.md")
	if err := WriteSection(path, "a", "first\n"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("# Title\n\n"+read(t, path)+"\nbetween\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteSection(path, "b", "\nsecond\n"); err != nil {
		t.Fatal(err)
	}
	if err := WriteSection(path, "a", "third"); err != nil {
		t.Fatal(err)
	}
	want := "# Title\n\n<!-- a -->\nthird\n<!-- /a -->\n\nbetween\n\n<!-- b -->\nsecond\n<!-- /b -->\n"
	if got := read(t, path); got != want {
		t.Errorf("file:\n%q\nwant:\n%q", got, want)
	}

	bad := filepath.Join(t.TempDir(), "bad.md")
	if err := os.WriteFile(bad, []byte("<!-- /a -->\nkeep\n<!-- a -->\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteSection(bad, "a", "x"); err == nil || !strings.Contains(err.Error(), "not in order") {
		t.Errorf("markers out of order: err = %v", err)
	}
	if got := read(t, bad); got != "<!-- /a -->\nkeep\n<!-- a -->\n" {
		t.Errorf("the file changed: %q", got)
	}
}

// A layer of host files holds each file at its own path with its bytes,
// and the files are split by bytes, in order.
func TestHostFiles(t *testing.T) {
	dir := t.TempDir()
	for name, size := range map[string]int{"a/1": 100, "a/2": 300, "b/3": 200, "b/big": 5000, "b/empty": 0} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, bytes.Repeat([]byte{'x'}, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files := HostFiles{Roots: []string{filepath.Join(dir, "b"), filepath.Join(dir, "a")}, Budget: 600, MaxFile: 1000}.Collect(t)
	var names []string
	for _, f := range files {
		names = append(names, strings.TrimPrefix(f.Path, dir+"/"))
	}
	if got := strings.Join(names, " "); got != "b/3 a/1 a/2" {
		t.Errorf("collected %q, want roots in order, big and empty files skipped", got)
	}
	groups := SplitHostFiles(files, 2)
	if len(groups[0]) != 2 || len(groups[1]) != 1 || HostFilesSize(groups[1]) != 300 {
		t.Errorf("split: %v", groups)
	}

	l := FileLayer(t, t.TempDir(), "gzip", HostFilesTar(files))
	if LayerFile(l) == "" {
		t.Error("LayerFile of a FileLayer is empty")
	}
	for _, layer := range []interface{ Uncompressed() (io.ReadCloser, error) }{l, HostFilesLayer(t, files)} {
		rc, err := layer.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		got := map[string]int64{}
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, tr)
			if n != h.Size || !h.ModTime.Equal(DefaultCreated) {
				t.Errorf("%s: %d bytes (header %d), mtime %s", h.Name, n, h.Size, h.ModTime)
			}
			got[h.Name] = n
		}
		rc.Close()
		for _, f := range files {
			if got[strings.TrimPrefix(f.Path, "/")] != f.Size {
				t.Errorf("layer lacks %s (%d bytes): %v", f.Path, f.Size, got)
			}
		}
	}

	ctx := filepath.Join(t.TempDir(), "ctx")
	CopyHostFiles(t, files[:1], ctx)
	if fi, err := os.Stat(filepath.Join(ctx, files[0].Path)); err != nil || fi.Size() != 200 {
		t.Errorf("copied file: %v, %v", fi, err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
