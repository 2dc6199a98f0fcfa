package resource

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// savedChild is one image a get with params.platforms saves: the index
// entry that names it (as the registry wrote it) and the params.platforms
// entry that asked for it.
type savedChild struct {
	field string // params.platforms[i]
	want  protocol.Platform
	desc  v1.Descriptor
	// pos is the entry's place in the version's index; raw its own JSON
	// there, kept whole (annotations, os.version, features) when a subset
	// index is written.
	pos int
	raw json.RawMessage
}

// platformOf is a descriptor's platform, "" when it names none.
func platformOf(d v1.Descriptor) protocol.Platform {
	if d.Platform == nil {
		return protocol.Platform{}
	}
	return protocol.Platform{OS: d.Platform.OS, Architecture: d.Platform.Architecture, Variant: d.Platform.Variant}
}

// matches says whether an index entry's platform is the one asked for: the
// same os and architecture, and the same variant (arm64's blank one being
// v8) or any variant when none is asked for.
func matches(have, want protocol.Platform) bool {
	if have.OS != want.OS || have.Architecture != want.Architecture {
		return false
	}
	return want.Variant == "" || have.Normalized().Variant == want.Normalized().Variant
}

// indexImages are the entries of an index that are images of a platform:
// not nested indexes, not attestations (unknown/unknown), not artifacts.
func indexImages(entries []v1.Descriptor) []int {
	var out []int
	for i, d := range entries {
		if d.Platform == nil || d.Platform.OS == "" || d.Platform.OS == "unknown" || !d.MediaType.IsImage() {
			continue
		}
		out = append(out, i)
	}
	return out
}

// availablePlatforms lists the platforms an index has images of, sorted.
func availablePlatforms(entries []v1.Descriptor) string {
	var have []string
	for _, i := range indexImages(entries) {
		have = append(have, platformOf(entries[i]).String())
	}
	if len(have) == 0 {
		return "none (it lists no image with a platform)"
	}
	sort.Strings(have)
	return strings.Join(have, ", ")
}

// chooseChildren picks, for each wanted platform, the index entry of that
// platform: an exact variant first; with no variant asked for, the one
// entry of that os and architecture (several is ambiguous). Two wanted
// platforms that name one entry are an error, as is a platform the index
// lacks, which lists those it has.
func chooseChildren(ref string, rawIndex []byte, want []protocol.Platform) ([]savedChild, error) {
	var idx struct {
		Manifests []json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(rawIndex, &idx); err != nil {
		return nil, fmt.Errorf("image %s: parsing its index: %w", ref, err)
	}
	entries := make([]v1.Descriptor, len(idx.Manifests))
	for i, raw := range idx.Manifests {
		if err := json.Unmarshal(raw, &entries[i]); err != nil {
			return nil, fmt.Errorf("image %s: parsing its index's entry %d: %w", ref, i, err)
		}
	}
	images := indexImages(entries)
	taken := map[int]int{} // entry -> params.platforms index
	var out []savedChild
	for wi, w := range want {
		field := fmt.Sprintf("params.platforms[%d]", wi)
		pos, err := pickEntry(entries, images, w)
		if err != nil {
			return nil, fmt.Errorf("%s: image %s %w; it has: %s", field, ref, err, availablePlatforms(entries))
		}
		if j, ok := taken[pos]; ok {
			return nil, fmt.Errorf("%s: %s names the same image (%s, %s) as params.platforms[%d] (%s): list it once",
				field, w, platformOf(entries[pos]), entries[pos].Digest, j, want[j])
		}
		taken[pos] = wi
		out = append(out, savedChild{field: field, want: w, desc: entries[pos], pos: pos, raw: idx.Manifests[pos]})
	}
	return out, nil
}

func pickEntry(entries []v1.Descriptor, images []int, w protocol.Platform) (int, error) {
	var same []int // same os and architecture
	for _, i := range images {
		have := platformOf(entries[i])
		if have.OS != w.OS || have.Architecture != w.Architecture {
			continue
		}
		if w.Variant != "" && have.Normalized().Variant == w.Normalized().Variant {
			return i, nil
		}
		same = append(same, i)
	}
	switch {
	case w.Variant == "" && len(same) == 1:
		return same[0], nil
	case w.Variant == "" && len(same) > 1:
		var names []string
		for _, i := range same {
			names = append(names, platformOf(entries[i]).String())
		}
		return 0, fmt.Errorf("has several %s images (%s): name the variant", w, strings.Join(names, ", "))
	}
	return 0, fmt.Errorf("has no %s image", w)
}

// layoutIndex is the index.json the saved layout gets, and whether it is
// the version's own index. When every entry of the version's index is
// saved, it is the registry's bytes as they are (its digest is the
// version's); otherwise it is that index with only the saved entries, each
// entry's JSON and every other field kept: a new index, with another digest.
func layoutIndex(rawIndex []byte, children []savedChild) ([]byte, bool, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(rawIndex, &top); err != nil {
		return nil, false, err
	}
	var all []json.RawMessage
	if err := json.Unmarshal(top["manifests"], &all); err != nil {
		return nil, false, err
	}
	if len(all) == len(children) {
		return rawIndex, true, nil
	}
	kept := append([]savedChild(nil), children...)
	sort.Slice(kept, func(i, j int) bool { return kept[i].pos < kept[j].pos })
	var list []json.RawMessage
	for _, c := range kept {
		list = append(list, c.raw)
	}
	b, err := marshalNoEscape(list)
	if err != nil {
		return nil, false, err
	}
	top["manifests"] = b
	out, err := marshalNoEscape(top)
	return out, false, err
}

// singleImageIndex is the index.json of a version that is one image: an
// OCI index naming just it, with the platform its config gives.
func singleImageIndex(desc v1.Descriptor, p protocol.Platform) ([]byte, error) {
	desc.Platform = &v1.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}
	return marshalNoEscape(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{desc}})
}

// marshalNoEscape keeps "<", ">" and "&" (in annotations) as they were.
func marshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
