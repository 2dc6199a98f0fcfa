package baseimage

import (
	"bytes"
	"encoding/json"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// FillPlatform returns the config raw with the build platform's os and
// architecture (and variant) where it names none, and whether it changed
// anything. BuildKit (dockerd 20.10 and 26.1) takes a loaded image for FROM
// only when its platform matches the build's; a config without os and
// architecture (crane append and go-containerregistry's mutate make them)
// matches none, so BuildKit resolves FROM at the registry instead: it pulls
// the base again, or fails when the registry no longer has it. Only empty
// fields are set; every other field keeps its value (the key order of the
// JSON object does not survive).
func FillPlatform(raw []byte, p v1.Platform) ([]byte, bool, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, false, fmt.Errorf("parsing the image config: %w", err)
	}
	if m == nil {
		return nil, false, fmt.Errorf("the image config is %s, not a JSON object", bytes.TrimSpace(raw))
	}
	str := func(k string) string {
		var s string
		_ = json.Unmarshal(m[k], &s) // missing, null or not a string: empty
		return s
	}
	changed := false
	set := func(k, v string) {
		b, _ := json.Marshal(v)
		m[k], changed = b, true
	}
	if str("os") == "" {
		set("os", p.OS)
	}
	if str("architecture") == "" {
		set("architecture", p.Architecture)
		if p.Variant != "" && str("variant") == "" {
			set("variant", p.Variant)
		}
	}
	if !changed {
		return raw, false, nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep "<", ">", "&" in labels as they were
	if err := enc.Encode(m); err != nil {
		return nil, false, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), true, nil
}
