package resource

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/engine"
)

// product is the image a put made, ready to push.
type product struct {
	// id is the image's ID in the daemon; for a solved build, which the
	// daemon does not hold, its config digest.
	id string
	// layout, for a solved build, is the OCI layout BuildKit wrote the
	// image into: the push reads it there.
	layout string
	// cacheExportError: the registry cache export failed and was allowed
	// to (said after the push).
	cacheExportError string
}

// needContainerdStore fails a solved put whose dockerd did not come up on
// the containerd image store (Docker before 24 ignores the feature).
func needContainerdStore(d *daemon.Daemon) error {
	if d.ContainerdStore() {
		return nil
	}
	return fmt.Errorf("params.cache_repository needs dockerd's containerd image store (Docker 24 or later), but dockerd %s runs the classic store: "+
		"use the resource's image, whose dockerd is 26.1, or remove cache_repository", d.Version())
}

// solveBuild builds through BuildKit's control API into an OCI layout in a
// fresh folder under scratch, with the registry cache read before and
// written after the build.
func solveBuild(ctx context.Context, env Env, s *session, cli engine.Client, plan *putPlan, certsDir string) (product, error) {
	for _, f := range plan.cacheFolders {
		s.log.Warnf("cache_from %s: with cache_repository the build cache comes from the registry: the folder is loaded (a FROM can use it) but not read as cache",
			filepath.Base(f.Dir))
	}
	dir, err := os.MkdirTemp(scratchDir(), "oci-")
	if err != nil {
		return product{}, fmt.Errorf("build: a folder for the image: %w", err)
	}
	o := engine.SolveOptions{
		Build:        buildOptions(env, plan, nil),
		CacheImports: []string{plan.cacheRef},
		CacheExport:  &engine.CacheExport{Ref: plan.cacheRef, Mode: plan.cacheMode, Required: plan.cacheRequired},
		OutputDir:    dir,
	}
	o.Build.CertsDir = certsDir
	if plan.cache {
		cacheRef := plan.repository + ":" + plan.cacheTag
		if err := remoteCache(ctx, env, s, plan.src, plan.cacheTag); err != nil {
			s.log.Warnf("cache: could not find %s, building without it: %v", cacheRef, err)
		} else {
			o.CacheImports = append(o.CacheImports, cacheRef)
		}
	}
	res, err := engine.Solve(ctx, cli, o, s.log)
	if err != nil {
		os.RemoveAll(dir)
		return product{}, err
	}
	for _, why := range res.CacheImportErrors {
		s.log.Warnf("cache: no build cache could be read from %s: building without it. A first build finds none; otherwise check cache_repository and its credentials", why)
	}
	return product{id: res.Config, layout: dir, cacheExportError: res.CacheExportError}, nil
}

// warnCacheExport says, after the push, that the cache did not reach the
// registry.
func warnCacheExport(s *session, plan *putPlan, p product) {
	if p.cacheExportError == "" {
		return
	}
	s.log.Warnf("cache: the image is pushed, but exporting the build cache to %s failed: %s. The next put on a fresh worker builds without it; "+
		"set params.cache_required: true to fail the put (and push nothing) instead", plan.cacheRef, p.cacheExportError)
}
