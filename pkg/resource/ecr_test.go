package resource

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

func TestDockerfileECRHosts(t *testing.T) {
	df := `# syntax=docker/dockerfile:1
# FROM 999999999999.dkr.ecr.us-east-1.amazonaws.com/commented-out
ARG BASE=111111111111.dkr.ecr.eu-west-1.amazonaws.com/team/base:1
ARG PLAIN=hello
FROM ${BASE} AS build
FROM --platform=linux/amd64 \
    222222222222.dkr.ecr.cn-north-1.amazonaws.com.cn/tools:2 AS tools
FROM registry.example.com/app:1
COPY --from=333333333333.dkr.ecr.us-west-2.amazonaws.com/assets:3 /a /a
COPY --from=build /b /b
from 111111111111.dkr.ecr.eu-west-1.amazonaws.com/team/other
RUN echo 444444444444.dkr.ecr.us-east-2.amazonaws.com
LABEL x=555555555555.dkr.ecr.us-east-2.amazonaws.com
`
	got := dockerfileECRHosts(df)
	want := []string{
		"111111111111.dkr.ecr.eu-west-1.amazonaws.com",
		"222222222222.dkr.ecr.cn-north-1.amazonaws.com.cn",
		"333333333333.dkr.ecr.us-west-2.amazonaws.com",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("hosts %q, want %q", got, want)
	}
}

// The ECR hosts of TestECRLoginRules: the repository's and a FROM line's.
const (
	rulesRepo = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
	rulesFrom = "210987654321.dkr.ecr.eu-west-1.amazonaws.com"
)

func TestECRLoginRules(t *testing.T) {
	fake := testenv.StartFakeECR(t, testenv.FakeECROptions{AccessKeyID: "AKIDRULES", SecretAccessKey: "rules-secret-marker", Password: "token-pass-marker"})
	testenv.ECREnv(t, fake)
	r := ecrRules{fake: fake, keys: protocol.Source{AWSAccessKeyID: "AKIDRULES", AWSSecretAccessKey: "rules-secret-marker"}}
	t.Run("repository and FROM host get tokens", r.tokens)
	t.Run("explicit username and additional entries win", r.explicitWins)
	t.Run("half a key pair", r.halfKeyPair)
	t.Run("no credentials anywhere", r.noCredentials)
	t.Run("wrong key", r.wrongKey)
	t.Run("not ECR: AWS untouched", r.notECR)
}

// ecrRules runs ecrLogin against a fake ECR that knows keys.
type ecrRules struct {
	fake *testenv.FakeECR
	keys protocol.Source
}

// login runs ecrLogin for src and returns the source it made and the log.
func (r ecrRules) login(src protocol.Source, others ...string) (protocol.Source, string, error) {
	var log bytes.Buffer
	s := newSession(Env{Stderr: &log}, &src, nil)
	got, err := ecrLogin(context.Background(), s, src, others)
	s.log.Infof("password %s", got.Password) // must come out masked
	if err != nil {
		s.log.Info(err)
	}
	return got, log.String(), err
}

func (r ecrRules) tokens(t *testing.T) {
	src := r.keys
	src.Repository = rulesRepo + "/team/app"
	got, log, err := r.login(src, rulesFrom, "registry.example.com", rulesRepo)
	if err != nil {
		t.Fatal(err)
	}
	if got.Username != "AWS" || got.Password != "token-pass-marker" {
		t.Errorf("source credentials %q/%q", got.Username, got.Password)
	}
	if len(got.AdditionalPrivateRegistries) != 1 || got.AdditionalPrivateRegistries[0].Registry != rulesFrom {
		t.Errorf("additional registries %+v", got.AdditionalPrivateRegistries)
	}
	if src.Username != "" || len(src.AdditionalPrivateRegistries) != 0 {
		t.Errorf("ecrLogin changed the request's source: %+v", src)
	}
	auth := registryAuth(&got)
	if !slices.Equal(auth.Registries(), []string{rulesRepo, rulesFrom}) {
		t.Errorf("daemon auth for %v", auth.Registries())
	}
	for _, marker := range []string{"token-pass-marker", "rules-secret-marker", "AKIDRULES"} {
		if strings.Contains(log, marker) {
			t.Errorf("log shows %s:\n%s", marker, log)
		}
	}
}

func (r ecrRules) explicitWins(t *testing.T) {
	src := r.keys
	src.Repository = rulesRepo + "/team/app"
	src.Username, src.Password = "AWS", "given"
	src.AdditionalPrivateRegistries = []protocol.PrivateRegistry{{Registry: rulesFrom, Username: "AWS", Password: "given2"}}
	n := len(r.fake.Calls())
	got, _, err := r.login(src, rulesFrom)
	if err != nil || got.Password != "given" || len(got.AdditionalPrivateRegistries) != 1 || len(r.fake.Calls()) != n {
		t.Fatalf("err %v, source %+v, %d calls", err, got, len(r.fake.Calls())-n)
	}
}

func (r ecrRules) halfKeyPair(t *testing.T) {
	_, _, err := r.login(protocol.Source{Repository: rulesRepo + "/a", AWSAccessKeyID: "AKIDRULES"})
	if err == nil || !strings.Contains(err.Error(), "source.aws_access_key_id and source.aws_secret_access_key") {
		t.Fatalf("err %v", err)
	}
}

func (r ecrRules) noCredentials(t *testing.T) {
	_, _, err := r.login(protocol.Source{Repository: rulesRepo + "/a"})
	if err == nil || !strings.Contains(err.Error(), "source.aws_access_key_id") {
		t.Fatalf("err %v", err)
	}
	t.Log(err)
	// Only a FROM host without keys: a warning, not a failure.
	if _, log, err := r.login(protocol.Source{Repository: "registry.example.com/a"}, rulesFrom); err != nil || !strings.Contains(log, "no AWS credentials") {
		t.Fatalf("err %v, log %s", err, log)
	}
}

func (r ecrRules) wrongKey(t *testing.T) {
	src := r.keys
	src.Repository = rulesRepo + "/a"
	src.AWSAccessKeyID = "AKIDWRONG"
	_, _, err := r.login(src)
	if err == nil || !strings.Contains(err.Error(), "source.aws_access_key_id") || !strings.Contains(err.Error(), "UnrecognizedClientException") {
		t.Fatalf("err %v", err)
	}
}

func (r ecrRules) notECR(t *testing.T) {
	src := r.keys
	src.Repository = "registry.example.com/a"
	n := len(r.fake.Calls())
	_, log, err := r.login(src)
	if err != nil || len(r.fake.Calls()) != n || !strings.Contains(log, "unused") {
		t.Fatalf("err %v, %d calls, log %s", err, len(r.fake.Calls())-n, log)
	}
}
