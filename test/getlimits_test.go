package test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// binaryGet is one run of the built in binary.
type binaryGet struct {
	stdout, stderr string
	code           int
	peakRSS        int64
}

// runInBinary runs the built in binary with req into dest and measures its
// peak RSS (VmHWM, polled as make bench does).
func runInBinary(t *testing.T, bin, dest string, req map[string]any) binaryGet {
	t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "in"), dest)
	cmd.Stdin = bytes.NewReader(b)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	peak := testenv.PeakRSS(cmd.Process.Pid)
	err = cmd.Wait()
	g := binaryGet{stdout: stdout.String(), stderr: stderr.String(), peakRSS: <-peak}
	if ee, ok := err.(*exec.ExitError); ok {
		g.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return g
}

// lastLine is the last line of a log.
func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// smallImageBlobs adds the blobs of a one-file image to h: a layer and a
// config whose history holds historyBytes of padding. declare, when not
// zero, is the size the returned config descriptor claims.
func smallImageBlobs(t *testing.T, h *hostileRegistry, historyBytes int, chunked bool) (config v1.Descriptor, layers []v1.Descriptor) {
	t.Helper()
	l := testenv.LayerFromFiles(t, []testenv.File{{Name: "hello", Content: []byte("hello from the hostile registry\n")}}, "gzip")
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	blob, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	diffID, _ := l.DiffID()
	ld, lo := h.addBytes(t, "blobs", string(types.OCILayer), blob)
	cd, co := h.add(t, "blobs", string(types.OCIConfigJSON), chunked, func(w io.Writer) error {
		return writeConfig(w, diffID, historyBytes)
	})
	return v1.Descriptor{MediaType: types.OCIConfigJSON, Size: co.size, Digest: cd},
		[]v1.Descriptor{{MediaType: types.OCILayer, Size: lo.size, Digest: ld}}
}

// writeConfig streams an image config whose history has about
// historyBytes of entries, as a config with a huge history would.
func writeConfig(w io.Writer, diffID v1.Hash, historyBytes int) error {
	if _, err := fmt.Fprintf(w, `{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":[%q]},"history":[{"created_by":"ADD hello"}`, diffID.String()); err != nil {
		return err
	}
	const entry = `,{"created_by":"RUN padding %08d ................................................................","empty_layer":true}`
	for i, n := 0, 0; n < historyBytes; i++ {
		k, err := fmt.Fprintf(w, entry, i)
		if err != nil {
			return err
		}
		n += k
	}
	_, err := io.WriteString(w, "]}")
	return err
}

// streamedManifest serves an OCI manifest over config and layers padded
// with one annotation of padBytes, generated while it is sent.
func streamedManifest(t *testing.T, h *hostileRegistry, config v1.Descriptor, layers []v1.Descriptor, padBytes int, chunked bool) (v1.Hash, *hostileObject) {
	t.Helper()
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: config, Layers: layers}
	head, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	head = bytes.TrimSuffix(head, []byte("}"))
	pad := bytes.Repeat([]byte("x"), 1<<20)
	return h.add(t, "manifests", string(types.OCIManifestSchema1), chunked, func(w io.Writer) error {
		if _, err := w.Write(append(head, `,"annotations":{"pad":"`...)); err != nil {
			return err
		}
		for left := padBytes; left > 0; left -= len(pad) {
			if _, err := w.Write(pad[:min(left, len(pad))]); err != nil {
				return err
			}
		}
		_, err := io.WriteString(w, `"}}`)
		return err
	})
}

func hostileGetReq(h *hostileRegistry, digest v1.Hash) map[string]any {
	return map[string]any{
		"source":  map[string]any{"repository": h.Host + "/hostile/app"},
		"version": map[string]any{"digest": digest.String()},
	}
}

// TestGetRefusesHugeManifests: a registry (here a hostile loopback server:
// the real one refuses manifests over 4 MiB) that answers with a manifest
// over 8 MiB makes the get fail with a message that says so, before the
// manifest is read into memory: at once when it declares its size, after
// 8 MiB when it streams. A manifest under the cap still works.
func TestGetRefusesHugeManifests(t *testing.T) {
	bin := buildBinaries(t)
	h := startHostileRegistry(t)
	config, layers := smallImageBlobs(t, h, 0, false)

	underCap, _ := streamedManifest(t, h, config, layers, 8<<20-4096, false)
	declared, declaredObj := streamedManifest(t, h, config, layers, 9<<20, false)
	// One byte more: another digest than the declared one.
	chunked, _ := streamedManifest(t, h, config, layers, 9<<20+1, true)
	huge, hugeObj := streamedManifest(t, h, config, layers, 200<<20, true)
	// An index whose linux/amd64 image has a 9 MiB manifest.
	idx, _ := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{{
		MediaType: types.OCIManifestSchema1, Digest: declared, Size: declaredObj.size, Platform: &v1.Platform{OS: "linux", Architecture: "amd64"},
	}}})
	index, _ := h.addBytes(t, "manifests", string(types.OCIImageIndex), idx)

	t.Run("a manifest just under the cap is read", func(t *testing.T) {
		dest := t.TempDir()
		g := runInBinary(t, bin, dest, hostileGetReq(h, underCap))
		t.Logf("exit %d, peak RSS %d MiB", g.code, g.peakRSS>>20)
		if g.code != 0 {
			t.Fatalf("the get failed:\n%s", g.stderr)
		}
		if got := readFile(t, filepath.Join(dest, "rootfs", "hello")); got != "hello from the hostile registry\n" {
			t.Errorf("rootfs/hello = %q", got)
		}
		if g.peakRSS > getMemoryBound {
			t.Errorf("peak RSS %d MiB, over the README's 64 MiB", g.peakRSS>>20)
		}
	})
	blobRequests := func() (n int) {
		for _, r := range h.requests() {
			if strings.Contains(r, "/blobs/") {
				n++
			}
		}
		return n
	}
	blobsBefore := blobRequests()
	for _, c := range []struct {
		name   string
		digest v1.Hash
		want   string
	}{
		{"a 9 MiB manifest that declares its size", declared, fmt.Sprintf("the image's manifest is %d bytes, more than the 8 MiB this resource reads", declaredObj.size)},
		{"a 9 MiB manifest without Content-Length", chunked, "the image's manifest is larger than the 8 MiB this resource reads"},
		{"a 200 MiB manifest without Content-Length", huge, "the image's manifest is larger than the 8 MiB this resource reads"},
		{"an index whose image's manifest is 9 MiB", index, "the image's manifest is"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "get")
			g := runInBinary(t, bin, dest, hostileGetReq(h, c.digest))
			last := lastLine(g.stderr)
			t.Logf("exit %d, peak RSS %d MiB: %s", g.code, g.peakRSS>>20, last)
			if g.code != 1 || g.stdout != "" {
				t.Fatalf("exit %d, stdout %q; want 1 and nothing:\n%s", g.code, g.stdout, g.stderr)
			}
			if !strings.Contains(last, c.want) || !strings.Contains(last, "containerd refuses manifests over 4 MiB") {
				t.Errorf("the error does not say the manifest is too large (%q): %q", c.want, last)
			}
			if g.peakRSS > getMemoryBound {
				t.Errorf("peak RSS %d MiB, over the README's 64 MiB", g.peakRSS>>20)
			}
			assertNothingComplete(t, dest)
		})
	}
	// The stream was cut: at most the cap plus what the loopback socket
	// buffers hold left the server, not the 200 MiB (go-containerregistry
	// alone reads manifests up to 100 MiB).
	if sent := hugeObj.sent.Load(); sent > 32<<20 {
		t.Errorf("the server sent %d MiB of the 200 MiB manifest", sent>>20)
	}
	if n := blobRequests() - blobsBefore; n > 0 {
		t.Errorf("%d blobs were fetched for refused manifests", n)
	}
}

// TestGetRefusesHugeConfigs: a manifest that declares a config over 8 MiB
// (here 197 MiB of history, which took the get to 1 GiB) fails before the
// config is fetched; a config that declares a small size and streams
// hundreds of MiB is cut at the declared size; a config just under the cap
// works within the get's memory bound.
func TestGetRefusesHugeConfigs(t *testing.T) {
	bin := buildBinaries(t)
	h := startHostileRegistry(t)

	bigConfig, layers := smallImageBlobs(t, h, 197<<20, false)
	big := h.addImage(t, bigConfig, layers, nil, false)

	// A config that claims 1 KiB and then streams 512 MiB.
	liarConfig, _ := smallImageBlobs(t, h, 512<<20, true)
	liarSent := h.objects["blobs/"+liarConfig.Digest.String()]
	liarConfig.Size = 1024
	liar := h.addImage(t, liarConfig, layers, nil, false)

	okConfig, _ := smallImageBlobs(t, h, 8<<20-64<<10, false)
	ok := h.addImage(t, okConfig, layers, nil, false)

	t.Run("a 197 MiB config is not fetched", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "get")
		g := runInBinary(t, bin, dest, hostileGetReq(h, big))
		last := lastLine(g.stderr)
		t.Logf("exit %d, peak RSS %d MiB: %s", g.code, g.peakRSS>>20, last)
		if g.code != 1 || g.stdout != "" {
			t.Fatalf("exit %d, stdout %q; want 1 and nothing:\n%s", g.code, g.stdout, g.stderr)
		}
		want := fmt.Sprintf("the image's config is %d bytes, more than the 8 MiB this resource reads", bigConfig.Size)
		if !strings.Contains(last, want) {
			t.Errorf("the error does not say %q: %q", want, last)
		}
		for _, r := range h.requests() {
			if strings.Contains(r, bigConfig.Digest.String()) {
				t.Errorf("the config was requested: %s", r)
			}
		}
		if g.peakRSS > getMemoryBound {
			t.Errorf("peak RSS %d MiB, over the README's 64 MiB", g.peakRSS>>20)
		}
		assertNothingComplete(t, dest)
	})
	t.Run("a config that streams past its declared size is cut there", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "get")
		g := runInBinary(t, bin, dest, hostileGetReq(h, liar))
		last := lastLine(g.stderr)
		t.Logf("exit %d, peak RSS %d MiB, server sent %d MiB: %s", g.code, g.peakRSS>>20, liarSent.sent.Load()>>20, last)
		if g.code != 1 || g.stdout != "" {
			t.Fatalf("exit %d, stdout %q; want 1 and nothing:\n%s", g.code, g.stdout, g.stderr)
		}
		if !strings.Contains(last, "read config "+liarConfig.Digest.String()[:19]) || !strings.Contains(last, "the registry sent more than 1024 bytes, the manifest says 1024") {
			t.Errorf("the error does not say the config does not match its digest: %q", last)
		}
		if sent := liarSent.sent.Load(); sent > 32<<20 {
			t.Errorf("the server sent %d MiB of the config", sent>>20)
		}
		if g.peakRSS > getMemoryBound {
			t.Errorf("peak RSS %d MiB, over the README's 64 MiB", g.peakRSS>>20)
		}
		assertNothingComplete(t, dest)
	})
	t.Run("a config just under the cap is read", func(t *testing.T) {
		dest := t.TempDir()
		g := runInBinary(t, bin, dest, map[string]any{
			"source": map[string]any{"repository": h.Host + "/hostile/app"}, "version": map[string]any{"digest": ok.String()},
			"params": map[string]any{"save": true, "rootfs": true},
		})
		t.Logf("exit %d, peak RSS %d MiB (config %d bytes)", g.code, g.peakRSS>>20, okConfig.Size)
		if g.code != 0 {
			t.Fatalf("the get failed:\n%s", g.stderr)
		}
		if got := readFile(t, filepath.Join(dest, "image-id")); strings.TrimSpace(got) != okConfig.Digest.String() {
			t.Errorf("image-id %q, want %s", got, okConfig.Digest)
		}
		if g.peakRSS > getMemoryBound {
			t.Errorf("peak RSS %d MiB, over the README's 64 MiB", g.peakRSS>>20)
		}
	})
}

// TestGetMemoryWithManyEntries: a layer of 300k empty files (one tar entry
// each, 1000 to a folder) is written to rootfs/ and rootfs.tar within the
// README's 64 MiB: what the get keeps per entry (names seen in the layer,
// directory metadata, the flattening's plan) goes to temporary files past
// a fixed size. It took 151 MiB before. DEST is a tmpfs: this machine's
// disk takes ~120 us to create a file; the memory is the same on any.
func TestGetMemoryWithManyEntries(t *testing.T) {
	const n = 300_000
	bin := buildBinaries(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	layer := testenv.FileLayer(t, t.TempDir(), "gzip", testenv.EmptyFiles(n))
	img := testenv.AppendLayers(t, testenv.BusyboxImage(t, testenv.ImageOptions{}), layer)
	digest := reg.Push(t, "memory/entries:1", img).String()
	disk, _ := testenv.Tmpfs(t, "size=2g,nr_inodes=1m")
	dest := filepath.Join(disk, "get")
	g := runInBinary(t, bin, dest, map[string]any{
		"source":  source(reg, "memory/entries", map[string]any{"tag": "1"}),
		"version": map[string]any{"digest": digest},
		"params":  map[string]any{"rootfs": true},
	})
	t.Logf("exit %d, peak RSS %d MiB", g.code, g.peakRSS>>20)
	if g.code != 0 {
		t.Fatalf("the get failed:\n%s", g.stderr)
	}
	if g.peakRSS > getMemoryBound {
		t.Errorf("peak RSS %d MiB with %d entries, over the README's 64 MiB", g.peakRSS>>20, n)
	}
	files := 0
	filepath.WalkDir(filepath.Join(dest, "rootfs", "files"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files++
		}
		return err
	})
	if files != n {
		t.Errorf("rootfs/files holds %d files, want %d", files, n)
	}
	f, err := os.Open(filepath.Join(dest, "rootfs.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr, inFiles := tar.NewReader(f), 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg && strings.HasPrefix(h.Name, "files/") {
			inFiles++
		}
	}
	if inFiles != n {
		t.Errorf("rootfs.tar holds %d files under files/, want %d", inFiles, n)
	}
}
