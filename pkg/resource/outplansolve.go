package resource

import (
	"errors"
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
		if img.source != sourceBuild {
			return solvePlan{}, fmt.Errorf("params.platforms builds the image for each platform, but this put takes its image from params.%s: remove platforms, or build with params.build", img.source)
		}
		if !bld.buildkit {
			return solvePlan{}, errors.New("params.platforms needs BuildKit (the classic builder builds one platform), but params.docker_buildkit is 0: remove docker_buildkit or set it to 1")
		}
	}
	if params.CacheRepository == "" {
		return p, nil
	}
	if img.source != sourceBuild {
		return solvePlan{}, fmt.Errorf("params.cache_repository is a build cache, but this put takes its image from params.%s: remove cache_repository, or build with params.build", img.source)
	}
	if !bld.buildkit {
		return solvePlan{}, errors.New("params.cache_repository needs BuildKit (the classic builder has no registry cache), but params.docker_buildkit is 0: remove docker_buildkit or set it to 1")
	}
	repo, tag := params.CacheRef()
	p.cacheRepo, p.cacheRef, p.cacheMode, p.cacheRequired = repo, repo+":"+tag, params.CacheModeOrDefault(), bool(params.CacheRequired)
	return p, nil
}

// hosts are the registries the cache is read from and written to, for ECR
// tokens.
func (p solvePlan) hosts() []string {
	if p.cacheRepo == "" {
		return nil
	}
	return []string{repoHost(p.cacheRepo)}
}
