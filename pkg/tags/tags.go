// Package tags decides which of a repository's tags check reports when
// source tracks tags by semver (semver_constraint, pre_releases, variant) or
// by pattern (tag_regex), and which aliases a put moves (bump_aliases). The
// rules are registry-image-resource's (its commands/check.go and out.go), so
// a pipeline moving between the two sees the same versions. Nothing here
// talks to a registry: the caller lists the tags and resolves their digests.
package tags

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
)

// DefaultPreReleasePrefixes are the pre-release words counted as
// pre-releases; anything else after a `-` is a variant (`1.2.3-alpine`).
var DefaultPreReleasePrefixes = []string{"alpha", "beta", "rc"}

// Semver is how source tracks semver tags.
type Semver struct {
	Constraint         *semver.Constraints // nil: any version
	PreReleases        bool
	PreReleasePrefixes []string // added to DefaultPreReleasePrefixes
	Variant            string   // only <semver>-<variant> tags
}

// Candidate is a tag that names a version the source tracks.
type Candidate struct {
	Tag     string
	Version *semver.Version
}

// Tagged is a version check reports: a tag and its manifest digest.
type Tagged struct {
	Tag    string
	Digest string
}

// BareTag is the tag without a version that check also follows: `latest`,
// or the variant's own name.
func (s *Semver) BareTag() string {
	if s.Variant != "" {
		return s.Variant
	}
	return "latest"
}

// Version parses tag as a version the source tracks: with the variant's
// suffix, within the constraint, and a pre-release only when pre_releases
// admits it.
func (s *Semver) Version(tag string) (*semver.Version, bool) {
	str := tag
	if s.Variant != "" {
		var ok bool
		if str, ok = strings.CutSuffix(tag, "-"+s.Variant); !ok {
			return nil, false
		}
	}
	v, err := semver.NewVersion(str)
	if err != nil {
		return nil, false
	}
	if s.Constraint != nil && !s.Constraint.Check(v) {
		return nil, false
	}
	if pre := v.Prerelease(); pre != "" && !s.isPreRelease(pre) {
		return nil, false
	}
	return v, true
}

// isPreRelease is whether a version's pre-release part is one the source
// takes: pre_releases on, and a known prefix. Without extra prefixes a `-`
// inside it (`1.2.3-rc.1-alpine`) is a variant's, never taken.
func (s *Semver) isPreRelease(pre string) bool {
	if !s.PreReleases {
		return false
	}
	if len(s.PreReleasePrefixes) == 0 && strings.Contains(pre, "-") {
		return false
	}
	for _, p := range append(slices.Clone(DefaultPreReleasePrefixes), s.PreReleasePrefixes...) {
		if strings.HasPrefix(pre, p) {
			return true
		}
	}
	return false
}

// Candidates are the tags that name tracked versions, in the order given,
// and whether the bare tag is among the tags.
func (s *Semver) Candidates(tags []string) (cands []Candidate, bare bool) {
	for _, t := range tags {
		if t == s.BareTag() {
			bare = true
			continue
		}
		if v, ok := s.Version(t); ok {
			cands = append(cands, Candidate{Tag: t, Version: v})
		}
	}
	return cands, bare
}

// From are the candidates check resolves after a cursor: the cursor's own
// tag and every newer version (an equal version under another tag, 1.2
// beside 1.2.0, is left out as registry-image does). A nil cursor is the
// first check: every candidate.
func From(cands []Candidate, cursor *Candidate) []Candidate {
	if cursor == nil {
		return cands
	}
	var out []Candidate
	for _, c := range cands {
		if c.Tag == cursor.Tag || c.Version.GreaterThan(cursor.Version) {
			out = append(out, c)
		}
	}
	return out
}

// Resolved is a candidate with the digest its tag has.
type Resolved struct {
	Candidate
	Digest string
}

// Pick turns resolved candidates into check's versions: one per digest (a
// final version over a pre-release, then the tag with more dots, 1.2.3 over
// 1.2), oldest version first. bare is the bare tag's digest ("" when it is
// absent): it is appended when no version has its digest and there is no
// constraint, as registry-image does.
func (s *Semver) Pick(resolved []Resolved, bare string) []Tagged {
	best := map[string]Resolved{}
	for _, r := range resolved {
		if cur, ok := best[r.Digest]; !ok || better(r, cur) {
			best[r.Digest] = r
		}
	}
	picked := make([]Resolved, 0, len(best))
	for _, r := range best {
		picked = append(picked, r)
	}
	slices.SortFunc(picked, func(a, b Resolved) int {
		// Equal versions (1.2 and 1.2.0 on different digests) in tag
		// order, so the answer does not change from check to check.
		return cmp.Or(a.Version.Compare(b.Version), strings.Compare(a.Tag, b.Tag))
	})
	out := make([]Tagged, 0, len(picked)+1)
	for _, r := range picked {
		out = append(out, Tagged{Tag: r.Tag, Digest: r.Digest})
	}
	if _, isVersion := best[bare]; bare != "" && !isVersion && s.Constraint == nil {
		out = append(out, Tagged{Tag: s.BareTag(), Digest: bare})
	}
	return out
}

// better is whether r names its digest better than cur.
func better(r, cur Resolved) bool {
	rFinal, curFinal := r.Version.Prerelease() == "", cur.Version.Prerelease() == ""
	if rFinal != curFinal {
		return rFinal
	}
	rDots, curDots := strings.Count(r.Version.Original(), "."), strings.Count(cur.Version.Original(), ".")
	if rDots != curDots {
		return rDots > curDots
	}
	// Same rank: the lower tag, so the choice does not depend on order.
	return r.Tag < cur.Tag
}

// Aliases are the tags bump_aliases moves along with version v, given the
// repository's tags: `<major>.<minor>` when v is the highest of its minor
// series, `<major>` when the highest of its major series, and `latest` when
// the highest of all; with a variant, each gets `-<variant>` and `latest`
// becomes the variant's name. Only tags of the same variant and without a
// pre-release are compared. A pre-release moves no alias.
func Aliases(existing []string, v *semver.Version, variant string) []string {
	if v.Prerelease() != "" {
		return nil
	}
	latest, major, minor := true, true, true
	for _, t := range existing {
		str := t
		if variant != "" {
			var ok bool
			if str, ok = strings.CutSuffix(t, "-"+variant); !ok {
				continue
			}
		}
		o, err := semver.NewVersion(str)
		if err != nil || o.Prerelease() != "" {
			continue
		}
		if o.GreaterThan(v) {
			latest = false
		}
		if o.Major() == v.Major() && o.Minor() > v.Minor() {
			major = false
		}
		if o.Major() == v.Major() && o.Minor() == v.Minor() && o.Patch() > v.Patch() {
			major, minor = false, false
		}
	}
	suffix, bare := "", "latest"
	if variant != "" {
		suffix, bare = "-"+variant, variant
	}
	var out []string
	if minor {
		out = append(out, fmt.Sprintf("%d.%d%s", v.Major(), v.Minor(), suffix))
	}
	if major {
		out = append(out, fmt.Sprintf("%d%s", v.Major(), suffix))
	}
	if latest {
		out = append(out, bare)
	}
	return out
}

// PushVersion parses the version a put pushes (a leading `v` is dropped)
// and returns it with its tag: the normalised version (`1.2` is pushed as
// `1.2.0`, as registry-image does) and `-<variant>` when there is one.
func PushVersion(s, variant string) (*semver.Version, string, error) {
	v, err := semver.NewVersion(strings.TrimSpace(s))
	if err != nil {
		return nil, "", err
	}
	tag := v.String()
	if variant != "" {
		tag += "-" + variant
	}
	return v, tag, nil
}

// Matching are the tags re matches anywhere in them (unanchored, as
// registry-image matches: anchor with ^ and $), in the order given.
func Matching(re *regexp.Regexp, tags []string) []string {
	var out []string
	for _, t := range tags {
		if re.MatchString(t) {
			out = append(out, t)
		}
	}
	return out
}

// SortByCreated orders versions by their image's creation time, oldest
// first (created_at_sort); equal times keep the registry's order.
func SortByCreated(vs []Tagged, created map[string]time.Time) {
	slices.SortStableFunc(vs, func(a, b Tagged) int { return created[a.Tag].Compare(created[b.Tag]) })
}
