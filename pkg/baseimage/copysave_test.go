package baseimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// tarEntries reads a tarball into name -> content.
func tarEntries(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		c, _ := io.ReadAll(tr)
		out[CleanName(h.Name)] = c
	}
}

// TestCopySave: the copy names no image (RepoTags emptied, no
// repositories file), replaces only the configs it is given, and keeps every
// other entry byte for byte, from plain and gzip-compressed tarballs.
func TestCopySave(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "image.tar")
	orig := writeSaveWithRepositories(t, plain)
	gz := filepath.Join(dir, "image.tar.gz")
	gzipFile(t, plain, gz)

	var m []map[string]json.RawMessage
	json.Unmarshal(orig["manifest.json"], &m)
	var cfgName string
	json.Unmarshal(m[0]["Config"], &cfgName)
	newCfg := []byte(`{"os":"linux"}`)

	for _, p := range []string{plain, gz} {
		for _, replace := range []map[string][]byte{nil, {CleanName(cfgName): newCfg}} {
			var out bytes.Buffer
			if err := CopySave(context.Background(), &out, p, replace); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			checkCopy(t, p, tarEntries(t, out.Bytes()), orig, cfgName, replace)
		}
	}
}

// writeSaveWithRepositories writes a docker-save tarball at p with the
// legacy repositories file docker save writes next to manifest.json, and
// returns its entries.
func writeSaveWithRepositories(t *testing.T, p string) map[string][]byte {
	img := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{5000}})
	testenv.SaveTarball(t, p, img, "reg.example/team/base:1")
	raw, _ := os.ReadFile(p)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		c, _ := io.ReadAll(tr)
		tw.WriteHeader(h)
		tw.Write(c)
	}
	repos := `{"reg.example/team/base":{"1":"x"}}`
	tw.WriteHeader(&tar.Header{Name: "repositories", Mode: 0o644, Size: int64(len(repos)), Typeflag: tar.TypeReg})
	tw.Write([]byte(repos))
	tw.Close()
	os.WriteFile(p, buf.Bytes(), 0o644)
	return tarEntries(t, buf.Bytes())
}

// checkCopy compares the copy of p (got) with the original's entries.
func checkCopy(t *testing.T, p string, got, orig map[string][]byte, cfgName string, replace map[string][]byte) {
	t.Helper()
	if _, ok := got["repositories"]; ok {
		t.Errorf("%s: the repositories file was copied", p)
	}
	var gm []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(got["manifest.json"], &gm); err != nil || len(gm) != 1 || len(gm[0].RepoTags) != 0 || gm[0].Config != cfgName || len(gm[0].Layers) != 2 {
		t.Errorf("%s: manifest.json %s (%v)", p, got["manifest.json"], err)
	}
	for name, c := range orig {
		switch {
		case name == "manifest.json" || name == "repositories":
		case replace != nil && name == CleanName(cfgName):
			if !bytes.Equal(got[name], replace[name]) {
				t.Errorf("%s: config %s not replaced: %s", p, name, got[name])
			}
		case !bytes.Equal(got[name], c):
			t.Errorf("%s: entry %s changed (%d bytes, was %d)", p, name, len(got[name]), len(c))
		}
	}
}

func TestCopySaveRefusesATarballWithoutManifest(t *testing.T) {
	notSave := filepath.Join(t.TempDir(), "layer.tar")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "a", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
	tw.Write([]byte("a"))
	tw.Close()
	os.WriteFile(notSave, buf.Bytes(), 0o644)
	if err := CopySave(context.Background(), io.Discard, notSave, nil); err == nil {
		t.Error("a tarball without manifest.json was copied")
	}
}

func gzipFile(t *testing.T, src, dst string) {
	t.Helper()
	b, _ := os.ReadFile(src)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFillPlatform: only empty os/architecture (and variant with an
// architecture) are set; a config naming them is returned unchanged.
func TestFillPlatform(t *testing.T) {
	arm := v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	for _, c := range []struct{ in, want string }{
		{`{"architecture":"","os":"","config":{"User":"a<b"},"rootfs":{"type":"layers","diff_ids":[]}}`,
			`{"architecture":"arm64","config":{"User":"a<b"},"os":"linux","rootfs":{"type":"layers","diff_ids":[]},"variant":"v8"}`},
		{`{"config":{}}`, `{"architecture":"arm64","config":{},"os":"linux","variant":"v8"}`},
		{`{"os":"linux","config":{}}`, `{"architecture":"arm64","config":{},"os":"linux","variant":"v8"}`},
		{`{"os":"windows","architecture":"amd64"}`, `{"os":"windows","architecture":"amd64"}`},
	} {
		got, changed, err := FillPlatform([]byte(c.in), arm)
		if err != nil || string(got) != c.want || changed != (c.in != c.want) {
			t.Errorf("FillPlatform(%s) = %s, %v, %v; want %s", c.in, got, changed, err, c.want)
		}
	}
	for _, bad := range []string{`[]`, `null`, `{`} {
		if _, _, err := FillPlatform([]byte(bad), arm); err == nil {
			t.Errorf("FillPlatform(%s) accepted it", bad)
		}
	}
}
