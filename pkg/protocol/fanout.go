package protocol

import "errors"

// validateFanOut checks additional_repositories.
func (p *OutParams) validateFanOut() error {
	if len(p.AdditionalRepositories) > 0 {
		return errors.New("params.additional_repositories: pushing to several repositories is not implemented yet; declare one resource per repository")
	}
	return nil
}
