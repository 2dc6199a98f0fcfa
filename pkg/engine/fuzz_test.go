package engine

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// fuzzTar builds a tarball from name/content pairs (a name ending in "/"
// is a directory).
func fuzzTar(f *testing.F, entries ...string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; i+1 < len(entries); i += 2 {
		name, body := entries[i], entries[i+1]
		h := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}
		if name[len(name)-1] == '/' {
			h = &tar.Header{Name: name, Mode: 0o755, Typeflag: tar.TypeDir}
		}
		if err := tw.WriteHeader(h); err != nil {
			f.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			f.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		f.Fatal(err)
	}
	return buf.Bytes()
}

func gzipped(f *testing.F, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		f.Fatal(err)
	}
	return buf.Bytes()
}

var imageIDPattern = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// FuzzReadSaveManifest feeds arbitrary files to the docker-save tarball
// reader that runs before every load (load_base, load, load_file).
// Properties: no panic, no hang, and an accepted tarball names at least one
// image, each with a well-formed ID.
func FuzzReadSaveManifest(f *testing.F) {
	cfg := `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`
	manifest := `[{"Config":"cfg.json","RepoTags":["r:1"],"Layers":["l/layer.tar"]}]`
	good := fuzzTar(f, "manifest.json", manifest, "cfg.json", cfg, "l/", "", "l/layer.tar", "")
	seeds := [][]byte{
		good,
		gzipped(f, good),
		good[:len(good)/2], // truncated
		fuzzTar(f, "cfg.json", cfg, "./manifest.json", `[{"Config":"./cfg.json"}]`),                         // config first, ./ names
		fuzzTar(f, "manifest.json", `[{"Config":"../../cfg.json"}]`, "cfg.json", cfg),                       // climbing name
		fuzzTar(f, "manifest.json", `[{"Config":"a"},{"Config":"b"},{"Config":"a"}]`, "a", "{}", "b", "{}"), // several images
		fuzzTar(f, "manifest.json", `[]`),                                                                  // no images
		fuzzTar(f, "manifest.json", `[{"Config":""}]`),                                                     // no config
		fuzzTar(f, "manifest.json", `[{"Config":"missing.json"}]`),                                         // config absent
		fuzzTar(f, "manifest.json", `{"Config":"x"}`),                                                      // not a list
		fuzzTar(f, "manifest.json", `null`),                                                                // null
		fuzzTar(f, "index.json", `{"schemaVersion":2}`, "oci-layout", `{"imageLayoutVersion":"1.0.0"}`),    // OCI layout, no manifest.json
		fuzzTar(f, "manifest.json", manifest, "manifest.json", `[{"Config":"cfg.json"}]`, "cfg.json", cfg), // manifest twice
		[]byte{0x1f, 0x8b, 0x08, 0x00},                                                                     // broken gzip
		[]byte("not a tarball at all"),
		{},
	}
	// A header claiming a huge entry, cut short.
	var huge bytes.Buffer
	tw := tar.NewWriter(&huge)
	tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o644, Size: 1 << 40, Typeflag: tar.TypeReg})
	tw.Write([]byte(`[{"Config":"cfg.json"}]`))
	seeds = append(seeds, huge.Bytes())
	for _, s := range seeds {
		f.Add(s)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "image")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		images, err := readSaveManifest(ctx, path)
		if ctx.Err() != nil {
			t.Fatalf("readSaveManifest did not finish within 10 s on %d bytes", len(data))
		}
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if len(images) == 0 {
			t.Fatal("accepted a tarball with no images")
		}
		for _, img := range images {
			if !imageIDPattern.MatchString(img.ID) {
				t.Fatalf("accepted image with ID %q", img.ID)
			}
		}
	})
}
