package resource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
)

// defaultBuildKit is the builder used when params.docker_buildkit is not set.
const defaultBuildKit = true

// maxSecretSize is BuildKit's limit for one secret.
const maxSecretSize = 500 * 1024

// planBuilder chooses the builder and reads build secrets before the daemon
// starts, so a missing variable or file fails in milliseconds and every
// secret value is masked in the log from here on.
func planBuilder(s *session, plan *putPlan, params *protocol.OutParams, abs func(string) string) error {
	plan.buildkit = defaultBuildKit
	if params.DockerBuildkit != nil {
		plan.buildkit = bool(*params.DockerBuildkit)
	}
	if len(params.Secrets) == 0 {
		return nil
	}
	// The values given in the request are masked before anything else can
	// fail or log.
	for _, sec := range params.Secrets {
		s.redact.Add(sec.Value)
	}
	if params.DockerBuildkit != nil && !plan.buildkit {
		return errors.New("params.secrets need BuildKit, but params.docker_buildkit is 0: remove docker_buildkit or set it to 1")
	}
	plan.buildkit = true
	ids := make([]string, 0, len(params.Secrets))
	for id := range params.Secrets {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		sec := params.Secrets[id]
		field := "params.secrets." + id
		if id == "" {
			return errors.New("params.secrets: a secret has an empty id; use the id that RUN --mount=type=secret,id=... names")
		}
		var value []byte
		switch {
		case sec.Value != "":
			value = []byte(sec.Value)
		case sec.Env != "":
			v, ok := os.LookupEnv(sec.Env)
			if !ok {
				return fmt.Errorf("%s.env: environment variable %s is not set in the put's container. Concourse gives a put only BUILD_* variables, "+
					"ATC_EXTERNAL_URL and the variables of the resource type's image, never a pipeline's params or credentials: "+
					"use value: ((var)) to pass a credential, or source: <file> for a file among the put's inputs", field, sec.Env)
			}
			value = []byte(v)
		default:
			path := abs(sec.Source)
			if err := regularFile(field+".source", path); err != nil {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("%s.source: %w", field, err)
			}
			value = b
		}
		if len(value) > maxSecretSize {
			return fmt.Errorf("%s: the secret is %d bytes; BuildKit takes at most %d", field, len(value), maxSecretSize)
		}
		plan.secrets = append(plan.secrets, engine.Secret{ID: id, Value: value})
		s.redact.Add(string(value))
	}
	return nil
}

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
func remoteCache(ctx context.Context, env Env, s *session, src *protocol.Source, tag string) error {
	c, err := registryClient(env, src, s.log)
	if err != nil {
		return err
	}
	if _, err := c.Digest(ctx, src.Repository, tag); err != nil {
		return errors.New(c.Explain(err))
	}
	s.log.Infof("cache: BuildKit will use %s:%s's inline cache metadata", src.Repository, tag)
	return nil
}
