package resource

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	"github.com/concourse-docker/docker-image-resource/pkg/tags"
)

// pushVersion is the semver version the put pushes (params.version, or
// version_file's trimmed content) and its tag (with source.variant's
// suffix); nil without either.
func pushVersion(s *session, src *protocol.Source, params *protocol.OutParams, abs func(string) string) (*semver.Version, string, error) {
	value, field := string(params.Version), "params.version"
	if params.VersionFile != "" {
		field = "params.version_file"
		b, err := os.ReadFile(abs(params.VersionFile))
		if err != nil {
			return nil, "", fmt.Errorf("%s: version file '%s' does not exist (%s)", field, params.VersionFile, relativeHint)
		}
		if value = strings.TrimSpace(string(b)); value == "" {
			return nil, "", fmt.Errorf("%s: version file '%s' is empty", field, params.VersionFile)
		}
		field += " (" + params.VersionFile + ")"
	}
	if value == "" {
		return nil, "", nil
	}
	if params.TagPrefix != "" {
		s.log.Warnf("params.tag_prefix only applies to a tag read from tag_file; ignoring it (%s names the tag)", field)
	}
	v, tag, err := tags.PushVersion(value, src.Variant)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %q is not a semantic version (e.g. 1.2.3 or v1.2.3-rc.1): %w", field, value, err)
	}
	if err := protocol.ValidateTag(field, tag); err != nil {
		return nil, "", err
	}
	return v, tag, nil
}

// planAliases adds the aliases bump_aliases moves (pkg/tags.Aliases) to the
// planned tags, from the repository's tags as the registry lists them now,
// before the daemon starts. It runs after planCredentials: listing needs
// the repository's credentials (an ECR token).
func planAliases(ctx context.Context, env Env, s *session, src *protocol.Source, p *tagPlan) error {
	if !p.bump || p.version == nil {
		return nil
	}
	if p.version.Prerelease() != "" {
		s.log.Infof("bump_aliases: %s is a pre-release; no alias moves", p.tags[0])
		return nil
	}
	reg, err := registryClient(env, src, s.log)
	if err != nil {
		return err
	}
	list, err := reg.Tags(ctx, src.Repository)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		s.log.Infof("bump_aliases: %s has no tags yet", src.Repository)
	case err != nil:
		return fmt.Errorf("params.bump_aliases: %w", reg.Explain(err))
	default:
		s.log.Infof("bump_aliases: read %s", list.Of(src.Repository))
	}
	aliases := tags.Aliases(list.Tags, p.version, src.Variant)
	if len(aliases) == 0 {
		s.log.Infof("bump_aliases: %s is not the highest of its series; no alias moves", p.tags[0])
		return nil
	}
	s.log.Infof("bump_aliases: %s also moves %s", p.tags[0], strings.Join(aliases, ", "))
	for _, a := range aliases {
		p.tags = appendUnique(p.tags, a)
	}
	return nil
}

// responseVersion is the put's version: the pushed digest and, when source
// tracks tags (its check reports {"tag", "digest"}), the push tag.
func (p *tagPlan) responseVersion(digest string) protocol.Version {
	if !p.tagged {
		return protocol.Version{Digest: digest}
	}
	return protocol.Version{Tag: p.tags[0], Digest: digest}
}
