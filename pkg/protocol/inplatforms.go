package protocol

import (
	"fmt"
	"regexp"
	"strings"
)

// platformPart is one os, architecture or variant of a params.platforms
// entry: what indexes use (linux, amd64, arm64, v7, ppc64le, s390x).
var platformPart = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// ParsePlatformString reads "os/architecture[/variant]" strictly: two or
// three lower-case parts, none empty, no os.version suffix.
func ParsePlatformString(s string) (Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return Platform{}, fmt.Errorf("%q is not a platform: write os/architecture[/variant], e.g. linux/amd64 or linux/arm/v7", s)
	}
	for _, part := range parts {
		if !platformPart.MatchString(part) {
			return Platform{}, fmt.Errorf("%q is not a platform: write os/architecture[/variant] in lower case, e.g. linux/amd64 or linux/arm/v7", s)
		}
	}
	p := Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// String is os/architecture[/variant].
func (p Platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// Normalized names an arm64 platform without a variant as v8, as
// containerd does: linux/arm64 and linux/arm64/v8 are one platform.
func (p Platform) Normalized() Platform {
	if p.Architecture == "arm64" && p.Variant == "" {
		p.Variant = "v8"
	}
	return p
}

// PlatformList is params.platforms parsed; call it after ParseIn, which
// refused entries that do not parse.
func (p *InParams) PlatformList() []Platform {
	out := make([]Platform, 0, len(p.Platforms))
	for _, s := range p.Platforms {
		pl, _ := ParsePlatformString(s)
		out = append(out, pl)
	}
	return out
}

// validatePlatforms checks params.platforms: each entry a platform, each
// listed once, and only where the get writes something that can hold
// several platforms, i.e. with save: true. Without save the get writes
// rootfs/ of one platform, so the list would be silently ignored: an
// error says so instead (params.platform picks that one platform).
func (p *InParams) validatePlatforms() error {
	if len(p.Platforms) == 0 {
		return nil
	}
	if p.SkipDownload {
		return fmt.Errorf("params.platforms and params.skip_download: true exclude each other: skip_download writes no image at all; remove one of them")
	}
	if !p.Save {
		return fmt.Errorf("params.platforms needs params.save: true: it saves every listed platform's image into oci/ (an OCI image layout a put's load_base reads); without save the get writes one platform's rootfs/, chosen with params.platform")
	}
	return validatePlatformList(p.Platforms)
}

// validatePlatformList checks a get's or a put's params.platforms: each
// entry a platform, each listed once.
func validatePlatformList(list []string) error {
	seen := map[Platform]int{}
	for i, s := range list {
		field := fmt.Sprintf("params.platforms[%d]", i)
		pl, err := ParsePlatformString(s)
		if err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		if j, ok := seen[pl.Normalized()]; ok {
			return fmt.Errorf("%s: %q is params.platforms[%d] (%q) again: list each platform once", field, s, j, list[j])
		}
		seen[pl.Normalized()] = i
	}
	return nil
}
