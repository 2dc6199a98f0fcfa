package protocol

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/Masterminds/semver/v3"
	"github.com/concourse-docker/docker-image-resource/pkg/tags"
)

// Tracking is what check follows.
type Tracking int

const (
	// TrackTag follows one tag (source.tag, default latest): versions are
	// {"digest"}, as the old resource's.
	TrackTag Tracking = iota
	// TrackSemver follows semver tags (semver_constraint, pre_releases, or
	// variant without tag): versions are {"tag", "digest"}.
	TrackSemver
	// TrackRegex follows the tags tag_regex matches: {"tag", "digest"}.
	TrackRegex
)

// Tracking is how check follows the repository's tags. Unlike
// registry-image-resource, a source without any tracking field tracks
// source.tag (latest): existing pipelines keep their versions.
func (s *Source) Tracking() Tracking {
	switch {
	case s.TagRegex != "":
		return TrackRegex
	case s.SemverConstraint != "" || bool(s.PreReleases) || (s.Variant != "" && s.Tag == ""):
		return TrackSemver
	}
	return TrackTag
}

// SemverRules are the source's semver tracking rules; Validate has checked
// the constraint.
func (s *Source) SemverRules() *tags.Semver {
	r := &tags.Semver{PreReleases: bool(s.PreReleases), PreReleasePrefixes: s.PreReleasePrefixes, Variant: s.Variant}
	if s.SemverConstraint != "" {
		r.Constraint, _ = semver.NewConstraint(s.SemverConstraint)
	}
	return r
}

// TagPattern is source.tag_regex compiled; Validate has checked it.
func (s *Source) TagPattern() *regexp.Regexp { return regexp.MustCompile(s.TagRegex) }

// validateTagTracking checks tag_regex, semver_constraint, pre_releases,
// pre_release_prefixes, variant and created_at_sort: fields that would be
// ignored together are refused, as any key that does nothing is.
func (s *Source) validateTagTracking() error {
	semverSet := ""
	switch {
	case s.SemverConstraint != "":
		semverSet = "source.semver_constraint"
	case bool(s.PreReleases):
		semverSet = "source.pre_releases"
	}
	switch {
	case s.Tag != "" && s.TagRegex != "":
		return errors.New("source.tag and source.tag_regex: give one: tag tracks that one tag, tag_regex every tag it matches")
	case s.Tag != "" && semverSet != "":
		return fmt.Errorf("source.tag and %s: give one: tag tracks that one tag, %s tracks semver tags (remove tag, or the semver fields)", semverSet, semverSet)
	case s.TagRegex != "" && semverSet != "":
		return fmt.Errorf("source.tag_regex and %s: give one: tag_regex tracks the tags it matches and ignores the semver fields", semverSet)
	case len(s.PreReleasePrefixes) > 0 && !bool(s.PreReleases):
		return errors.New("source.pre_release_prefixes needs source.pre_releases: true (without it no pre-release is tracked)")
	case bool(s.CreatedAtSort) && s.TagRegex == "":
		return errors.New("source.created_at_sort needs source.tag_regex: it orders the tags tag_regex matches")
	}
	if s.TagRegex != "" {
		if _, err := regexp.Compile(s.TagRegex); err != nil {
			// regexp's error quotes the pattern itself, unescaped.
			return fmt.Errorf("source.tag_regex is not a valid regular expression (RE2 syntax): %w", err)
		}
	}
	if s.SemverConstraint != "" {
		if _, err := semver.NewConstraint(s.SemverConstraint); err != nil {
			return fmt.Errorf("source.semver_constraint: %q is not a valid constraint (e.g. \"~1.2\", \">= 22, < 23\", \">= 1.0.0-0\"): %w", s.SemverConstraint, err)
		}
	}
	for i, p := range s.PreReleasePrefixes {
		if p == "" {
			return fmt.Errorf("source.pre_release_prefixes[%d] is empty: it would make every pre-release count", i)
		}
	}
	if s.Variant != "" {
		// The variant is a tag of its own (the bare one) and a tag's suffix.
		if err := ValidateTag("source.variant", s.Variant); err != nil {
			return err
		}
	}
	return nil
}

// validateVersion checks the put's version, version_file and bump_aliases.
func (p *OutParams) validateVersion() error {
	switch {
	case p.Version != "" && p.VersionFile != "":
		return errors.New("params.version and params.version_file: give one")
	case bool(p.BumpAliases) && p.Version == "" && p.VersionFile == "":
		return errors.New("params.bump_aliases needs params.version or params.version_file: the aliases follow the semver version pushed")
	case p.Version == "" && p.VersionFile == "":
		return nil
	}
	field := "params.version"
	if p.VersionFile != "" {
		field = "params.version_file"
	}
	for _, other := range []struct{ name, value string }{{"params.tag_file", p.TagFile}, {"params.tag", p.Tag}} {
		if other.value != "" {
			return fmt.Errorf("%s and %s: give one: the version is the push tag", field, other.name)
		}
	}
	if p.Version != "" {
		if _, _, err := tags.PushVersion(string(p.Version), ""); err != nil {
			return fmt.Errorf("params.version: %q is not a semantic version (e.g. 1.2.3 or v1.2.3-rc.1): %w", p.Version, err)
		}
	}
	return nil
}
