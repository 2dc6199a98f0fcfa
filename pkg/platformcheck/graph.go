package platformcheck

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/platforms"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// graph is the Dockerfile's stages and how they depend on each other, as
// BuildKit v0.13's dispatch states link them.
type graph struct {
	stages []instructions.Stage
	lex    *shell.Lex
	global env
	// base[i] is the stage stage i is built FROM, or -1 (an image).
	base []int
	// names maps a stage name to the last stage of that name, for COPY
	// --from, RUN --mount=from= and the target (BuildKit looks these up
	// once every stage is known, ignoring case).
	names     map[string]int
	platforms map[int]ocispecs.Platform
}

func newGraph(stages []instructions.Stage, lex *shell.Lex, global env) (*graph, error) {
	g := &graph{stages: stages, lex: lex, global: global, base: make([]int, len(stages)), names: map[string]int{}, platforms: map[int]ocispecs.Platform{}}
	for i := range stages {
		st := &stages[i]
		r, err := lex.ProcessWordWithMatches(st.BaseName, global)
		if err != nil {
			return nil, fmt.Errorf("line %d: expanding FROM %s: %w", stageLine(st), st.BaseName, err)
		}
		if r.Result == "" {
			return nil, fmt.Errorf("line %d: FROM %s expands to nothing: set the build arg or give the ARG a default", stageLine(st), st.BaseName)
		}
		st.BaseName = r.Result
		// FROM matches, as written after expansion, a stage defined
		// before it (stage names are lower case): names holds only
		// those so far.
		g.base[i] = -1
		if j, ok := g.names[st.BaseName]; ok {
			g.base[i] = j
		}
		if st.Name != "" {
			g.names[strings.ToLower(st.Name)] = i
		}
	}
	return g, nil
}

func (g *graph) byName(name string) (int, bool) {
	i, ok := g.names[strings.ToLower(name)]
	return i, ok
}

// stageLabel names a stage for messages.
func (g *graph) stageLabel(i int) string {
	if n := g.stages[i].Name; n != "" {
		return n
	}
	return fmt.Sprintf("stage %d", i)
}

// deps are the stages stage i needs besides its base. BuildKit does not
// expand --from (v0.13 takes it as written; later versions refuse a
// variable), so neither does this.
func (g *graph) deps(i int) []int {
	var out []int
	for _, cmd := range g.stages[i].Commands {
		switch x := cmd.(type) {
		case *instructions.CopyCommand:
			if x.From == "" {
				continue
			}
			if n, err := strconv.Atoi(x.From); err == nil {
				if n >= 0 && n < len(g.stages) {
					out = append(out, n)
				}
			} else if j, ok := g.byName(x.From); ok {
				out = append(out, j)
			}
		case *instructions.RunCommand:
			// Mounts are parsed with the instruction; from= names a
			// stage only (an index is an image name here).
			for _, m := range instructions.GetMounts(x) {
				if j, ok := g.byName(m.From); ok && m.From != "" {
					out = append(out, j)
				}
			}
		}
	}
	return out
}

// needed lists the stages the build of stage t dispatches, in Dockerfile
// order. A cycle, which BuildKit refuses, is followed once.
func (g *graph) needed(t int) []int {
	seen := make([]bool, len(g.stages))
	var visit func(i int)
	visit = func(i int) {
		if seen[i] {
			return
		}
		seen[i] = true
		if b := g.base[i]; b >= 0 {
			visit(b)
		}
		for _, d := range g.deps(i) {
			visit(d)
		}
	}
	visit(t)
	var out []int
	for i, s := range seen {
		if s {
			out = append(out, i)
		}
	}
	return out
}

// platform is where stage i's steps run.
func (g *graph) platform(i int, target ocispecs.Platform) ocispecs.Platform {
	if p, ok := g.platforms[i]; ok {
		return p
	}
	p := target
	st := g.stages[i]
	switch {
	case g.base[i] >= 0:
		// BuildKit replaces the stage's own --platform by its base's.
		p = g.platform(g.base[i], target)
	case st.BaseName == "scratch":
		// BuildKit v0.13 gives scratch the target platform even with a
		// --platform.
	case st.Platform != "":
		if q, ok := g.parsePlatform(st.Platform); ok {
			p = q
		}
	}
	g.platforms[i] = p
	return p
}

// parsePlatform expands and parses a FROM --platform; false when it
// cannot be told (BuildKit fails such a build).
func (g *graph) parsePlatform(v string) (ocispecs.Platform, bool) {
	r, err := g.lex.ProcessWordWithMatches(v, g.global)
	if err != nil || r.Result == "" {
		return ocispecs.Platform{}, false
	}
	p, err := platforms.Parse(r.Result)
	if err != nil {
		return ocispecs.Platform{}, false
	}
	return platforms.Normalize(p), true
}

// runs are the RUN steps stage i executes: its base stage's ONBUILD RUN
// triggers, then its own RUN instructions.
func (g *graph) runs(i int) []Step {
	var out []Step
	add := func(cmd interface {
		instructions.Command
		String() string
	}) {
		out = append(out, Step{Stage: g.stageLabel(i), Line: line(cmd), Original: strings.TrimSpace(cmd.String())})
	}
	if b := g.base[i]; b >= 0 {
		for _, cmd := range g.stages[b].Commands {
			if ob, ok := cmd.(*instructions.OnbuildCommand); ok && isRun(ob.Expression) {
				add(ob)
			}
		}
	}
	for _, cmd := range g.stages[i].Commands {
		if r, ok := cmd.(*instructions.RunCommand); ok {
			add(r)
		}
	}
	return out
}

// isRun reports whether an ONBUILD trigger is a RUN instruction.
func isRun(trigger string) bool {
	res, err := parser.Parse(strings.NewReader(trigger))
	if err != nil || len(res.AST.Children) != 1 {
		return false
	}
	cmd, err := instructions.ParseCommand(res.AST.Children[0])
	if err != nil {
		return false
	}
	_, ok := cmd.(*instructions.RunCommand)
	return ok
}
