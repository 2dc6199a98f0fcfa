package resource

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// testIndex is an index with an entry per platform ("unknown/unknown" is an
// attestation manifest, as buildx writes them), each digest distinct.
func testIndex(t *testing.T, plats ...string) []byte {
	t.Helper()
	var ms []map[string]any
	for i, p := range plats {
		pl, err := protocol.ParsePlatformString(p)
		if err != nil {
			t.Fatal(err)
		}
		plat := map[string]any{"os": pl.OS, "architecture": pl.Architecture}
		if pl.Variant != "" {
			plat["variant"] = pl.Variant
		}
		ms = append(ms, map[string]any{
			"mediaType":   "application/vnd.oci.image.manifest.v1+json",
			"size":        100 + i,
			"digest":      "sha256:" + strings.Repeat(string(rune('a'+i)), 64),
			"platform":    plat,
			"annotations": map[string]string{"note": "<" + p + ">"},
		})
	}
	b, err := marshalNoEscape(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": ms, "annotations": map[string]string{"org.example": "kept"}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func plats(t *testing.T, ss ...string) []protocol.Platform {
	t.Helper()
	var out []protocol.Platform
	for _, s := range ss {
		p, err := protocol.ParsePlatformString(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func TestChooseChildren(t *testing.T) {
	idx := testIndex(t, "linux/amd64", "linux/arm64", "linux/arm/v6", "linux/arm/v7", "unknown/unknown", "linux/s390x")
	for _, c := range []struct {
		want []string
		pos  []int
	}{
		{[]string{"linux/amd64", "linux/arm64"}, []int{0, 1}},
		{[]string{"linux/arm64/v8", "linux/amd64"}, []int{1, 0}}, // arm64 without a variant is v8
		{[]string{"linux/arm/v7"}, []int{3}},
		{[]string{"linux/s390x", "linux/arm/v6"}, []int{5, 2}},
	} {
		got, err := chooseChildren("r@d", idx, plats(t, c.want...))
		if err != nil {
			t.Errorf("%v: %v", c.want, err)
			continue
		}
		for i, ch := range got {
			if ch.pos != c.pos[i] || ch.field != "params.platforms["+string(rune('0'+i))+"]" || ch.want.String() != c.want[i] {
				t.Errorf("%v: child %d = pos %d field %s want %s", c.want, i, ch.pos, ch.field, ch.want)
			}
		}
	}
}

func TestChooseChildrenErrors(t *testing.T) {
	idx := testIndex(t, "linux/amd64", "linux/arm/v6", "linux/arm/v7", "unknown/unknown", "linux/arm64/v8")
	for _, c := range []struct {
		want []string
		msg  string
	}{
		// The list of what the index has leaves the attestation out.
		{[]string{"linux/amd64", "linux/ppc64le"}, "params.platforms[1]: image r@d has no linux/ppc64le image; it has: linux/amd64, linux/arm/v6, linux/arm/v7, linux/arm64/v8"},
		{[]string{"linux/arm"}, "params.platforms[0]: image r@d has several linux/arm images (linux/arm/v6, linux/arm/v7): name the variant"},
		{[]string{"linux/arm/v5"}, "has no linux/arm/v5 image"},
		{[]string{"unknown/unknown"}, "has no unknown/unknown image"},
		{[]string{"linux/arm64/v8", "linux/arm64"}, "params.platforms[1]: linux/arm64 names the same image (linux/arm64/v8, sha256:eeee"},
	} {
		_, err := chooseChildren("r@d", idx, plats(t, c.want...))
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%v: error %v, want %q", c.want, err, c.msg)
		}
	}
	if _, err := chooseChildren("r@d", []byte(`{"manifests":[{"digest":1}]}`), plats(t, "linux/amd64")); err == nil || !strings.Contains(err.Error(), "entry 0") {
		t.Errorf("bad entry: %v", err)
	}
}

func TestLayoutIndex(t *testing.T) {
	idx := testIndex(t, "linux/amd64", "linux/arm64")
	all, err := chooseChildren("r@d", idx, plats(t, "linux/arm64", "linux/amd64"))
	if err != nil {
		t.Fatal(err)
	}
	got, own, err := layoutIndex(idx, all)
	if err != nil || !own || !bytes.Equal(got, idx) {
		t.Errorf("all entries saved: own=%v err=%v, index.json should be the registry's bytes", own, err)
	}

	idx3 := testIndex(t, "linux/amd64", "unknown/unknown", "linux/arm64", "linux/s390x")
	some, err := chooseChildren("r@d", idx3, plats(t, "linux/arm64", "linux/amd64"))
	if err != nil {
		t.Fatal(err)
	}
	got, own, err = layoutIndex(idx3, some)
	if err != nil || own {
		t.Fatalf("subset: own=%v err=%v", own, err)
	}
	var m v1.IndexManifest
	if err := json.Unmarshal(got, &m); err != nil {
		t.Fatal(err)
	}
	// The index's order, each entry whole, the index's own fields kept.
	if len(m.Manifests) != 2 || m.Manifests[0].Platform.Architecture != "amd64" || m.Manifests[1].Platform.Architecture != "arm64" ||
		m.Manifests[1].Digest != some[0].desc.Digest || m.Manifests[1].Annotations["note"] != "<linux/arm64>" ||
		m.Annotations["org.example"] != "kept" || m.MediaType != "application/vnd.oci.image.index.v1+json" || m.SchemaVersion != 2 {
		t.Errorf("subset index: %s", got)
	}
	if !bytes.Contains(got, []byte(`"<linux/arm64>"`)) {
		t.Errorf("an entry's annotations were not kept as written: %s", got)
	}
}

func TestSingleImageIndex(t *testing.T) {
	d := v1.Descriptor{MediaType: "application/vnd.docker.distribution.manifest.v2+json", Size: 7, Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("f", 64)}}
	b, err := singleImageIndex(d, protocol.Platform{OS: "linux", Architecture: "arm", Variant: "v7"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil || len(m.Manifests) != 1 || m.Manifests[0].Digest != d.Digest || m.Manifests[0].Size != 7 || m.Manifests[0].MediaType != d.MediaType ||
		m.Manifests[0].Platform.Variant != "v7" || m.MediaType != "application/vnd.oci.image.index.v1+json" {
		t.Errorf("%s %v", b, err)
	}
}

func TestPrimaryChild(t *testing.T) {
	idx := testIndex(t, "linux/amd64", "linux/arm64", "linux/arm/v7")
	children, err := chooseChildren("r@d", idx, plats(t, "linux/arm64", "linux/arm/v7", "linux/amd64"))
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	s := &session{log: logging.New(logging.NewRedactor(&log), false)}
	for get, want := range map[string]int{"linux/amd64": 2, "linux/arm64": 0, "linux/arm64/v8": 0, "linux/arm": 1} {
		p := plats(t, get)[0]
		if got := primaryChild(s, children, p); got != want {
			t.Errorf("get platform %s: primary %d, want %d", get, got, want)
		}
	}
	if log.Len() != 0 {
		t.Errorf("warned: %s", log.String())
	}
	if got := primaryChild(s, children, protocol.Platform{OS: "linux", Architecture: "riscv64"}); got != 0 || !strings.Contains(log.String(), "does not list the get's platform linux/riscv64") || !strings.Contains(log.String(), "of linux/arm64, the first listed") {
		t.Errorf("no match: %d, log %q", got, log.String())
	}
}
