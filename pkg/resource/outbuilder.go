package resource

import (
	"errors"

	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
)

// planBuilder chooses the builder and resolves build secrets before the
// daemon starts.
func planBuilder(plan *putPlan, params *protocol.OutParams, abs func(string) string) error {
	if (params.DockerBuildkit != nil && bool(*params.DockerBuildkit)) || len(params.Secrets) > 0 {
		return errors.New("params.docker_buildkit and params.secrets: BuildKit builds are not implemented yet; remove them to build with the classic builder")
	}
	return nil
}
