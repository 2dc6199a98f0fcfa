package resource

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
)

// defaultBuildKit is the builder used when params.docker_buildkit is not set.
const defaultBuildKit = false

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
		if sec.Env != "" {
			v, ok := os.LookupEnv(sec.Env)
			if !ok {
				return fmt.Errorf("%s: environment variable %s is not set; set it for the put, or use source: <file> instead", field, sec.Env)
			}
			value = []byte(v)
		} else {
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
