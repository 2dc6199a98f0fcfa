package resource

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/concourse-docker/docker-image-resource/pkg/ecr"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/pkg/registry"
)

// fanOutPlan is where else the put pushes: params.additional_repositories,
// checked against the source, with the credentials each one gets.
type fanOutPlan struct {
	additional []string // as the user wrote them, in order
	// pushSrc is the source the push logs in with: the plan's credentials
	// plus an ECR token for each ECR registry of an additional repository
	// that has no additional_private_registries entry. Nil: credentials.src.
	pushSrc *protocol.Source
}

// pushSource is the source the registry push logs in with.
func (f *fanOutPlan) pushSource(src *protocol.Source) *protocol.Source {
	if f.pushSrc != nil {
		return f.pushSrc
	}
	return src
}

// planFanOut checks params.additional_repositories against the source and
// decides each one's credentials, by the rules of every other registry
// access: source.username/password on source.repository's registry, the
// additional_private_registries entry of its registry elsewhere (an ECR
// token when it is ECR without one), else none: anonymous, which the log
// says before anything is built.
func planFanOut(ctx context.Context, s *session, req *protocol.OutRequest, src protocol.Source) (fanOutPlan, error) {
	repos, err := req.AdditionalRepositories()
	if err != nil || len(repos) == 0 {
		return fanOutPlan{}, err
	}
	own := repoHost(src.Repository)
	var tokens []string
	for _, r := range repos {
		h := repoHost(r)
		switch {
		case h == own && src.Username != "":
			s.log.Infof("push: also to %s, with source.username's credentials (%s is source.repository's registry)", r, h)
		case hasEntry(&src, h):
			s.log.Infof("push: also to %s, with the additional_private_registries entry for %s", r, h)
		case h == own:
			s.log.Infof("push: also to %s, anonymously like source.repository (no source.username)", r)
		case isECR(h):
			tokens = appendUnique(tokens, h)
			s.log.Infof("push: also to %s, with an ECR token for %s", r, h)
		default:
			s.log.Warnf("push: also to %s, anonymously: no additional_private_registries entry names %s (source.username/password are only for %s)", r, h, own)
		}
	}
	plan := fanOutPlan{additional: repos}
	if len(tokens) > 0 {
		withTokens, err := fanOutTokens(ctx, s, src, tokens)
		if err != nil {
			return fanOutPlan{}, err
		}
		plan.pushSrc = &withTokens
	}
	return plan, nil
}

func hasEntry(src *protocol.Source, host string) bool {
	return slices.ContainsFunc(src.AdditionalPrivateRegistries, func(r protocol.PrivateRegistry) bool {
		return registry.NormalizeHost(r.Registry) == host
	})
}

func isECR(host string) bool {
	_, ok := ecr.ParseHost(host)
	return ok
}

// fanOutTokens gets an ECR token for each host, all required (a push to
// ECR without one always fails), and returns src with them as
// additional_private_registries entries, as ecrLogin does for FROM hosts.
func fanOutTokens(ctx context.Context, s *session, src protocol.Source, hosts []string) (protocol.Source, error) {
	keys, err := ecrKeys(&src)
	if err != nil {
		return src, err
	}
	ctx, cancel := context.WithTimeout(ctx, ecrTimeout)
	defer cancel()
	ex, err := ecr.New(ctx, keys)
	if err != nil {
		if errors.Is(err, ecr.ErrNoCredentials) {
			return src, fmt.Errorf("params.additional_repositories: %s is an ECR registry without an additional_private_registries entry, so an ECR token is needed, but no AWS credentials were found: set source.aws_access_key_id and source.aws_secret_access_key, or run the worker with an AWS role: %w", strings.Join(hosts, ", "), err)
		}
		return src, fmt.Errorf("ECR: source.aws_access_key_id: %w", err)
	}
	s.redact.Add(ex.Secrets...)
	needs := make([]ecrNeed, len(hosts))
	for i, h := range hosts {
		needs[i] = ecrNeed{host: h, required: true}
	}
	// No host is the repository's (its token, if any, is in src already):
	// every token becomes an additional_private_registries entry.
	return ecrTokens(ctx, s, ex, src, "", needs, true)
}
