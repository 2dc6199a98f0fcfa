package resource

import (
	"context"
	"fmt"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
)

// loadAllPlatforms loads, for a build with params.platforms (even one
// foreign platform), a named layout folder of several platforms as one
// index (engine.LoadIndex), so each platform's stages take that
// platform's image; ok is false for anything else, which is loaded as
// usual. A single image loaded for a build of another platform is taken by
// a FROM in that platform's stage (the containerd store does not check its
// platform): the log says so.
func loadAllPlatforms(ctx context.Context, s *session, cli engine.Client, plan *putPlan, param string, f *baseimage.Folder) (b engine.Base, ok bool, err error) {
	if len(plan.platforms) == 0 {
		return engine.Base{}, false, nil
	}
	if f.Image == nil || !f.Named() {
		warnOnePlatform(s, plan, param, f)
		return engine.Base{}, false, nil
	}
	images, err := baseimage.LayoutImages(f.Path, f.Kind)
	if err != nil {
		return engine.Base{}, true, fmt.Errorf("%s %s: %w", param, f.Dir, err)
	}
	if len(images) < 2 {
		warnOnePlatform(s, plan, param, f)
		return engine.Base{}, false, nil
	}
	b, err = engine.LoadIndex(ctx, cli, f, images, s.log)
	if err != nil {
		return engine.Base{}, true, fmt.Errorf("%s %s: %w", param, f.Dir, err)
	}
	return b, true, nil
}

func warnOnePlatform(s *session, plan *putPlan, param string, f *baseimage.Folder) {
	host := baseimage.HostPlatform()
	if len(plan.platforms) == 1 && plan.platforms[0] == normalPlatform(host.OS, host.Architecture, host.Variant) {
		return // the worker's own platform: the image loaded is that one
	}
	platform := "one platform"
	if f.Image != nil {
		platform = f.Image.Platform
	}
	s.log.Warnf("%s %s holds one image (%s), but the put builds %v: a FROM of it in another platform's stage takes this same image. "+
		"Get the base with params: {save: true, platforms: [...]} to have each platform's image (%s)",
		param, f.Dir, platform, plan.platforms, logging.ShortID(f.ID()))
}

// normalPlatform is a platform as solvePlan normalises it.
func normalPlatform(os, arch, variant string) string {
	return protocol.Platform{OS: os, Architecture: arch, Variant: variant}.Normalized().String()
}
