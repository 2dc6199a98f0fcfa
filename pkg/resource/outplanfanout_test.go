package resource

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

// planFanOut's credential rules: the source's for its own registry, an
// additional_private_registries entry elsewhere, an ECR token for an ECR
// registry without one, else anonymous with a warning; the source named
// again is refused.
func TestPlanFanOut(t *testing.T) {
	fake := testenv.StartFakeECR(t, testenv.FakeECROptions{AccessKeyID: "AKIDFAN", SecretAccessKey: "fan-secret-marker", Password: "fan-token-marker"})
	testenv.ECREnv(t, fake)
	const ecrHost = "210987654321.dkr.ecr.eu-west-1.amazonaws.com"
	plan := func(src protocol.Source, repos ...string) (fanOutPlan, string, error) {
		var log bytes.Buffer
		s := newSession(Env{Stderr: &log}, &src, nil)
		req := &protocol.OutRequest{Source: src, Params: protocol.OutParams{AdditionalRepositories: repos}}
		p, err := planFanOut(context.Background(), s, req, src)
		return p, log.String(), err
	}
	src := protocol.Source{
		Repository: "registry.example.com:5000/team/app", Username: "u", Password: "p",
		AWSAccessKeyID: "AKIDFAN", AWSSecretAccessKey: "fan-secret-marker",
		AdditionalPrivateRegistries: []protocol.PrivateRegistry{{Registry: "mirror.example.com", Username: "m", Password: "mp"}},
	}

	p, log, err := plan(src, "registry.example.com:5000/team/copy", "mirror.example.com/app", "open.example.com/app", ecrHost+"/app")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"also to registry.example.com:5000/team/copy, with source.username's credentials",
		"also to mirror.example.com/app, with the additional_private_registries entry for mirror.example.com",
		"also to open.example.com/app, anonymously: no additional_private_registries entry names open.example.com",
		"also to " + ecrHost + "/app, with an ECR token for " + ecrHost,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "fan-token-marker") || strings.Contains(log, "fan-secret-marker") {
		t.Errorf("log shows a secret:\n%s", log)
	}
	ps := p.pushSource(&src)
	if len(p.additional) != 4 || ps == &src || len(ps.AdditionalPrivateRegistries) != 2 ||
		ps.AdditionalPrivateRegistries[1].Registry != ecrHost || ps.AdditionalPrivateRegistries[1].Password != "fan-token-marker" {
		t.Errorf("plan %+v, push source %+v", p.additional, ps.AdditionalPrivateRegistries)
	}
	if len(src.AdditionalPrivateRegistries) != 1 {
		t.Errorf("the request's source changed: %+v", src.AdditionalPrivateRegistries)
	}

	// Without ECR destinations no token is fetched: the plan's source.
	calls := len(fake.Calls())
	if p, _, err := plan(src, "mirror.example.com/app"); err != nil || p.pushSource(&src) != &src || len(fake.Calls()) != calls {
		t.Errorf("err %v, %d ECR calls", err, len(fake.Calls())-calls)
	}
	// None: nothing to do.
	if p, _, err := plan(src); err != nil || p.additional != nil {
		t.Errorf("no additional repositories: %+v, %v", p, err)
	}
	// The source again, spelt otherwise.
	hub := protocol.Source{Repository: "alpine"}
	if _, _, err := plan(hub, "other.example.com/x", "docker.io/library/alpine"); err == nil ||
		!strings.Contains(err.Error(), `params.additional_repositories[1]: "docker.io/library/alpine" is source.repository ("alpine")`) {
		t.Errorf("source again: %v", err)
	}
	// An ECR destination without AWS keys and without a role fails,
	// naming it, before anything is built.
	bare := protocol.Source{Repository: "registry.example.com/a"}
	if _, _, err := plan(bare, ecrHost+"/app"); err == nil || !strings.Contains(err.Error(), ecrHost) || !strings.Contains(err.Error(), "params.additional_repositories") {
		t.Errorf("ECR without credentials: %v", err)
	}
}
