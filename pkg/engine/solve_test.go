package engine

import (
	"maps"
	"slices"
	"testing"

	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestFrontendAttrs(t *testing.T) {
	got := frontendAttrs(BuildOptions{
		Target: "final", BuildArgs: map[string]string{"VERSION": "1.2"}, Labels: map[string]string{"team": "a"},
		NetworkMode: "none", InlineCache: true,
	}, "Dockerfile.ci", []string{"linux/amd64", "linux/arm64"})
	want := map[string]string{
		"filename": "Dockerfile.ci", "image-resolve-mode": "local", "target": "final",
		"build-arg:VERSION": "1.2", "label:team": "a", "force-network-mode": "none", "platform": "linux/amd64,linux/arm64",
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

func TestUnsupported(t *testing.T) {
	worker := []ocispecs.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "amd64", Variant: "v2"}, {OS: "linux", Architecture: "386"}}
	got := unsupported([]string{"linux/amd64", "linux/386", "linux/arm64", "linux/arm/v7"}, worker)
	if !slices.Equal(got, []string{"linux/arm64", "linux/arm/v7"}) {
		t.Errorf("unsupported = %v, want [linux/arm64 linux/arm/v7]", got)
	}
}
