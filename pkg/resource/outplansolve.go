package resource

import (
	"fmt"

	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
)

// solvePlan is what needs BuildKit's control API on dockerd's containerd
// image store (issue 16): a registry build cache, several platforms. A put
// with neither builds as before, through /build on the classic store.
type solvePlan struct {
	cacheRepo     string // params.cache_repository without its tag; "": none
	cacheRef      string // repository:tag the cache is read from and written to
	cacheMode     string // protocol.CacheModeMax or Min
	cacheRequired bool
	// platforms are params.platforms, normalised ("linux/arm64/v8"): one
	// build, one index.
	platforms []string
}

// solves is whether the put builds through the control API.
func (p solvePlan) solves() bool { return p.cacheRef != "" || len(p.platforms) > 0 }

// planSolve checks the registry cache and platforms against the rest of
// the request: they need a Dockerfile build with BuildKit.
func planSolve(params *protocol.OutParams, img imagePlan, bld builder) (solvePlan, error) {
	var p solvePlan
	for _, pl := range params.Platforms {
		// ParseOut checked every entry.
		parsed, _ := protocol.ParsePlatformString(pl)
		p.platforms = append(p.platforms, parsed.Normalized().String())
	}
	if len(p.platforms) > 0 {
		if err := needBuildKitBuild("platforms", "builds the image for each platform", "builds one platform", img, bld); err != nil {
			return solvePlan{}, err
		}
	}
	if params.CacheRepository == "" {
		return p, nil
	}
	if err := needBuildKitBuild("cache_repository", "is a build cache", "has no registry cache", img, bld); err != nil {
		return solvePlan{}, err
	}
	repo, tag := params.CacheRef()
	p.cacheRepo, p.cacheRef, p.cacheMode, p.cacheRequired = repo, repo+":"+tag, params.CacheModeOrDefault(), bool(params.CacheRequired)
	return p, nil
}

// needBuildKitBuild fails unless the put builds, with BuildKit, as
// params.<field> needs: does says what the field does, classic why the
// classic builder cannot.
func needBuildKitBuild(field, does, classic string, img imagePlan, bld builder) error {
	if img.source != sourceBuild {
		return fmt.Errorf("params.%s %s, but this put takes its image from params.%s: remove %s, or build with params.build", field, does, img.source, field)
	}
	if !bld.buildkit {
		return fmt.Errorf("params.%s needs BuildKit (the classic builder %s), but params.docker_buildkit is 0: remove docker_buildkit or set it to 1", field, classic)
	}
	return nil
}

// hosts are the registries the cache is read from and written to, for ECR
// tokens.
func (p solvePlan) hosts() []string {
	if p.cacheRepo == "" {
		return nil
	}
	return []string{repoHost(p.cacheRepo)}
}
