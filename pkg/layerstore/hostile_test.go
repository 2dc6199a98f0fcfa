package layerstore_test

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/layerstore"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// rawTar is a tar of headers as given (names not cleaned), for layers a
// well-behaved writer would not make.
func rawTar(t *testing.T, hs []*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range hs {
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(h.Linkname))
		}
		body := h.Linkname
		if h.Typeflag == tar.TypeReg {
			h.Linkname = ""
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(body))
		}
	}
	tw.Close()
	return buf.Bytes()
}

// TestHostileLayersStayInside writes layers that try to reach out of their
// diff folder: nothing appears outside the data root, and a refused layer
// leaves the data root empty.
func TestHostileLayersStayInside(t *testing.T) {
	requireRoot(t)
	parent := testenv.ShortTempDir(t, "lh-")
	bait := filepath.Join(parent, "bait")
	if err := os.Mkdir(bait, 0o755); err != nil {
		t.Fatal(err)
	}
	reg := func(name, content string) *tar.Header {
		return &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Linkname: content}
	}
	for _, c := range []struct {
		name    string
		entries []*tar.Header
		refused string // the error says this; "" means the layer is written
		inside  string // a file that must then be in the diff folder
	}{
		{"dot-dot", []*tar.Header{reg("../escape", "x")}, "outside the image root", ""},
		{"deep dot-dot", []*tar.Header{reg("a/../../../bait/escape", "x")}, "outside the image root", ""},
		{"absolute name", []*tar.Header{reg(bait+"/escape", "x")}, "", strings.TrimPrefix(bait, "/") + "/escape"},
		{"symlink to /", []*tar.Header{
			{Name: "evil", Typeflag: tar.TypeSymlink, Linkname: "/"},
			reg("evil"+bait+"/escape", "x"),
		}, "", strings.TrimPrefix(bait, "/") + "/escape"},
		{"symlink to the bait", []*tar.Header{
			{Name: "evil", Typeflag: tar.TypeSymlink, Linkname: bait},
			reg("evil/escape", "x"),
		}, "", strings.TrimPrefix(bait, "/") + "/escape"},
		{"symlink up", []*tar.Header{
			{Name: "evil", Typeflag: tar.TypeSymlink, Linkname: "../../../../../../../../" + bait},
			reg("evil/escape", "x"),
		}, "", strings.TrimPrefix(bait, "/") + "/escape"},
		{"hardlink out", []*tar.Header{{Name: "hl", Typeflag: tar.TypeLink, Linkname: "../../../../etc/passwd"}}, "outside the image root", ""},
		{"hardlink through a symlink", []*tar.Header{
			{Name: "evil", Typeflag: tar.TypeSymlink, Linkname: "/etc"},
			{Name: "hl", Typeflag: tar.TypeLink, Linkname: "evil/passwd"},
		}, "hardlink target", ""},
		{"whiteout out", []*tar.Header{reg("../.wh.bait", "")}, "outside the image root", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := filepath.Join(parent, "root-"+strings.ReplaceAll(c.name, " ", "-"))
			img, err := mutate.AppendLayers(empty.Image, rawLayer(t, rawTar(t, c.entries)))
			if err != nil {
				t.Fatal(err)
			}
			err = writeStore(t, root, imageOf(t, c.name, img))
			if ents, _ := os.ReadDir(bait); len(ents) > 0 {
				t.Errorf("the layer wrote %s outside its diff folder", filepath.Join(bait, ents[0].Name()))
			}
			if c.refused != "" {
				if err == nil || !strings.Contains(err.Error(), c.refused) {
					t.Fatalf("Write: %v, want an error saying %q", err, c.refused)
				}
				if ents, _ := os.ReadDir(root); len(ents) > 0 {
					t.Errorf("a refused layer left %s in the data root", ents[0].Name())
				}
				return
			}
			if err != nil {
				t.Fatalf("Write: %v", err)
			}
			m, _ := filepath.Glob(filepath.Join(root, "overlay2", "*", "diff", c.inside))
			if len(m) != 1 {
				t.Errorf("%s is not in the layer's diff folder", c.inside)
			}
		})
	}
}

// TestWrongDiffIDWritesNothing gives Write a blob that is not the layer the
// config names: it fails with a DiffIDError naming both digests, and the
// data root is empty.
func TestWrongDiffIDWritesNothing(t *testing.T) {
	requireRoot(t)
	good := rich(t)
	other := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{1000}})
	li := imageOf(t, "rich", good)
	lo := imageOf(t, "other", other)
	li.Layers[1] = lo.Layers[1] // the second layer swapped for another
	root := dataRoot(t, "wrong")
	err := writeStore(t, root, li)
	var de *layerstore.DiffIDError
	if !errors.As(err, &de) || de.Layer != 2 {
		t.Fatalf("Write: %v, want a DiffIDError for layer 2", err)
	}
	cf, _ := good.ConfigFile()
	if de.Want != cf.RootFS.DiffIDs[1].String() {
		t.Errorf("DiffIDError.Want %s, want %s", de.Want, cf.RootFS.DiffIDs[1])
	}
	if ents, _ := os.ReadDir(root); len(ents) > 0 {
		t.Errorf("a failed Write left %s in the data root", ents[0].Name())
	}
}

// TestNotFresh refuses a data root that holds anything.
func TestNotFresh(t *testing.T) {
	requireRoot(t)
	root := dataRoot(t, "used")
	os.MkdirAll(filepath.Join(root, "containers"), 0o700)
	err := writeStore(t, root, imageOf(t, "rich", rich(t)))
	var nf *layerstore.NotFreshError
	if !errors.As(err, &nf) {
		t.Fatalf("Write: %v, want a NotFreshError", err)
	}
	if ents, _ := os.ReadDir(root); len(ents) != 1 {
		t.Errorf("the data root holds %d entries after the refusal, want its 1", len(ents))
	}
}
