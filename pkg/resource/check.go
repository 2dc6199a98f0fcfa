package resource

import (
	"context"
	"errors"
	"fmt"

	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Check reports the digest the registry holds for repository:tag, after the
// cursor version when that still exists.
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
