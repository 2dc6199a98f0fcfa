package engine

import (
	"maps"
	"testing"
)

func TestFrontendAttrs(t *testing.T) {
	got := frontendAttrs(BuildOptions{
		Target: "final", BuildArgs: map[string]string{"VERSION": "1.2"}, Labels: map[string]string{"team": "a"},
		NetworkMode: "none", InlineCache: true,
	}, "Dockerfile.ci")
	want := map[string]string{
		"filename": "Dockerfile.ci", "image-resolve-mode": "local", "target": "final",
		"build-arg:VERSION": "1.2", "label:team": "a", "force-network-mode": "none",
	}
	if !maps.Equal(got, want) {
		t.Errorf("frontendAttrs = %v, want %v (inline cache is a cache export, not a build arg)", got, want)
	}
}

func TestSolveMessage(t *testing.T) {
	in := `rpc error: code = Unknown desc = failed to solve: process "/bin/sh -c make" did not complete successfully: exit code: 2`
	if got, want := solveMessage(errString(in)), `process "/bin/sh -c make" did not complete successfully: exit code: 2`; got != want {
		t.Errorf("solveMessage = %q, want %q", got, want)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
