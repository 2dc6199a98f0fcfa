package push

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func fakeHash(c string) v1.Hash { return v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(c, 64)} }

// TestLayerStorePulled: dockerd's distribution metadata, as dockerd 20.10
// and 26.1 write it for a FROM that BuildKit or the classic builder
// pulled, names the layer's blobs; an entry whose reverse record names
// another layer, or metadata that does not parse, names none.
func TestLayerStorePulled(t *testing.T) {
	root := t.TempDir()
	dist := filepath.Join(root, "image", "overlay2", "distribution")
	write := func(p, s string) {
		t.Helper()
		p = filepath.Join(dist, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	layer, other, bad := fakeHash("1"), fakeHash("2"), fakeHash("3")
	write("v2metadata-by-diffid/sha256/"+layer.Hex, `[{"Digest":"`+fakeHash("a").String()+`","SourceRepository":"127.0.0.1:5000/team/base","HMAC":""},`+
		`{"Digest":"`+fakeHash("b").String()+`","SourceRepository":"docker.io/library/busybox","HMAC":"x"},`+
		`{"Digest":"`+fakeHash("c").String()+`","SourceRepository":"127.0.0.1:5000/lies","HMAC":""}]`)
	write("diffid-by-digest/sha256/"+fakeHash("a").Hex, layer.String())
	write("diffid-by-digest/sha256/"+fakeHash("b").Hex, layer.String()+"\n")
	write("diffid-by-digest/sha256/"+fakeHash("c").Hex, other.String()) // names another layer
	write("v2metadata-by-diffid/sha256/"+bad.Hex, `{not json`)

	ls := &LayerStore{Root: root, Driver: "overlay2"}
	want := []pulledBlob{{fakeHash("a"), "127.0.0.1:5000/team/base"}, {fakeHash("b"), "docker.io/library/busybox"}}
	if got := ls.pulled(layer); !reflect.DeepEqual(got, want) {
		t.Errorf("pulled(%s) = %v, want %v", layer, got, want)
	}
	for _, h := range []v1.Hash{other, bad} {
		if got := ls.pulled(h); got != nil {
			t.Errorf("pulled(%s) = %v, want none", h, got)
		}
	}
	if got := (&LayerStore{Root: root, Driver: "btrfs"}).pulled(layer); got != nil {
		t.Errorf("btrfs: %v, want none", got)
	}
	if got := (*LayerStore)(nil).pulled(layer); got != nil {
		t.Errorf("no layer store: %v, want none", got)
	}
}

// TestPulledSource: of where dockerd pulled a layer from, the target
// repository itself wins, then another repository of the target's
// registry (a mount); another registry's is none.
func TestPulledSource(t *testing.T) {
	c, err := registry.New(registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Registry: c}
	target, _ := c.Repository("reg.example:5000/team/app")
	hub := pulledBlob{fakeHash("a"), "docker.io/library/busybox"}
	base := pulledBlob{fakeHash("b"), "reg.example:5000/team/base"}
	self := pulledBlob{fakeHash("c"), "reg.example:5000/team/app"}
	for _, tc := range []struct {
		srcs []pulledBlob
		want pulledBlob
		ok   bool
	}{
		{[]pulledBlob{hub, base, self}, self, true},
		{[]pulledBlob{hub, base}, base, true},
		{[]pulledBlob{hub}, pulledBlob{}, false},
		{nil, pulledBlob{}, false},
	} {
		if got, ok := pulledSource(o, target, tc.srcs); got != tc.want || ok != tc.ok {
			t.Errorf("pulledSource(%v) = %v %v, want %v %v", tc.srcs, got, ok, tc.want, tc.ok)
		}
	}
	hubTarget, _ := c.Repository("index.docker.io/team/app")
	if got, ok := pulledSource(o, hubTarget, []pulledBlob{hub}); !ok || got != hub {
		t.Errorf("Docker Hub target: %v %v, want %v (docker.io is index.docker.io)", got, ok, hub)
	}
}
