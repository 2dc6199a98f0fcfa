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
}

// solves is whether the put builds through the control API.
func (p solvePlan) solves() bool { return p.cacheRef != "" }

// planSolve checks the registry cache and platforms against the rest of
// the request: they need a Dockerfile build with BuildKit.
func planSolve(params *protocol.OutParams, img imagePlan, bld builder) (solvePlan, error) {
	if len(params.Platforms) > 0 {
		return solvePlan{}, errors.New("params.platforms: building several platforms in one put is not implemented yet; build each platform in its own put for now")
	}
	if params.CacheRepository == "" {
		return solvePlan{}, nil
	}
	if img.source != sourceBuild {
		return solvePlan{}, fmt.Errorf("params.cache_repository is a build cache, but this put takes its image from params.%s: remove cache_repository, or build with params.build", img.source)
	}
	if !bld.buildkit {
		return solvePlan{}, errors.New("params.cache_repository needs BuildKit (the classic builder has no registry cache), but params.docker_buildkit is 0: remove docker_buildkit or set it to 1")
	}
	repo, tag := params.CacheRef()
	return solvePlan{cacheRepo: repo, cacheRef: repo + ":" + tag, cacheMode: params.CacheModeOrDefault(), cacheRequired: bool(params.CacheRequired)}, nil
}

// hosts are the registries the cache is read from and written to, for ECR
// tokens.
func (p solvePlan) hosts() []string {
	if p.cacheRepo == "" {
		return nil
	}
	return []string{repoHost(p.cacheRepo)}
}
