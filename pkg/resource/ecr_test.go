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

func TestECRLoginRules(t *testing.T) {
	const repoHost = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
	const fromHost = "210987654321.dkr.ecr.eu-west-1.amazonaws.com"
	fake := testenv.StartFakeECR(t, testenv.FakeECROptions{AccessKeyID: "AKIDRULES", SecretAccessKey: "rules-secret-marker", Password: "token-pass-marker"})
	testenv.ECREnv(t, fake)
	ctx := context.Background()
	login := func(src protocol.Source, others ...string) (*protocol.Source, string, error) {
		var log bytes.Buffer
		s := newSession(Env{Stderr: &log}, &src, nil)
		err := ecrLogin(ctx, s, &src, others)
		s.log.Infof("password %s", src.Password) // must come out masked
		if err != nil {
			s.log.Info(err)
		}
		return &src, log.String(), err
	}
	keys := protocol.Source{AWSAccessKeyID: "AKIDRULES", AWSSecretAccessKey: "rules-secret-marker"}

	t.Run("repository and FROM host get tokens", func(t *testing.T) {
		src := keys
		src.Repository = repoHost + "/team/app"
		got, log, err := login(src, fromHost, "registry.example.com", repoHost)
		if err != nil {
			t.Fatal(err)
		}
		if got.Username != "AWS" || got.Password != "token-pass-marker" {
			t.Errorf("source credentials %q/%q", got.Username, got.Password)
		}
		if len(got.AdditionalPrivateRegistries) != 1 || got.AdditionalPrivateRegistries[0].Registry != fromHost {
			t.Errorf("additional registries %+v", got.AdditionalPrivateRegistries)
		}
		auth := registryAuth(got)
		if !slices.Equal(auth.Registries(), []string{repoHost, fromHost}) {
			t.Errorf("daemon auth for %v", auth.Registries())
		}
		for _, marker := range []string{"token-pass-marker", "rules-secret-marker", "AKIDRULES"} {
			if strings.Contains(log, marker) {
				t.Errorf("log shows %s:\n%s", marker, log)
			}
		}
	})
	t.Run("explicit username and additional entries win", func(t *testing.T) {
		src := keys
		src.Repository = repoHost + "/team/app"
		src.Username, src.Password = "AWS", "given"
		src.AdditionalPrivateRegistries = []protocol.PrivateRegistry{{Registry: fromHost, Username: "AWS", Password: "given2"}}
		n := len(fake.Calls())
		got, _, err := login(src, fromHost)
		if err != nil || got.Password != "given" || len(got.AdditionalPrivateRegistries) != 1 || len(fake.Calls()) != n {
			t.Fatalf("err %v, source %+v, %d calls", err, got, len(fake.Calls())-n)
		}
	})
	t.Run("half a key pair", func(t *testing.T) {
		_, _, err := login(protocol.Source{Repository: repoHost + "/a", AWSAccessKeyID: "AKIDRULES"})
		if err == nil || !strings.Contains(err.Error(), "source.aws_access_key_id and source.aws_secret_access_key") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("no credentials anywhere", func(t *testing.T) {
		_, _, err := login(protocol.Source{Repository: repoHost + "/a"})
		if err == nil || !strings.Contains(err.Error(), "source.aws_access_key_id") {
			t.Fatalf("err %v", err)
		}
		t.Log(err)
		// Only a FROM host without keys: a warning, not a failure.
		if _, log, err := login(protocol.Source{Repository: "registry.example.com/a"}, fromHost); err != nil || !strings.Contains(log, "no AWS credentials") {
			t.Fatalf("err %v, log %s", err, log)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		src := keys
		src.Repository = repoHost + "/a"
		src.AWSAccessKeyID = "AKIDWRONG"
		_, _, err := login(src)
		if err == nil || !strings.Contains(err.Error(), "source.aws_access_key_id") || !strings.Contains(err.Error(), "UnrecognizedClientException") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("not ECR: AWS untouched", func(t *testing.T) {
		src := keys
		src.Repository = "registry.example.com/a"
		n := len(fake.Calls())
		_, log, err := login(src)
		if err != nil || len(fake.Calls()) != n || !strings.Contains(log, "unused") {
			t.Fatalf("err %v, %d calls, log %s", err, len(fake.Calls())-n, log)
		}
	})
}
