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
const defaultBuildKit = true

// maxSecretSize is BuildKit's limit for one secret.
const maxSecretSize = 500 * 1024

// builder is the builder a build uses and the secrets it gets.
type builder struct {
	buildkit bool
	secrets  []engine.Secret // sorted by ID
}

// planBuilder chooses the builder and reads build secrets before the daemon
// starts, so a missing variable or file fails in milliseconds and every
// secret value is masked in the log from here on.
func planBuilder(env Env, s *session, params *protocol.OutParams, abs func(string) string) (builder, error) {
	b := builder{buildkit: defaultBuildKit}
	if params.DockerBuildkit != nil {
		b.buildkit = bool(*params.DockerBuildkit)
	}
	if len(params.Secrets) == 0 {
		return b, nil
	}
	// The values given in the request are masked before anything else can
	// fail or log.
	for _, sec := range params.Secrets {
		s.redact.Add(sec.Value)
	}
	if params.DockerBuildkit != nil && !b.buildkit {
		return builder{}, errors.New("params.secrets need BuildKit, but params.docker_buildkit is 0: remove docker_buildkit or set it to 1")
	}
	b.buildkit = true
	ids := make([]string, 0, len(params.Secrets))
	for id := range params.Secrets {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if id == "" {
			return builder{}, errors.New("params.secrets: a secret has an empty id; use the id that RUN --mount=type=secret,id=... names")
		}
		value, err := readSecret(env, "params.secrets."+id, params.Secrets[id], abs)
		if err != nil {
			return builder{}, err
		}
		b.secrets = append(b.secrets, engine.Secret{ID: id, Value: value})
		s.redact.Add(string(value))
	}
	return b, nil
}

// readSecret reads a secret's value from where the request says.
func readSecret(env Env, field string, sec protocol.Secret, abs func(string) string) ([]byte, error) {
	var value []byte
	switch {
	case sec.Value != "":
		value = []byte(sec.Value)
	case sec.Env != "":
		v, ok := env.lookup(sec.Env)
		if !ok {
			return nil, fmt.Errorf("%s.env: environment variable %s is not set in the put's container. Concourse gives a put only BUILD_* variables, "+
				"ATC_EXTERNAL_URL and the variables of the resource type's image, never a pipeline's params or credentials: "+
				"use value: ((var)) to pass a credential, or source: <file> for a file among the put's inputs", field, sec.Env)
		}
		value = []byte(v)
	default:
		path := abs(sec.Source)
		if err := regularFile(field+".source", path); err != nil {
			return nil, err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s.source: %w", field, err)
		}
		value = b
	}
	if len(value) > maxSecretSize {
		return nil, fmt.Errorf("%s: the secret is %d bytes; BuildKit takes at most %d", field, len(value), maxSecretSize)
	}
	return value, nil
}
