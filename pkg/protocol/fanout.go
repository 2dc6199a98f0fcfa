package protocol

import (
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
)

// validateFanOut checks additional_repositories on their own: each entry
// a valid repository, none given twice (Docker Hub names compared
// normalised: "alpine" is "docker.io/library/alpine").
// OutRequest.AdditionalRepositories also compares them with the source.
func (p *OutParams) validateFanOut() error {
	seen := map[string]int{}
	for i, repo := range p.AdditionalRepositories {
		field := fmt.Sprintf("params.additional_repositories[%d]", i)
		if repo == "" {
			return fmt.Errorf("%s is empty: give a repository, e.g. \"registry.example.com:5000/team/app\"", field)
		}
		if err := ValidateRepository(field, repo); err != nil {
			return err
		}
		n := normalRepository(repo)
		if j, ok := seen[n]; ok {
			return fmt.Errorf("%s: %q is params.additional_repositories[%d] (%q) again: list each repository once", field, repo, j, p.AdditionalRepositories[j])
		}
		seen[n] = i
	}
	return nil
}

// AdditionalRepositories are params.additional_repositories as the user
// wrote them, compared with source.repository: the source is pushed to
// anyway, so naming it again is an error. The entries themselves were
// checked when the request was parsed (validateFanOut).
func (r *OutRequest) AdditionalRepositories() ([]string, error) {
	src := normalRepository(r.Source.Repository)
	for i, repo := range r.Params.AdditionalRepositories {
		if normalRepository(repo) == src {
			return nil, fmt.Errorf("params.additional_repositories[%d]: %q is source.repository (%q), which the put pushes to anyway: list only the other repositories", i, repo, r.Source.Repository)
		}
	}
	return r.Params.AdditionalRepositories, nil
}

// normalRepository is repo's full name ("index.docker.io/library/alpine"
// for "alpine"); repo as given when it does not parse (validation says
// why elsewhere).
func normalRepository(repo string) string {
	r, err := name.NewRepository(repo)
	if err != nil {
		return repo
	}
	return r.Name()
}
