package testenv

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TwoPlatforms is an index of a linux/amd64 and a linux/arm64/v8 image,
// made here (no emulator runs them: only COPY may use the arm64 one): each
// with the busybox layer (the same blob in both) and a random layer of its
// own, labelled platform=<os/arch[/variant]>. mediaType "oci" makes an OCI
// index of OCI images, anything else a Docker list. The images are keyed
// by architecture.
func TwoPlatforms(t testing.TB, mediaType string) (v1.ImageIndex, map[string]v1.Image) {
	t.Helper()
	indexMT := types.DockerManifestList
	if mediaType == "oci" {
		indexMT = types.OCIImageIndex
	}
	idx := mutate.IndexMediaType(empty.Index, indexMT)
	imgs := map[string]v1.Image{}
	var adds []mutate.IndexAddendum
	for i, p := range []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}} {
		img := BusyboxImage(t, ImageOptions{
			Platform: &p, MediaType: mediaType, RandomLayers: []int64{256 << 10}, RandomSeed: uint64(i + 1),
			Labels: map[string]string{"platform": PlatformString(p)},
		})
		imgs[p.Architecture] = img
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	return mutate.AppendManifests(idx, adds...), imgs
}
