package resource

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/pkg/platformcheck"
	"github.com/containerd/platforms"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
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
	return fmt.Errorf("params.cache_repository and params.platforms need dockerd's containerd image store (Docker 24 or later), but dockerd %s runs the classic store: "+
		"use the resource's image, whose dockerd is 26.1, or remove them", d.Version())
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
	o := engine.SolveOptions{Build: buildOptions(env, plan, nil), OutputDir: dir, Platforms: plan.platforms}
	if plan.cacheRef != "" {
		o.CacheImports = []string{plan.cacheRef}
		o.CacheExport = &engine.CacheExport{Ref: plan.cacheRef, Mode: plan.cacheMode, Required: plan.cacheRequired}
	}
	if len(plan.platforms) > 0 {
		o.Unsupported = func(missing []string) error { return needsEmulator(s, plan, missing) }
	}
	o.Build.CertsDir = certsDir
	o.CacheImports = append(o.CacheImports, cacheImage(ctx, env, s, cli, plan)...)
	res, err := engine.Solve(ctx, cli, o, s.log)
	if err != nil {
		os.RemoveAll(dir)
		return product{}, err
	}
	for _, why := range res.CacheImportErrors {
		s.log.Warnf("cache: no build cache could be read from %s: building without it. A first build finds none; otherwise check cache_repository and its credentials", why)
	}
	id := res.Config
	if id == "" {
		id = res.Digest // an index: no one config
	}
	return product{id: id, layout: dir, cacheExportError: res.CacheExportError}, nil
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

// needsEmulator fails the build before it starts when a RUN step would
// execute on a platform the worker cannot run: BuildKit would run it
// natively anyway and fail it midway ("exec format error").
func needsEmulator(s *session, plan *putPlan, missing []string) error {
	df, err := os.ReadFile(plan.dockerfile)
	if err != nil {
		return fmt.Errorf("params.platforms: reading %s: %w", plan.dockerfile, err)
	}
	host := baseimage.HostPlatform()
	o := platformcheck.Options{Dockerfile: df, BuildArgs: plan.buildArgs, Target: plan.target,
		BuildPlatform: ocispecs.Platform{OS: host.OS, Architecture: host.Architecture, Variant: host.Variant}}
	var steps []string
	for _, m := range missing {
		p, err := platforms.Parse(m)
		if err != nil {
			return fmt.Errorf("params.platforms: %q: %w", m, err)
		}
		found, err := platformcheck.NeedsEmulation(o, p)
		if err != nil {
			// The build reports a Dockerfile it cannot read better.
			s.log.Debugf("params.platforms: could not tell which steps run on %s: %v", m, err)
			continue
		}
		for _, st := range found {
			on := st.Platform // a stage's own --platform may name another
			if on == "" {
				on = m
			}
			steps = append(steps, fmt.Sprintf("%s: %s (line %d, %s)", on, st.Original, st.Line, st.Stage))
		}
	}
	if len(steps) == 0 {
		s.log.Infof("params.platforms: the worker runs no %s programs, and no RUN step of the build runs on them: no emulator needed", strings.Join(missing, ", "))
		return nil
	}
	return fmt.Errorf("params.platforms: the worker cannot run %s programs: it has no emulator for them (binfmt_misc handlers such as qemu-user-static, "+
		"which this resource never installs), and these RUN steps would run there:\n  %s\n"+
		"Install the handlers on the worker, or write the Dockerfile so that no RUN step runs on a target platform: run the build in a stage "+
		"FROM --platform=$BUILDPLATFORM (cross-compiling for $TARGETOS/$TARGETARCH) and COPY --from it into the target platform's stage, "+
		"which then has only COPY, ADD, ENV and the like", strings.Join(missing, ", "), strings.Join(steps, "\n  "))
}
