package layerstore_test

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/layerstore"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/sirupsen/logrus"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("writing a layer store (owners, whiteout devices, trusted.* xattrs) needs root")
	}
}

func requireDockerd(t *testing.T) {
	t.Helper()
	requireRoot(t)
	for _, b := range []string{"dockerd", "containerd"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s not installed: %v", b, err)
		}
	}
	t.Setenv(daemon.InContainerEnv, "")
}

func testLog(t *testing.T) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(testWriter{t})
	l.SetLevel(logrus.DebugLevel)
	l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true, DisableColors: true})
	return logrus.NewEntry(l)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

// startDaemon starts a private dockerd on dataRoot (kept after Stop, so
// the test can read it), under the repository-wide dockerd lock.
func startDaemon(t *testing.T, dataRoot string, seed *daemon.Seed) *daemon.Daemon {
	t.Helper()
	testenv.LockDockerd(t)
	return startLocked(t, dataRoot, seed)
}

// startLocked is startDaemon for a test that holds the dockerd lock
// already (one that starts several dockerds one after another).
func startLocked(t *testing.T, dataRoot string, seed *daemon.Seed) *daemon.Daemon {
	t.Helper()
	dir := testenv.ShortTempDir(t, "ls-")
	d, err := daemon.Start(context.Background(), daemon.Options{
		Dir: dir, DataRoot: dataRoot, Isolated: true, Seed: seed,
		StartupTimeout: 90 * time.Second, StopTimeout: 15 * time.Second, Log: testLog(t),
	})
	if err != nil {
		t.Fatalf("starting dockerd: %v", err)
	}
	t.Cleanup(func() { stopDaemon(t, d) })
	return d
}

func stopDaemon(t *testing.T, d *daemon.Daemon) {
	t.Helper()
	if err := d.Stop(context.Background()); err != nil {
		t.Errorf("stopping dockerd: %v", err)
	}
}

// dataRoot is a data root for a test, on the test's temp disk (not
// overlayfs: overlay2 cannot sit there), removed after the test.
func dataRoot(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(testenv.ShortTempDir(t, "lr-"), name)
	t.Cleanup(func() { os.RemoveAll(p) })
	return p
}

// imageOf is img as layerstore.Write takes it.
func imageOf(t *testing.T, name string, img v1.Image) layerstore.Image {
	t.Helper()
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	out := layerstore.Image{Name: name, Config: raw}
	for _, l := range ls {
		size, _ := l.Size()
		out.Layers = append(out.Layers, layerstore.Layer{Open: l.Compressed, Size: size})
	}
	return out
}

// layer is a tar of entries as given, gzip-compressed.
func layer(t *testing.T, files []testenv.File) v1.Layer {
	t.Helper()
	return testenv.LayerFromFiles(t, files, "gzip")
}

// rawLayer is a layer from tar bytes as they are (uncompressed).
func rawLayer(t *testing.T, b []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// rich is a busybox image with layers of every kind of entry a base has:
// modes, owners, xattrs, hardlinks, symlinks, a fifo, then whiteouts of a
// file and an opaque directory over what the lower layers hold.
func rich(t *testing.T) v1.Image {
	t.Helper()
	base := testenv.BusyboxImage(t, testenv.ImageOptions{})
	mt := time.Date(2023, 5, 6, 7, 8, 9, 123456789, time.UTC)
	l1 := layer(t, []testenv.File{
		{Name: "data/", Type: tar.TypeDir, Mode: 0o750, Uid: 1000, Gid: 1000, ModTime: mt,
			PAXRecords: map[string]string{"SCHILY.xattr.user.dir": "d"}},
		{Name: "data/keep.txt", Content: []byte("kept in the lower layer\n"), Mode: 0o640, Uid: 1000, Gid: 2000, ModTime: mt,
			PAXRecords: map[string]string{"SCHILY.xattr.user.note": "hello"}},
		{Name: "data/gone.txt", Content: []byte("whited out above\n")},
		{Name: "data/link", Type: tar.TypeLink, Linkname: "data/keep.txt", Uid: 1000, Gid: 2000, Mode: 0o640, ModTime: mt},
		{Name: "data/sym", Type: tar.TypeSymlink, Linkname: "keep.txt", Uid: 7, Gid: 8, ModTime: mt},
		{Name: "data/abs", Type: tar.TypeSymlink, Linkname: "/etc/passwd"},
		{Name: "data/suid", Content: []byte("#!/bin/sh\n"), Mode: 0o4755},
		{Name: "data/sticky/", Type: tar.TypeDir, Mode: 0o1777},
		{Name: "data/fifo", Type: tar.TypeFifo, Mode: 0o600},
		{Name: "data/nomode", Content: []byte("x"), Mode: testenv.ModeZero},
		{Name: "opaque/", Type: tar.TypeDir},
		{Name: "opaque/old1", Content: []byte("hidden by the opaque marker\n")},
		{Name: "opaque/sub/", Type: tar.TypeDir},
		{Name: "opaque/sub/old2", Content: []byte("hidden too\n")},
		{Name: "implicit/parent/file", Content: []byte("parents made on the way\n")},
	})
	l2 := layer(t, []testenv.File{
		{Name: "data/", Type: tar.TypeDir, Mode: 0o750, Uid: 1000, Gid: 1000, ModTime: mt},
		{Name: "data/.wh.gone.txt", ModTime: mt, Uid: 3, Gid: 4},
		{Name: "data/new.txt", Content: bytes.Repeat([]byte("new "), 5000)},
		{Name: "opaque/", Type: tar.TypeDir},
		{Name: "opaque/.wh..wh..opq"},
		{Name: "opaque/fresh", Content: []byte("only this survives\n")},
		{Name: "bin/.wh.false"},
	})
	return testenv.AppendLayers(t, base, l1, l2)
}

func writeStore(t *testing.T, root string, imgs ...layerstore.Image) error {
	t.Helper()
	return layerstore.Write(context.Background(), root, imgs, layerstore.Options{Log: testLog(t)})
}
