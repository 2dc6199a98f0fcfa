// Package platformcheck finds, before a multi-platform BuildKit build starts,
// the RUN steps that would execute on a platform the worker cannot run
// natively: each needs a binfmt (qemu) handler on the worker, which the put
// never installs. It reads only the Dockerfile (no daemon, no network) and
// follows the dockerfile frontend of BuildKit v0.13 (dockerd 26.1):
//
//   - a stage runs on its FROM --platform, expanded with the automatic
//     platform ARGs (BUILDPLATFORM, TARGETPLATFORM, BUILDOS, ...) and the
//     global ARGs (build args win), else on the target platform;
//   - FROM <earlier stage> runs on that stage's platform, whatever its own
//     --platform says; FROM scratch always runs on the target platform;
//   - only the stages the target stage needs are built: its FROM, COPY
//     --from=<name|index> and RUN --mount=from=<name>, followed again;
//   - ONBUILD RUN in a stage runs in each stage built FROM it.
//
// What it cannot see: ONBUILD triggers of base images (they run at FROM)
// and named build contexts (--build-context), which the put does not pass.
// A --platform that does not expand or parse (an unknown variable expands
// to nothing, as in BuildKit) is taken as the target platform: the check may
// then ask for an emulator, though BuildKit v0.13 fails such a build anyway
// ("failed to parse platform"), also when a global ARG BUILDPLATFORM without
// a default empties the automatic one.
package platformcheck

import (
	"bytes"
	"fmt"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// Step is a RUN step that would execute on a platform the build platform
// cannot run natively.
type Step struct {
	Stage string // the stage's name, or "stage N" (its index) when unnamed
	// Line is the instruction's in the Dockerfile; for an ONBUILD RUN
	// trigger, the ONBUILD's line in the stage Stage is built FROM.
	Line     int
	Original string // the instruction as written, e.g. "RUN make"
	// Platform is where the step runs, e.g. "linux/arm64": usually the
	// target platform, but a stage's FROM --platform can name another.
	Platform string
}

// Options describe a build. Platforms are ocispec platforms, as BuildKit's
// frontend takes them (containerd/platforms parses and normalises them).
type Options struct {
	Dockerfile []byte
	BuildArgs  map[string]string
	Target     string // the stage to build; empty: the last
	// BuildPlatform is the worker's platform (BUILDPLATFORM), e.g.
	// platforms.DefaultSpec().
	BuildPlatform ocispecs.Platform
}

// NeedsEmulation returns the RUN steps of the stages a build for target
// needs that execute on a platform BuildPlatform cannot run natively (see
// Native), in Dockerfile order; nil when there are none, which is always
// the case for the build platform's own target unless a stage names another
// platform. The error is a Dockerfile BuildKit would refuse too (it does not
// parse, no stage, an unknown target, a blank FROM).
func NeedsEmulation(o Options, target ocispecs.Platform) ([]Step, error) {
	res, err := parser.Parse(bytes.NewReader(o.Dockerfile))
	if err != nil {
		return nil, fmt.Errorf("parsing the Dockerfile: %w", err)
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil, fmt.Errorf("parsing the Dockerfile: %w", err)
	}
	if len(stages) == 0 {
		return nil, fmt.Errorf("the Dockerfile has no FROM: no stage to build")
	}
	build, target := platforms.Normalize(o.BuildPlatform), platforms.Normalize(target)
	lex := shell.NewLex(res.EscapeToken)
	g, err := newGraph(stages, lex, globalArgs(lex, metaArgs, o.BuildArgs, build, target))
	if err != nil {
		return nil, err
	}
	t := len(stages) - 1
	if o.Target != "" {
		var ok bool
		if t, ok = g.byName(o.Target); !ok {
			return nil, fmt.Errorf("params.target: the Dockerfile has no stage %q", o.Target)
		}
	}
	var steps []Step
	for _, i := range g.needed(t) {
		p := g.platform(i, target)
		if Native(build, p) {
			continue
		}
		for _, r := range g.runs(i) {
			r.Platform = platforms.Format(p)
			steps = append(steps, r)
		}
	}
	return steps, nil
}

// Native reports whether a worker of platform build runs code of platform p
// without an emulator: the same OS and architecture, and the same variant
// after normalising (linux/arm64 is linux/arm64/v8, linux/arm is
// linux/arm/v7). Every amd64 variant (v2 to v4) counts as native on amd64,
// as BuildKit runs them there; linux/386 on amd64 and linux/arm on arm64
// do not, since not every such CPU runs them (the check may ask for an
// emulator these builds turn out not to need).
func Native(build, p ocispecs.Platform) bool {
	build, p = platforms.Normalize(build), platforms.Normalize(p)
	if build.OS != p.OS || build.Architecture != p.Architecture {
		return false
	}
	return p.Architecture == "amd64" || build.Variant == p.Variant
}

func line(cmd interface{ Location() []parser.Range }) int {
	if l := cmd.Location(); len(l) > 0 {
		return l[0].Start.Line
	}
	return 0
}

func stageLine(st *instructions.Stage) int {
	if len(st.Location) > 0 {
		return st.Location[0].Start.Line
	}
	return 0
}
