package resource

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
)

// putPlan is a put request checked against SRC: every file read, every
// path resolved and every registry token fetched before a daemon is
// started, so bad input fails in milliseconds and nothing is pushed.
//
// planPut builds it in steps, each from the request and the steps before
// it (the outplan*.go files); nothing changes it afterwards: the put's
// other files only read it.
type putPlan struct {
	repository  string
	builder     // outplanbuilder.go: BuildKit or the classic builder, build secrets
	tagPlan     // the tags to push
	imagePlan   // outplansource.go: where the image comes from
	basePlan    // outplanbases.go: load_base(s) and cache_from folders
	credentials // the source with ECR tokens, and the daemon's registry auth
	fanOutPlan  // outplanfanout.go: additional_repositories and their credentials
	solvePlan   // outplansolve.go: registry build cache (BuildKit's control API)
}

// buildsWithBuildKit is whether the image is built, by BuildKit.
func (p *putPlan) buildsWithBuildKit() bool { return p.source == sourceBuild && p.buildkit }

func planPut(ctx context.Context, env Env, s *session, srcDir string, req *protocol.OutRequest) (*putPlan, error) {
	src, params := &req.Source, &req.Params
	if fi, err := os.Stat(srcDir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("source folder %s does not exist", srcDir)
	}
	abs := inFolder(srcDir)
	// The builder first: it masks the secrets before anything else can
	// fail or log.
	bld, err := planBuilder(env, s, params, abs)
	if err != nil {
		return nil, err
	}
	tags, err := planTags(s, src, params, abs)
	if err != nil {
		return nil, err
	}
	img, err := planImage(env, s, params, abs)
	if err != nil {
		return nil, err
	}
	bases, err := planBases(params, abs)
	if err != nil {
		return nil, err
	}
	slv, err := planSolve(params, img, bld)
	if err != nil {
		return nil, err
	}
	// Last: the only step that may call a service (AWS, for ECR tokens),
	// once the files are known to be good.
	creds, err := planCredentials(ctx, s, *src, img, slv.hosts())
	if err != nil {
		return nil, err
	}
	// bump_aliases reads the registry's tags, with those credentials.
	if err := planAliases(ctx, env, s, &creds.src, &tags); err != nil {
		return nil, err
	}
	fan, err := planFanOut(ctx, s, req, creds.src)
	if err != nil {
		return nil, err
	}
	return &putPlan{repository: src.Repository, builder: bld, tagPlan: tags, imagePlan: img, basePlan: bases, credentials: creds, fanOutPlan: fan, solvePlan: slv}, nil
}

// inFolder resolves the request's paths: relative ones are relative to the
// put's folder.
func inFolder(srcDir string) func(string) string {
	return func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(srcDir, p)
	}
}

// tagPlan is what the image is pushed as.
type tagPlan struct {
	tags     []string // the push tag first
	cacheTag string   // the tag `cache: true` builds from
	// params.version (outplanversion.go): its tag is the push tag, and
	// with bump the aliases planAliases adds.
	version *semver.Version
	bump    bool
	tagged  bool // source tracks tags: the put's version carries the push tag
}

func planTags(s *session, src *protocol.Source, params *protocol.OutParams, abs func(string) string) (tagPlan, error) {
	ver, tag, err := pushVersion(s, src, params, abs)
	if err != nil {
		return tagPlan{}, err
	}
	first := []string{tag}
	if ver == nil {
		if tag, err = pushTag(s, src, params, abs); err != nil {
			return tagPlan{}, err
		}
		first = []string{tag}
	} else if src.Tag != "" {
		// As registry-image pushes it: the one tag check follows.
		first = appendUnique(first, string(src.Tag))
	}
	tags, err := additionalTags(params, abs, first)
	if err != nil {
		return tagPlan{}, err
	}
	if params.TagAsLatest {
		tags = appendUnique(tags, "latest")
	}
	return tagPlan{tags: tags, cacheTag: orDefault(string(params.CacheTag), tag),
		version: ver, bump: bool(params.BumpAliases), tagged: src.Tracking() != protocol.TrackTag}, nil
}

// pushTag is tag_file's content (trimmed, with tag_prefix), else the
// deprecated params.tag file, else source.tag.
func pushTag(s *session, src *protocol.Source, params *protocol.OutParams, abs func(string) string) (string, error) {
	file, field := params.TagFile, "params.tag_file"
	if file == "" && params.Tag != "" {
		file, field = params.Tag, "params.tag"
		s.log.Warn("params.tag is deprecated: use params.tag_file")
	}
	if file == "" {
		if params.TagPrefix != "" {
			s.log.Warn("params.tag_prefix only applies to a tag read from tag_file; ignoring it")
		}
		return src.TagOrDefault(), nil
	}
	b, err := os.ReadFile(abs(file))
	if err != nil {
		return "", fmt.Errorf("%s: tag file '%s' does not exist (%s)", field, file, relativeHint)
	}
	tag := params.TagPrefix + strings.TrimSpace(string(b))
	if strings.TrimSpace(string(b)) == "" {
		return "", fmt.Errorf("%s: tag file '%s' is empty", field, file)
	}
	if err := protocol.ValidateTag(field+" ("+file+")", tag); err != nil {
		return "", err
	}
	return tag, nil
}

// additionalTags appends the additional_tags file's tags to tags.
func additionalTags(params *protocol.OutParams, abs func(string) string, tags []string) ([]string, error) {
	if params.AdditionalTags == "" {
		return tags, nil
	}
	b, err := os.ReadFile(abs(params.AdditionalTags))
	if err != nil {
		return nil, fmt.Errorf("params.additional_tags: additional tags file '%s' does not exist (%s)", params.AdditionalTags, relativeHint)
	}
	for _, t := range strings.Fields(string(b)) {
		if err := protocol.ValidateTag("params.additional_tags ("+params.AdditionalTags+")", t); err != nil {
			return nil, err
		}
		tags = appendUnique(tags, t)
	}
	return tags, nil
}

// credentials are what the put's registry clients and daemon log in with.
type credentials struct {
	// src is the request's source with the ECR tokens the put needs as
	// its credentials (ecrLogin); the request itself is left as it came.
	src  protocol.Source
	auth engine.RegistryAuth // the daemon's (and BuildKit's) credentials from src
}

// planCredentials fetches ECR tokens for the put: the repository's, and
// those of the ECR registries the build pulls from (FROM lines, ARG
// defaults and build args naming ECR images, as the old resource did;
// pull_repository). They feed the daemon's pulls and pushes, BuildKit's
// session and the direct push.
func planCredentials(ctx context.Context, s *session, src protocol.Source, img imagePlan, more []string) (credentials, error) {
	others, err := img.ecrHosts()
	if err != nil {
		return credentials{}, err
	}
	others = append(others, more...)
	src, err = ecrLogin(ctx, s, src, others)
	if err != nil {
		return credentials{}, err
	}
	return credentials{src: src, auth: registryAuth(&src)}, nil
}

// relativeHint is what to do about a file that is not there.
const relativeHint = "paths are relative to the put's folder, which holds the job's inputs: start them with the input's name"

func regularFile(field, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %s does not exist", field, path)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: %s is not a file", field, path)
	}
	return nil
}

func appendUnique(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}
