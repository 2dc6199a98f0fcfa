package protocol

import "errors"

// validateTagTracking checks tag_regex, semver_constraint, pre_releases,
// pre_release_prefixes, variant and created_at_sort.
func (s *Source) validateTagTracking() error {
	if s.TagRegex != "" || bool(s.CreatedAtSort) || s.SemverConstraint != "" || bool(s.PreReleases) ||
		len(s.PreReleasePrefixes) > 0 || s.Variant != "" {
		return errors.New("source.tag_regex, semver_constraint, pre_releases, pre_release_prefixes, variant and created_at_sort: tag tracking is not implemented yet; track one tag with source.tag")
	}
	return nil
}

// validateVersion checks the put's version, version_file and bump_aliases.
func (p *OutParams) validateVersion() error {
	if p.Version != "" || p.VersionFile != "" || bool(p.BumpAliases) {
		return errors.New("params.version, version_file and bump_aliases: pushing a semver version is not implemented yet; use tag_file and additional_tags")
	}
	return nil
}
