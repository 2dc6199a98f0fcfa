package engine

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// writeTree makes files (name → content; a name ending in "/" is a folder).
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// contextTar writes the context and returns entry name → content.
func contextTar(t *testing.T, dir, dockerfile string) (*buildContext, map[string]string) {
	t.Helper()
	bc, err := newBuildContext(dir, dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bc.write(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" {
			t.Errorf("%s owned by %d:%d %q", h.Name, h.Uid, h.Gid, h.Uname)
		}
		b, _ := io.ReadAll(tr)
		if h.Typeflag == tar.TypeSymlink {
			b = []byte("-> " + h.Linkname)
		}
		out[h.Name] = string(b)
	}
	return bc, out
}

func names(m map[string]string) []string {
	var n []string
	for k := range m {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

func TestBuildContextHonoursDockerignore(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"Dockerfile":     "FROM scratch\n",
		".dockerignore":  "# comment\nignored.txt\n*.log\n!keep.log\nsecret/\nDockerfile\n.dockerignore\nsub/**\n!sub/wanted.txt\n/abs-ignored\n",
		"kept.txt":       "k",
		"ignored.txt":    "i",
		"a.log":          "a",
		"keep.log":       "k",
		"secret/s.txt":   "s",
		"sub/x.txt":      "x",
		"sub/wanted.txt": "w", // sub/** keeps the folder itself, as docker does
		"abs-ignored":    "x",
		"empty/":         "",
		"deep/er/f":      "f",
	})
	if err := os.Symlink("kept.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	bc, files := contextTar(t, dir, "")
	want := []string{".dockerignore", "Dockerfile", "deep/", "deep/er/", "deep/er/f", "empty/", "keep.log", "kept.txt", "link", "sub/", "sub/wanted.txt"}
	if got := names(files); !reflect.DeepEqual(got, want) {
		t.Fatalf("context holds %q\nwant        %q", got, want)
	}
	if bc.dockerfile != "Dockerfile" || files["link"] != "-> kept.txt" || files["deep/er/f"] != "f" {
		t.Fatalf("dockerfile %q, files %q", bc.dockerfile, files)
	}
}

func TestBuildContextDockerfileInSubfolder(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"docker/app.Dockerfile": "FROM scratch\n",
		"docker/other":          "o",
		".dockerignore":         "docker\n",
		"src/main.go":           "package main",
	})
	bc, files := contextTar(t, dir, filepath.Join(dir, "docker", "app.Dockerfile"))
	if bc.dockerfile != "docker/app.Dockerfile" {
		t.Fatalf("dockerfile %q", bc.dockerfile)
	}
	want := []string{".dockerignore", "docker/app.Dockerfile", "src/", "src/main.go"}
	if got := names(files); !reflect.DeepEqual(got, want) {
		t.Fatalf("context holds %q, want %q", got, want)
	}
}

func TestBuildContextDockerfileOutside(t *testing.T) {
	for _, withIgnore := range []bool{false, true} {
		dir, other := t.TempDir(), t.TempDir()
		tree := map[string]string{"data.txt": "d", "junk.txt": "j"}
		if withIgnore {
			tree[".dockerignore"] = "junk.txt"
		}
		writeTree(t, dir, tree)
		writeTree(t, other, map[string]string{"build.Dockerfile": "FROM scratch\nCOPY . /\n"})
		bc, files := contextTar(t, dir, filepath.Join(other, "build.Dockerfile"))
		if !strings.HasPrefix(bc.dockerfile, ".dockerfile.") || len(bc.dockerfile) != len(".dockerfile.")+20 {
			t.Fatalf("generated dockerfile name %q", bc.dockerfile)
		}
		if files[bc.dockerfile] != "FROM scratch\nCOPY . /\n" {
			t.Fatalf("dockerfile content %q", files[bc.dockerfile])
		}
		wantIgnore := ".dockerignore\n" + bc.dockerfile + "\n"
		wantNames := []string{".dockerignore", bc.dockerfile, "data.txt", "junk.txt"}
		if withIgnore {
			wantIgnore = "junk.txt\n" + bc.dockerfile + "\n"
			wantNames = []string{".dockerignore", bc.dockerfile, "data.txt"}
		}
		if files[".dockerignore"] != wantIgnore {
			t.Fatalf(".dockerignore %q, want %q", files[".dockerignore"], wantIgnore)
		}
		sort.Strings(wantNames)
		if got := names(files); !reflect.DeepEqual(got, wantNames) {
			t.Fatalf("context holds %q, want %q", got, wantNames)
		}
	}
}

func TestBuildContextErrors(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"f": "x", "sub/": ""})
	if _, err := newBuildContext(filepath.Join(dir, "nope"), ""); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing context dir: %v", err)
	}
	if _, err := newBuildContext(filepath.Join(dir, "f"), filepath.Join(dir, "f")); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("file as context: %v", err)
	}
	if _, err := newBuildContext(dir, ""); err == nil || !strings.Contains(err.Error(), "Dockerfile") {
		t.Errorf("missing Dockerfile: %v", err)
	}
	if _, err := newBuildContext(dir, filepath.Join(dir, "sub")); err == nil || !strings.Contains(err.Error(), "not a file") {
		t.Errorf("folder as Dockerfile: %v", err)
	}
	bc, err := newBuildContext(dir, filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := bc.write(ctx, io.Discard); !errors.Is(err, context.Canceled) {
		t.Errorf("write with a canceled context: %v", err)
	}
}
