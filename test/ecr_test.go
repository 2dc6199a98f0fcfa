package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	"github.com/concourse-docker/docker-image-resource/pkg/resource"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Two ECR registries of different accounts and regions: the repository's,
// and one a Dockerfile pulls FROM. Both are the same loopback registry.
const (
	ecrRepoHost = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
	ecrFromHost = "210987654321.dkr.ecr.eu-west-1.amazonaws.com"

	// Markers: none may ever show in a log or an error.
	ecrKeyID   = "AKIDMARKERKEYID0001"
	ecrSecret  = "secret-marker-0a1b2c3d"
	ecrSession = "session-marker-4e5f6a7b"
)

// ecrEnv is a fake ECR handing out the password of a TLS registry (user
// AWS) that answers to both ECR names: in-process through the registry
// client's Hosts hook, in the put's dockerd through a private /etc/hosts
// and a forwarder at port 443.
type ecrEnv struct {
	reg   *testenv.Registry
	fake  *testenv.FakeECR
	hosts func(*registry.Options)
}

func startECR(t *testing.T) *ecrEnv {
	t.Helper()
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{TLS: true, Username: "AWS", ExtraNames: []string{ecrRepoHost, ecrFromHost}})
	fake := testenv.StartFakeECR(t, testenv.FakeECROptions{AccessKeyID: ecrKeyID, SecretAccessKey: ecrSecret, SessionToken: ecrSession, Password: reg.Password})
	testenv.ECREnv(t, fake)
	return &ecrEnv{reg: reg, fake: fake, hosts: func(o *registry.Options) {
		o.Hosts = map[string]string{ecrRepoHost + ":443": reg.Host, ecrFromHost + ":443": reg.Host}
	}}
}

// source is an ECR source for repo with the keys (keys=false: none).
func (e *ecrEnv) source(repo string, keys bool, extra map[string]any) map[string]any {
	s := map[string]any{
		"repository": ecrRepoHost + "/" + repo,
		"ca_certs": []map[string]any{
			{"domain": ecrRepoHost, "cert": string(e.reg.CA.CertPEM)},
			{"domain": ecrFromHost, "cert": string(e.reg.CA.CertPEM)},
		},
		"debug": true,
	}
	if keys {
		s["aws_access_key_id"], s["aws_secret_access_key"], s["aws_session_token"] = ecrKeyID, ecrSecret, ecrSession
	}
	for k, v := range extra {
		s[k] = v
	}
	return s
}

func (e *ecrEnv) regions() []string {
	var out []string
	for _, c := range e.fake.Calls() {
		if c.Status == 200 {
			out = append(out, c.Region)
		}
	}
	return out
}

// noMarkers fails when a secret shows in a command's output or error.
func (e *ecrEnv) noMarkers(t *testing.T, what string, r result) {
	t.Helper()
	all := r.stdout + r.stderr
	if r.err != nil {
		all += r.err.Error()
	}
	for _, m := range []string{ecrKeyID, ecrSecret, ecrSession, e.reg.Password} {
		if strings.Contains(all, m) {
			t.Errorf("%s: output shows a secret (%.6s...):\n%s", what, m, all)
		}
	}
}

func TestECRCheckAndGet(t *testing.T) {
	e := startECR(t)
	d := e.reg.Push(t, "team/app:latest", testenv.BusyboxImage(t, testenv.ImageOptions{})).String()

	r := runCheck(t, map[string]any{"source": e.source("team/app", true, nil)}, e.hosts)
	if r.err != nil || strings.TrimSpace(r.stdout) != `[{"digest":"`+d+`"}]` {
		t.Fatalf("check: %v, stdout %q\n%s", r.err, r.stdout, r.stderr)
	}
	e.noMarkers(t, "check", r)
	if got := e.regions(); !slices.Equal(got, []string{"us-east-1"}) {
		t.Errorf("token requests in %v, want one in us-east-1 (the repository host's region)", got)
	}

	dest := t.TempDir()
	r = runIn(t, dest, map[string]any{"source": e.source("team/app", true, nil), "version": map[string]any{"digest": d}}, e.hosts)
	if r.err != nil {
		t.Fatalf("in: %v\n%s", r.err, r.stderr)
	}
	e.noMarkers(t, "in", r)
	if _, err := os.Stat(filepath.Join(dest, "rootfs", "bin")); err != nil {
		t.Errorf("in wrote no rootfs: %v", err)
	}

	t.Run("default credential chain", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", ecrKeyID)
		t.Setenv("AWS_SECRET_ACCESS_KEY", ecrSecret)
		t.Setenv("AWS_SESSION_TOKEN", ecrSession)
		assertVersions(t, checkVersions(t, map[string]any{"source": e.source("team/app", false, nil)}, e.hosts), d)
	})
	t.Run("no credentials anywhere", func(t *testing.T) {
		r := checkFails(t, map[string]any{"source": e.source("team/app", false, nil)}, []string{"source.aws_access_key_id", ecrRepoHost}, e.hosts)
		e.noMarkers(t, "check", r)
	})
	t.Run("wrong key", func(t *testing.T) {
		src := e.source("team/app", true, map[string]any{"aws_access_key_id": "AKIDNOTTHEKEY000"})
		r := checkFails(t, map[string]any{"source": src}, []string{"aws_access_key_id", "UnrecognizedClientException"}, e.hosts)
		e.noMarkers(t, "check", r)
	})
	t.Run("wrong secret", func(t *testing.T) {
		src := e.source("team/app", true, map[string]any{"aws_secret_access_key": "not-the-secret"})
		r := checkFails(t, map[string]any{"source": src}, []string{"aws_secret_access_key", "InvalidSignatureException"}, e.hosts)
		if strings.Contains(r.stderr+r.err.Error(), "not-the-secret") {
			t.Errorf("the given secret shows:\n%s\n%v", r.stderr, r.err)
		}
	})
}

// runOutECR is runOut with the test's names for the ECR hosts: the
// registry client dials the registry through its Hosts hook, and the
// daemon resolves both ECR names to a forwarder at port 443 (ECR hosts have
// no port) in front of the registry. 127.x is an insecure registry to
// dockerd, so it speaks TLS without checking the certificate.
func runOutECR(t *testing.T, e *ecrEnv, srcDir string, req map[string]any) result {
	t.Helper()
	ip := testenv.ForwardPort(t, 443, e.reg.Host)
	unlock := testenv.LockDockerd(t)
	defer unlock()
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var out, errb strings.Builder
	env := resource.Env{Stdin: strings.NewReader(string(b)), Stdout: &out, Stderr: &errb, Args: []string{"out", srcDir}}
	env.Hooks.Registry = e.hosts
	env.Hooks.Daemon = func(o *daemon.Options) {
		o.Isolated = true
		o.Hosts = map[string]string{ecrRepoHost: ip, ecrFromHost: ip}
	}
	env.Hooks.BuildNetwork = "none"
	err = resource.Out(t.Context(), env)
	return result{stdout: out.String(), stderr: errb.String(), err: err}
}

// TestECRPut builds FROM an image of another ECR registry (named in an ARG
// default, as FROM ${BASE}), which the daemon pulls with that registry's
// own token, and pushes to the repository's ECR registry with its token,
// under both builders.
func TestECRPut(t *testing.T) {
	e := startECR(t)
	e.reg.Push(t, "other/base:1", testenv.BusyboxImage(t, testenv.ImageOptions{}))
	srcDir := t.TempDir()
	writeFiles(t, srcDir, map[string]string{
		"app/Dockerfile": "ARG BASE=" + ecrFromHost + "/other/base:1\nFROM ${BASE}\nRUN echo built > /built\n",
	})
	r := runOutECR(t, e, srcDir, map[string]any{"source": e.source("team/app", true, nil), "params": map[string]any{"build": "app"}})
	if r.err != nil {
		t.Fatalf("out: %v\n%s", r.err, r.stderr)
	}
	e.noMarkers(t, "out", r)
	var resp struct{ Version struct{ Digest string } }
	if err := json.Unmarshal([]byte(r.stdout), &resp); err != nil {
		t.Fatalf("stdout %q: %v", r.stdout, err)
	}
	desc, err := remote.Head(e.reg.Ref(t, "team/app:latest"), e.reg.RemoteOptions()...)
	if err != nil || desc.Digest.String() != resp.Version.Digest {
		t.Fatalf("registry has %v (%v), out reported %s", desc, err, resp.Version.Digest)
	}
	got := e.regions()
	slices.Sort(got)
	if !slices.Equal(got, []string{"eu-west-1", "us-east-1"}) {
		t.Errorf("token requests in %v, want one per ECR registry (eu-west-1 for FROM, us-east-1 for the push)", got)
	}
	if testing.Verbose() {
		t.Logf("out's log:\n%s", r.stderr)
	}

	t.Run("classic builder", func(t *testing.T) {
		// The default builder (BuildKit) gets the FROM token through its
		// session; the classic one through the build's AuthConfigs.
		n := len(e.regions())
		r := runOutECR(t, e, srcDir, map[string]any{"source": e.source("team/bk", true, nil), "params": map[string]any{"build": "app", "docker_buildkit": 0}})
		if r.err != nil {
			t.Fatalf("out: %v\n%s", r.err, r.stderr)
		}
		e.noMarkers(t, "out", r)
		if _, err := remote.Head(e.reg.Ref(t, "team/bk:latest"), e.reg.RemoteOptions()...); err != nil {
			t.Fatalf("not pushed: %v", err)
		}
		if got := len(e.regions()) - n; got != 2 {
			t.Errorf("%d token requests, want 2", got)
		}
	})
	t.Run("direct push of a saved get", func(t *testing.T) {
		// load: the registry client pushes straight to ECR with the token.
		d := e.reg.Push(t, "team/saved:1", testenv.BusyboxImage(t, testenv.ImageOptions{Labels: map[string]string{"saved": "yes"}})).String()
		getOK(t, filepath.Join(srcDir, "saved"), map[string]any{
			"source": e.source("team/saved", true, map[string]any{"tag": "1"}), "version": map[string]any{"digest": d},
			"params": map[string]any{"save": true},
		}, e.hosts)
		r := runOutECR(t, e, srcDir, map[string]any{"source": e.source("team/loaded", true, nil), "params": map[string]any{"load": "saved"}})
		if r.err != nil || !strings.Contains(r.stderr, "straight to the registry") {
			t.Fatalf("out: %v\n%s", r.err, r.stderr)
		}
		e.noMarkers(t, "out", r)
		if _, err := remote.Head(e.reg.Ref(t, "team/loaded:latest"), e.reg.RemoteOptions()...); err != nil {
			t.Fatalf("not pushed: %v", err)
		}
	})
	t.Run("wrong key fails before the daemon starts", func(t *testing.T) {
		src := e.source("team/app2", true, map[string]any{"aws_access_key_id": "AKIDNOTTHEKEY000"})
		r := runOutECR(t, e, srcDir, map[string]any{"source": src, "params": map[string]any{"build": "app"}})
		if r.err == nil || !strings.Contains(r.err.Error(), "aws_access_key_id") || strings.Contains(r.stderr, "dockerd") {
			t.Fatalf("err %v\n%s", r.err, r.stderr)
		}
		e.noMarkers(t, "out", r)
	})
}
