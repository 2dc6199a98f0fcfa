package platformcheck

import (
	"github.com/containerd/platforms"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// globalArgs is the scope FROM lines expand in, built as BuildKit v0.13
// builds it: the automatic platform ARGs (a build arg of the same name
// replaces one), then each global ARG in order: its build arg, else its
// default expanded in the scope so far (an unknown variable is empty), else
// empty. v0.13 also empties an automatic ARG that is declared again without
// a default (later frontends keep it).
func globalArgs(lex *shell.Lex, metaArgs []instructions.ArgCommand, buildArgs map[string]string, build, target ocispecs.Platform) env {
	e := env{
		"BUILDPLATFORM":  platforms.Format(build),
		"BUILDOS":        build.OS,
		"BUILDARCH":      build.Architecture,
		"BUILDVARIANT":   build.Variant,
		"TARGETPLATFORM": platforms.Format(target),
		"TARGETOS":       target.OS,
		"TARGETARCH":     target.Architecture,
		"TARGETVARIANT":  target.Variant,
	}
	for k := range e {
		if v, ok := buildArgs[k]; ok {
			e[k] = v
		}
	}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			v, ok := buildArgs[kv.Key]
			if !ok && kv.Value != nil {
				// BuildKit v0.13 ignores an error here and keeps what the
				// expansion returned: nothing.
				if r, err := lex.ProcessWordWithMatches(*kv.Value, e); err == nil {
					v = r.Result
				}
			}
			e[kv.Key] = v
		}
	}
	return e
}

// env is a variable scope for shell.Lex.
type env map[string]string

func (e env) Get(k string) (string, bool) { v, ok := e[k]; return v, ok }

func (e env) Keys() []string {
	keys := make([]string, 0, len(e))
	for k := range e {
		keys = append(keys, k)
	}
	return keys
}
