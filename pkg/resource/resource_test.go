package resource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
)

// The session's error wraps the original, whose text is not masked: what
// Main prints must be masked however the command built its error from the
// chain, and errors.Is must still see the cause.
func TestMainMasksUnwrappedChains(t *testing.T) {
	const secret = "regpw-marker-2f81ad"
	var failed error
	// A command that unwraps the session's error and prints the original
	// into the error it returns.
	cmd := func(cause error) Command {
		return func(ctx context.Context, env Env) error {
			s := newSession(env, &protocol.Source{Password: secret}, nil)
			failed = s.fail(fmt.Errorf("registry echoed %q: %w", secret, cause))
			return fmt.Errorf("%w (first cause: %v)", failed, errors.Unwrap(failed))
		}
	}
	for _, c := range []struct {
		name  string
		cause error
		abort bool
		want  string
	}{
		{"failure", os.ErrPermission, false, `error:` + "\x1b[0m" + ` registry echoed "***": permission denied (first cause: registry echoed "***": permission denied)`},
		{"abort", os.ErrPermission, true, `aborted (SIGTERM) (registry echoed "***": permission denied (first cause: registry echoed "***": permission denied))`},
		{"abort, cancelled", context.Canceled, true, "error:\x1b[0m aborted (SIGTERM)\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			if c.abort {
				cancel(&AbortedError{Signal: syscall.SIGTERM})
			}
			var stderr bytes.Buffer
			code := run(ctx, cmd(c.cause), Env{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr})
			out := stderr.String()
			if code != 1 || strings.Contains(out, secret) || !strings.Contains(out, c.want) {
				t.Errorf("exit code %d, stderr %q; want 1 and %q without the secret", code, out, c.want)
			}
			// The premise: the chain holds the secret in clear and its cause.
			if inner := errors.Unwrap(failed); !strings.Contains(inner.Error(), secret) || !errors.Is(failed, c.cause) {
				t.Errorf("the session's error does not wrap the original: %v", inner)
			}
		})
	}
}

// Commands read the environment through Env; without LookupEnv, the
// process's own.
func TestEnvGetenv(t *testing.T) {
	t.Setenv("RESOURCE_TEST_VAR", "from the process")
	if v := (Env{}).Getenv("RESOURCE_TEST_VAR"); v != "from the process" {
		t.Errorf("nil LookupEnv: %q", v)
	}
	env := Env{LookupEnv: mapEnv(map[string]string{"BUILD_ID": "42", "http_proxy": "http://proxy:3128", "TOKEN": "tok-value", "EMPTY": ""})}
	if v := env.Getenv("RESOURCE_TEST_VAR"); v != "" {
		t.Errorf("LookupEnv set: the process's variable came through: %q", v)
	}

	params := &protocol.OutParams{BuildArgs: map[string]protocol.Scalar{"ID": "build $BUILD_ID/${BUILD_ID} $HOME"}}
	args, err := buildArgs(env, params, inFolder(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if args["ID"] != "build 42/42 $HOME" || args["http_proxy"] != "http://proxy:3128" || len(args) != 2 {
		t.Errorf("build args %v", args)
	}

	var log bytes.Buffer
	s := newSession(Env{Stderr: &log}, &protocol.Source{}, nil)
	b, err := planBuilder(env, s, &protocol.OutParams{Secrets: map[string]protocol.Secret{"tok": {Env: "TOKEN"}, "empty": {Env: "EMPTY"}}}, inFolder(t.TempDir()))
	if err != nil || len(b.secrets) != 2 || string(b.secrets[0].Value) != "" || string(b.secrets[1].Value) != "tok-value" {
		t.Fatalf("secrets from Env: %+v, %v", b.secrets, err)
	}
	_, err = planBuilder(env, s, &protocol.OutParams{Secrets: map[string]protocol.Secret{"x": {Env: "RESOURCE_TEST_VAR"}}}, inFolder(t.TempDir()))
	if err == nil || !strings.Contains(err.Error(), "params.secrets.x.env: environment variable RESOURCE_TEST_VAR is not set") {
		t.Errorf("a variable only the process has: %v", err)
	}
}

// The put's dockerd reads the environment (the in-container switch)
// through Env too.
func TestDaemonGetsEnv(t *testing.T) {
	var got daemon.Options
	env := Env{
		LookupEnv: mapEnv(map[string]string{daemon.InContainerEnv: "1"}),
		Hooks:     Hooks{Daemon: func(o *daemon.Options) { got = *o }},
	}
	var log bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Start returns before it starts anything
	if _, err := startDaemon(ctx, env, newSession(Env{Stderr: &log}, &protocol.Source{}, nil), protocol.Source{}, nil, false); !errors.Is(err, context.Canceled) {
		t.Fatalf("startDaemon: %v", err)
	}
	if got.Getenv == nil || got.Getenv(daemon.InContainerEnv) != "1" {
		t.Errorf("daemon.Options.Getenv does not read Env")
	}
}

func mapEnv(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}
