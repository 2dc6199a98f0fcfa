// Package resource holds the three commands Concourse runs — check, in and
// out — each reading its request, doing the work through the other packages,
// and writing one JSON response. Commands take their streams, arguments and
// environment as values (Env) so tests can run them in-process.
package resource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/sirupsen/logrus"
)

// Version is stamped into the binaries at build time.
var Version = "dev"

// Env is what a command gets from the process: streams, arguments, the
// environment and, for tests only, hooks.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Args           []string // os.Args: the program name, then DEST or SRC
	// LookupEnv reads the process environment (build args' proxies and
	// Concourse's BUILD_* variables, secrets' env, the in-container
	// switch); nil reads the process's own, so in-process tests can give
	// a command an environment without os.Setenv.
	LookupEnv func(key string) (string, bool)
	// Hooks are for tests only: see testhooks.go.
	Hooks Hooks
}

// Getenv is the environment variable key, "" when it is not set.
func (e Env) Getenv(key string) string {
	v, _ := e.lookup(key)
	return v
}

func (e Env) lookup(key string) (string, bool) {
	if e.LookupEnv == nil {
		return os.LookupEnv(key)
	}
	return e.LookupEnv(key)
}

// Command is one of Check, In, Out.
type Command func(ctx context.Context, env Env) error

// Main runs cmd for a process: it cancels the context on SIGTERM/SIGINT
// (Concourse aborts builds with SIGTERM), prints the error and returns the
// exit code. An abort reads "aborted (SIGTERM) during <phase>".
func Main(cmd Command) int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	go func() {
		if s, ok := <-sigs; ok {
			cancel(&AbortedError{Signal: s})
		}
	}()
	env := Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Args: os.Args, LookupEnv: os.LookupEnv}
	env.Hooks = hooksFromEnv(env.Getenv)
	return run(ctx, cmd, env)
}

// run runs cmd, prints its error on env.Stderr and returns the exit code.
func run(ctx context.Context, cmd Command, env Env) int {
	ctx, phase := withPhaseNote(ctx)
	err := cmd(ctx, env)
	if err == nil {
		return 0
	}
	msg := err.Error()
	var ab *AbortedError
	if errors.As(context.Cause(ctx), &ab) {
		// Concourse aborted the build; say so instead of "context canceled".
		msg = abortMessage(ab, phase.get(), err)
	}
	fmt.Fprintf(env.Stderr, "\x1b[31merror:\x1b[0m %s\n", maskWithChain(err, msg))
	return 1
}

// session is what every command sets up after decoding: a logger that masks
// the request's secrets, and a way to mask them in the returned error.
type session struct {
	log    *logrus.Entry
	redact *logging.Redactor
}

func newSession(env Env, src *protocol.Source, warnings []string) *session {
	r := logging.NewRedactor(env.Stderr, secretsOf(src)...)
	s := &session{log: logging.New(r, bool(src.Debug)), redact: r}
	logging.CaptureStandard(s.log)
	for _, w := range warnings {
		s.log.Warn(w)
	}
	return s
}

// fail masks secrets in err's text. Errors are built from our own messages
// and registry diagnostics, but a registry may echo what it was sent. The
// result wraps err, so errors.Is and errors.As still see the cause.
func (s *session) fail(err error) error {
	if err == nil {
		return nil
	}
	return &redactedError{msg: s.redact.Redact(err.Error()), err: err, redact: s.redact}
}

// redactedError is an error with the session's secrets masked in its text.
// What it wraps is not masked: an error is printed through its Error, and
// Main masks whatever it prints again with the redactor it finds in the
// chain (maskWithChain), in case that text came from further down.
type redactedError struct {
	msg    string
	err    error
	redact *logging.Redactor
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// maskWithChain masks msg with the secrets of the session whose error err
// wraps, if any.
func maskWithChain(err error, msg string) string {
	var re *redactedError
	if errors.As(err, &re) {
		return re.redact.Redact(msg)
	}
	return msg
}

func secretsOf(src *protocol.Source) []string {
	// The access key ID is not a secret to AWS, but it names an account's
	// key and belongs in no build log.
	out := []string{src.Password, src.AWSAccessKeyID, src.AWSSecretAccessKey, src.AWSSessionToken}
	for _, r := range src.AdditionalPrivateRegistries {
		out = append(out, r.Password)
	}
	for _, c := range src.ClientCerts {
		out = append(out, c.Key)
	}
	return out
}

// registryClient builds the registry client for a source.
func registryClient(env Env, src *protocol.Source, log *logrus.Entry) (*registry.Client, error) {
	o := registry.Options{
		Username:    src.Username,
		Password:    src.Password,
		Insecure:    src.InsecureRegistries,
		Mirror:      src.RegistryMirror,
		UserAgent:   "docker-image-resource/" + Version,
		Jobs:        src.Downloads(),
		Log:         log,
		Additional:  map[string]authn.Basic{},
		CACerts:     src.CACerts,
		ClientCerts: src.ClientCerts,
	}
	for _, r := range src.AdditionalPrivateRegistries {
		o.Additional[r.Registry] = authn.Basic{Username: r.Username, Password: r.Password}
	}
	env.Hooks.registry(&o)
	return registry.New(o)
}

// writeJSON prints the one JSON document stdout carries.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write response: %w", err)
	}
	return nil
}
