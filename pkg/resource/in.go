package resource

import (
	"context"
	"errors"

	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
)

// In fetches the image at version.digest into DEST.
func In(ctx context.Context, env Env) error {
	if len(env.Args) < 2 || env.Args[1] == "" {
		return errors.New("usage: in DEST — the destination folder argument is missing")
	}
	p, err := protocol.ParseIn(env.Stdin)
	if err != nil {
		return err
	}
	s := newSession(env, &p.Request.Source, p.Warnings)
	return s.fail(errors.New("in: not implemented yet"))
}
