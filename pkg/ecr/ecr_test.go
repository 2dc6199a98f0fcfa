package ecr_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/ecr"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

func TestParseHost(t *testing.T) {
	cases := []struct {
		host, region string
		fips, ok     bool
	}{
		{"123456789012.dkr.ecr.us-east-1.amazonaws.com", "us-east-1", false, true},
		{"123456789012.dkr.ecr.us-east-1.amazonaws.com:443", "us-east-1", false, true},
		{"123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", "cn-north-1", false, true},
		{"123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", "us-gov-west-1", true, true},
		{"123456789012.dkr.ecr.us-east-1.amazonaws.com:5000", "", false, false},
		{"12345678901.dkr.ecr.us-east-1.amazonaws.com", "", false, false},
		{"123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.example", "", false, false},
		{"public.ecr.aws", "", false, false},
		{"registry.example.com", "", false, false},
	}
	for _, c := range cases {
		r, ok := ecr.ParseHost(c.host)
		if ok != c.ok || r.Region != c.region || r.FIPS != c.fips {
			t.Errorf("ParseHost(%q) = %+v, %v; want region %q fips %v ok %v", c.host, r, ok, c.region, c.fips, c.ok)
		}
	}
}

func TestFindHosts(t *testing.T) {
	text := "FROM 111111111111.dkr.ecr.eu-west-1.amazonaws.com/base:1 AS b\n" +
		"ARG X=222222222222.dkr.ecr.cn-north-1.amazonaws.com.cn/tools\n" +
		"FROM 111111111111.dkr.ecr.eu-west-1.amazonaws.com/other\nFROM docker.io/library/alpine\n"
	got := ecr.FindHosts(text)
	want := []string{"111111111111.dkr.ecr.eu-west-1.amazonaws.com", "222222222222.dkr.ecr.cn-north-1.amazonaws.com.cn"}
	if !slices.Equal(got, want) {
		t.Fatalf("FindHosts = %v, want %v", got, want)
	}
}

const host = "123456789012.dkr.ecr.eu-central-1.amazonaws.com"

func TestTokenWithKeys(t *testing.T) {
	fake := testenv.StartFakeECR(t, testenv.FakeECROptions{
		AccessKeyID: "AKIDTESTKEY", SecretAccessKey: "secret-key-marker", SessionToken: "session-marker", Password: "registry-pass",
	})
	testenv.ECREnv(t, fake)
	ctx := context.Background()

	ex, err := ecr.New(ctx, ecr.Keys{AccessKeyID: "AKIDTESTKEY", SecretAccessKey: "secret-key-marker", SessionToken: "session-marker"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ex.Secrets, "secret-key-marker") || !slices.Contains(ex.Secrets, "session-marker") {
		t.Errorf("secrets to mask %q", ex.Secrets)
	}
	tok, err := ex.Token(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Username != "AWS" || tok.Password != "registry-pass" || time.Until(tok.Expires) < 11*time.Hour {
		t.Errorf("token %+v", tok)
	}
	if calls := fake.Calls(); len(calls) != 1 || calls[0].Region != "eu-central-1" || calls[0].Status != 200 {
		t.Errorf("calls %+v", calls)
	}

	// A wrong key ID, a wrong secret (the signature does not match) and a
	// missing session token are all refused, as AWS does.
	for _, keys := range []ecr.Keys{
		{AccessKeyID: "AKIDWRONG", SecretAccessKey: "secret-key-marker", SessionToken: "session-marker"},
		{AccessKeyID: "AKIDTESTKEY", SecretAccessKey: "wrong-secret", SessionToken: "session-marker"},
		{AccessKeyID: "AKIDTESTKEY", SecretAccessKey: "secret-key-marker"},
	} {
		ex, err := ecr.New(ctx, keys)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ex.Token(ctx, host)
		var api *ecr.APIError
		if !errors.As(err, &api) || !api.Refused() {
			t.Fatalf("keys %+v: err %v, want a refusal", keys, err)
		}
		if strings.Contains(err.Error(), "secret-key-marker") {
			t.Errorf("error shows the secret: %v", err)
		}
		t.Logf("refused: %v", err)
	}
}

func TestTokenDefaultChain(t *testing.T) {
	fake := testenv.StartFakeECR(t, testenv.FakeECROptions{AccessKeyID: "AKIDENV", SecretAccessKey: "env-secret", Password: "p"})
	testenv.ECREnv(t, fake)
	ctx := context.Background()

	// Nothing anywhere: no keys, empty config files, no metadata service.
	if _, err := ecr.New(ctx, ecr.Keys{}); !errors.Is(err, ecr.ErrNoCredentials) {
		t.Fatalf("no credentials: err %v", err)
	}

	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
	ex, err := ecr.New(ctx, ecr.Keys{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(ex.Secrets, "env-secret") {
		t.Errorf("secrets to mask %q", ex.Secrets)
	}
	if tok, err := ex.Token(ctx, host); err != nil || tok.Password != "p" {
		t.Fatalf("token %+v, %v", tok, err)
	}
}
