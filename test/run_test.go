// Package test holds the end-to-end tests: the commands run in-process (and
// as built binaries) against a real registry and dockerd from test/testenv.
package test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	"github.com/concourse-docker/docker-image-resource/pkg/resource"
	"github.com/concourse-docker/docker-image-resource/pkg/retry"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

type result struct {
	stdout, stderr string
	err            error
}

var checkCmd = resource.Check

// fastRetry keeps fault tests quick while still honouring Retry-After.
func fastRetry(o *registry.Options) {
	o.Retry = retry.Policy{Attempts: 5, Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond, Budget: 10 * time.Second}
}

func runCheck(t *testing.T, req map[string]any, hooks ...func(*registry.Options)) result {
	t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return runRaw(t, checkCmd, string(b), hooks, "check")
}

func runRaw(t *testing.T, cmd resource.Command, stdin string, hooks []func(*registry.Options), args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	env := resource.Env{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb, Args: append([]string{"cmd"}, args...)}
	if len(hooks) > 0 {
		env.Hooks.Registry = func(o *registry.Options) {
			for _, h := range hooks {
				h(o)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := cmd(ctx, env)
	return result{stdout: out.String(), stderr: errb.String(), err: err}
}

// buildBinaries compiles cmd/check, cmd/in and cmd/out once per test run.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", "../cmd/check", "../cmd/in", "../cmd/out")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// TestBinariesProcessContract runs the built binaries as Concourse does:
// request on stdin, only JSON on stdout, exit codes 0 and 1.
func TestBinariesProcessContract(t *testing.T) {
	bin := buildBinaries(t)
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	d := reg.Push(t, "proc/app:latest", testenv.BusyboxImage(t, testenv.ImageOptions{})).String()

	run := func(name, stdin string, args ...string) (string, string, int) {
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Stdin = strings.NewReader(stdin)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), code
	}

	req, _ := json.Marshal(map[string]any{"source": source(reg, "proc/app", map[string]any{"debug": true})})
	out, stderr, code := run("check", string(req))
	if code != 0 || strings.TrimSpace(out) != `[{"digest":"`+d+`"}]` {
		t.Fatalf("check: code %d stdout %q stderr %s", code, out, stderr)
	}
	if strings.Contains(stderr, reg.Password) {
		t.Error("debug logging printed the password")
	}

	out, stderr, code = run("check", `{"source":{"repository":"x","pasword":"p"}}`)
	if code != 1 || out != "" || !strings.Contains(stderr, `did you mean "password"`) {
		t.Errorf("bad key: code %d stdout %q stderr %q", code, out, stderr)
	}

	_, stderr, code = run("in", `{"source":{"repository":"x"},"version":{"digest":"sha256:`+strings.Repeat("a", 64)+`"}}`)
	if code != 1 || !strings.Contains(stderr, "DEST") {
		t.Errorf("in without DEST: code %d stderr %q", code, stderr)
	}
	_, stderr, code = run("out", `{"source":{"repository":"x"},"params":{}}`, t.TempDir())
	if code != 1 || !strings.Contains(stderr, "must specify build, load, load_file, import_file, or pull_repository params") {
		t.Errorf("out: code %d stderr %q", code, stderr)
	}
}
