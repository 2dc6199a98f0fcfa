package resource

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	"github.com/concourse-docker/docker-image-resource/pkg/tags"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"
)

// Check reports the digest the registry holds for repository:tag, after the
// cursor version when that still exists; with tag tracking (semver or
// tag_regex), the tags and digests checkTags picks.
func Check(ctx context.Context, env Env) error {
	p, err := protocol.ParseCheck(env.Stdin)
	if err != nil {
		return err
	}
	req := p.Request
	s := newSession(env, &req.Source, p.Warnings)
	versions, err := check(ctx, env, s, &req)
	if err != nil {
		return s.fail(err)
	}
	return writeJSON(env.Stdout, versions)
}

func check(ctx context.Context, env Env, s *session, req *protocol.CheckRequest) ([]protocol.Version, error) {
	src := &req.Source
	if src.Tracking() != protocol.TrackTag {
		return checkTags(ctx, env, s, req)
	}
	tag := src.TagOrDefault()
	reg, err := loginClient(ctx, env, s, src)
	if err != nil {
		return nil, fmt.Errorf("failed to fetch digest for image '%s:%s': %w", src.Repository, tag, err)
	}
	failed := func(err error) error {
		return fmt.Errorf("failed to fetch digest for image '%s:%s': %w", src.Repository, tag, reg.Explain(err))
	}
	s.log.Debugf("checking %s:%s", src.Repository, tag)
	latest, err := reg.Digest(ctx, src.Repository, tag)
	if errors.Is(err, registry.ErrNotFound) {
		s.log.Infof("%s:%s does not exist yet", src.Repository, tag)
		return []protocol.Version{}, nil
	}
	if err != nil {
		return nil, failed(err)
	}
	out := []protocol.Version{{Digest: latest.String()}}
	if req.Version == nil || req.Version.Digest == "" || req.Version.Digest == latest.String() {
		return out, nil
	}
	cursor, err := v1.NewHash(req.Version.Digest)
	if err != nil {
		return nil, fmt.Errorf("version.digest: %w", err)
	}
	exists, err := reg.Exists(ctx, src.Repository, cursor)
	if err != nil {
		return nil, failed(err)
	}
	if !exists {
		s.log.Debugf("version %s is gone from the registry; reporting only the latest", cursor)
		return out, nil
	}
	return append([]protocol.Version{{Digest: cursor.String()}}, out...), nil
}

// resolveJobs is how many tags' digests check asks for at once: a
// repository of thousands of tags takes one HEAD request each.
const resolveJobs = 8

// checkTags lists the repository's tags and reports the versions semver or
// tag_regex tracking picks (pkg/tags), as {"tag", "digest"}.
func checkTags(ctx context.Context, env Env, s *session, req *protocol.CheckRequest) ([]protocol.Version, error) {
	src := &req.Source
	failed := func(err error) error { return fmt.Errorf("failed to check the tags of '%s': %w", src.Repository, err) }
	reg, err := loginClient(ctx, env, s, src)
	if err != nil {
		return nil, failed(err)
	}
	list, err := reg.Tags(ctx, src.Repository)
	if errors.Is(err, registry.ErrNotFound) {
		s.log.Infof("%s does not exist yet", src.Repository)
		return []protocol.Version{}, nil
	}
	if err != nil {
		return nil, failed(reg.Explain(err))
	}
	s.log.Infof("read %s", list.Of(src.Repository))
	var picked []tags.Tagged
	if src.Tracking() == protocol.TrackRegex {
		picked, err = pickByRegex(ctx, s, reg, src, list.Tags)
	} else {
		picked, err = pickBySemver(ctx, s, reg, src, req.Version, list.Tags)
	}
	if err != nil {
		return nil, failed(err) // explained where it happened, with the tag it concerns
	}
	out := make([]protocol.Version, 0, len(picked))
	for _, t := range picked {
		out = append(out, protocol.Version{Tag: t.Tag, Digest: t.Digest})
	}
	s.log.Infof("reporting %s", count(len(out), "version"))
	return out, nil
}

// pickBySemver resolves the tracked versions from the cursor on (all of
// them on the first check, or when the cursor's tag has moved) and the
// bare tag, and picks one version per digest.
func pickBySemver(ctx context.Context, s *session, reg *registry.Client, src *protocol.Source, from *protocol.Version, all []string) ([]tags.Tagged, error) {
	rules := src.SemverRules()
	cands, hasBare := rules.Candidates(all)
	known := map[string]string{}
	cursor, err := semverCursor(ctx, s, reg, src, from, cands, known)
	if err != nil {
		return nil, err
	}
	todo := tags.From(cands, cursor)
	names := make([]string, 0, len(todo)+1)
	for _, c := range todo {
		names = append(names, c.Tag)
	}
	if hasBare && rules.Constraint == nil { // with a constraint it is never reported
		names = append(names, rules.BareTag())
	}
	s.log.Debugf("%d tags are tracked versions; resolving %d", len(cands), len(names))
	digests, err := resolveTags(ctx, reg, src.Repository, names, known)
	if err != nil {
		return nil, err
	}
	var resolved []tags.Resolved
	for _, c := range todo {
		if d, ok := digests[c.Tag]; ok {
			resolved = append(resolved, tags.Resolved{Candidate: c, Digest: d})
		}
	}
	return rules.Pick(resolved, digests[rules.BareTag()]), nil
}

// semverCursor is the check's cursor: the version's tag, when it is a
// tracked version and still has the version's digest. known gets the digest
// it resolved.
func semverCursor(ctx context.Context, s *session, reg *registry.Client, src *protocol.Source, from *protocol.Version, cands []tags.Candidate, known map[string]string) (*tags.Candidate, error) {
	if from == nil || from.Tag == "" || from.Digest == "" {
		return nil, nil
	}
	i := slices.IndexFunc(cands, func(c tags.Candidate) bool { return c.Tag == from.Tag })
	if i < 0 {
		s.log.Debugf("version %s is not a tracked version tag; reporting every version", from.Tag)
		return nil, nil
	}
	d, err := reg.Digest(ctx, src.Repository, from.Tag)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		s.log.Infof("tag %s is gone; reporting every version", from.Tag)
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("digest of tag %s: %w", from.Tag, reg.Explain(err))
	}
	known[from.Tag] = d.String()
	if d.String() != from.Digest {
		s.log.Infof("tag %s now has digest %s, not the version's %s; reporting every version", from.Tag, logging.ShortDigest(d.String()), logging.ShortDigest(from.Digest))
		return nil, nil
	}
	return &cands[i], nil
}

// pickByRegex reports every tag tag_regex matches, in the registry's order
// or, with created_at_sort, by its image's creation time; the cursor plays
// no part, as in registry-image.
func pickByRegex(ctx context.Context, s *session, reg *registry.Client, src *protocol.Source, all []string) ([]tags.Tagged, error) {
	matched := tags.Matching(src.TagPattern(), all)
	s.log.Debugf("%d tags match tag_regex %q", len(matched), src.TagRegex)
	digests, err := resolveTags(ctx, reg, src.Repository, matched, nil)
	if err != nil {
		return nil, err
	}
	var out []tags.Tagged
	for _, t := range matched {
		if d, ok := digests[t]; ok {
			out = append(out, tags.Tagged{Tag: t, Digest: d})
		}
	}
	if !src.CreatedAtSort {
		return out, nil
	}
	created, err := createdTimes(ctx, reg, src, out)
	if err != nil {
		return nil, err
	}
	tags.SortByCreated(out, created)
	return out, nil
}

// createdTimes reads each version's image config for its creation time
// (for an index, the image of source.platform).
func createdTimes(ctx context.Context, reg *registry.Client, src *protocol.Source, vs []tags.Tagged) (map[string]time.Time, error) {
	plat := src.Platform.Resolve()
	want := v1.Platform{OS: plat.OS, Architecture: plat.Architecture, Variant: plat.Variant}
	var mu sync.Mutex
	created := map[string]time.Time{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(resolveJobs)
	for _, v := range vs {
		g.Go(func() error {
			h, err := v1.NewHash(v.Digest)
			if err != nil {
				return err
			}
			img, err := reg.Image(gctx, src.Repository, h, want)
			if err != nil {
				return fmt.Errorf("created_at_sort: image %s: %w", v.Tag, reg.Explain(err))
			}
			cfg, err := img.ConfigFile()
			if err != nil {
				return fmt.Errorf("created_at_sort: config of %s: %w", v.Tag, reg.Explain(err))
			}
			mu.Lock()
			created[v.Tag] = cfg.Created.Time
			mu.Unlock()
			return nil
		})
	}
	return created, g.Wait()
}

// resolveTags returns the digest of each tag, resolveJobs at a time; a tag
// deleted since the listing is left out. known digests are not asked again.
func resolveTags(ctx context.Context, reg *registry.Client, repo string, names []string, known map[string]string) (map[string]string, error) {
	var mu sync.Mutex
	out := map[string]string{}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(resolveJobs)
	for _, t := range names {
		if d, ok := known[t]; ok {
			out[t] = d
			continue
		}
		g.Go(func() error {
			d, err := reg.Digest(gctx, repo, t)
			if errors.Is(err, registry.ErrNotFound) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("digest of tag %s: %w", t, reg.Explain(err))
			}
			mu.Lock()
			out[t] = d.String()
			mu.Unlock()
			return nil
		})
	}
	return out, g.Wait()
}
