package protocol

import (
	"fmt"
	"strings"
)

// DefaultCacheTag is the tag of a cache_repository that names none: one
// cache for every build of the pipeline's image, as buildx users write
// `ref=<repo>:buildcache`.
const DefaultCacheTag = "buildcache"

// Cache modes of params.cache_mode: max exports every stage's layers, min
// only the final image's.
const (
	CacheModeMax = "max"
	CacheModeMin = "min"
)

// CacheRef splits params.cache_repository into its repository and tag
// (DefaultCacheTag when it names none).
func (p *OutParams) CacheRef() (repo, tag string) {
	repo = p.CacheRepository
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		return repo[:i], repo[i+1:]
	}
	return repo, DefaultCacheTag
}

// CacheModeOrDefault is params.cache_mode, max when not set.
func (p *OutParams) CacheModeOrDefault() string {
	if p.CacheMode == "" {
		return CacheModeMax
	}
	return p.CacheMode
}

// validateBuildCache checks cache_repository, cache_mode, cache_required
// and platforms on their own; what they need of the rest of the request
// (a build, BuildKit) the put's plan checks.
func (p *OutParams) validateBuildCache() error {
	if p.CacheRepository == "" {
		switch {
		case p.CacheMode != "":
			return fmt.Errorf("params.cache_mode is set but params.cache_repository is not: cache_mode says what goes to the cache repository; set cache_repository too, or remove cache_mode")
		case bool(p.CacheRequired):
			return fmt.Errorf("params.cache_required is set but params.cache_repository is not: set cache_repository too, or remove cache_required")
		}
	} else {
		if strings.Contains(p.CacheRepository, "@") {
			return fmt.Errorf("params.cache_repository: %q must not contain a digest: give a repository, with a tag if several caches share it (default tag %q)", p.CacheRepository, DefaultCacheTag)
		}
		repo, tag := p.CacheRef()
		if err := ValidateRepository("params.cache_repository", repo); err != nil {
			return err
		}
		if err := ValidateTag("params.cache_repository (its tag)", tag); err != nil {
			return err
		}
		if m := p.CacheMode; m != "" && m != CacheModeMax && m != CacheModeMin {
			return fmt.Errorf("params.cache_mode: %q is not a cache mode: use %q (every stage's layers, the default) or %q (only the final image's)", m, CacheModeMax, CacheModeMin)
		}
	}
	return validatePlatformList(p.Platforms)
}
