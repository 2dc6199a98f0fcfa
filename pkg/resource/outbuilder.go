package resource

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
)

// warnNoInlineCache says which cache_from images BuildKit cannot use: it
// reads cache only from images that carry inline cache metadata, which
// images built by the classic builder lack.
func warnNoInlineCache(s *session, folders []*baseimage.Folder) {
	for _, f := range folders {
		cfg, err := folderConfig(f)
		if err != nil {
			s.log.Debugf("cache_from %s: cannot read its config: %v", filepath.Base(f.Dir), err)
			continue
		}
		var c map[string]json.RawMessage
		if json.Unmarshal(cfg, &c) == nil && c[inlineCacheKey] == nil {
			s.log.Warnf("cache_from %s: the image has no BuildKit cache metadata (the classic builder made it), so this build cannot use it as cache; "+
				"the image pushed now carries it, so the next build can. Set docker_buildkit: 0 to keep the classic builder", filepath.Base(f.Dir))
		}
	}
}

// inlineCacheKey is where BuildKit keeps inline cache in an image config.
const inlineCacheKey = "moby.buildkit.cache.v0"

func folderConfig(f *baseimage.Folder) ([]byte, error) {
	// Detect already read the config of every folder it can read in place.
	switch {
	case f.Image != nil:
		return f.Image.RawConfig, nil
	case f.Save != nil:
		return f.Save.RawConfig, nil
	}
	return nil, errors.New("the tarball is compressed, so its config is not read before loading")
}

// remoteCache checks that the `cache: true` image exists. BuildKit then reads
// its inline cache metadata from the registry and fetches only the layers of
// the steps it reuses; a daemon pull would download the whole image, base
// layers included (a loaded base has no registry origin to match them by).
func remoteCache(ctx context.Context, env Env, s *session, src protocol.Source, tag string) error {
	c, err := registryClient(env, &src, s.log)
	if err != nil {
		return err
	}
	if _, err := c.Digest(ctx, src.Repository, tag); err != nil {
		return c.Explain(err)
	}
	s.log.Infof("cache: BuildKit will use %s:%s's inline cache metadata", src.Repository, tag)
	return nil
}
