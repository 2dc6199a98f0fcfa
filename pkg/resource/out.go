package resource

import (
	"context"
	"errors"

	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
)

// Out builds or loads an image from SRC and pushes it.
func Out(ctx context.Context, env Env) error {
	if len(env.Args) < 2 || env.Args[1] == "" {
		return errors.New("usage: out SRC — the source folder argument is missing")
	}
	p, err := protocol.ParseOut(env.Stdin)
	if err != nil {
		return err
	}
	s := newSession(env, &p.Request.Source, p.Warnings)
	return s.fail(errors.New("out: not implemented yet: this version of the resource can check and validate requests, but cannot push"))
}
