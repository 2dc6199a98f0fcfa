// Package usercheck finds, before a BuildKit build starts, a RUN step that
// BuildKit would fail because it cannot look up the step's user in a loaded
// base. BuildKit (dockerd 20.10's and 26.1's, v0.8 to v0.13) resolves a
// user not given as uid:gid from the base's /etc/passwd and /etc/group, and
// when one of them is missing it reads a file that is not there: "unable to
// find groups for spec app: invalid argument". The classic builder (runc)
// treats a missing file as empty and runs the step.
//
// The check predicts only what it can prove from the Dockerfile and the
// base's files: it follows the stages the build needs, from a FROM that
// names a loaded base, up to the first step that could change /etc (a RUN,
// or a COPY or ADD into / or /etc), and gives up on anything it cannot
// expand. Anything else is left to the build.
package usercheck

import (
	"bytes"
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// Base is a loaded base image as the check sees it.
type Base struct {
	// Ref is the name FROM uses; Param says which entry loaded it, for
	// messages (e.g. "params.load_base (base)").
	Ref, Param string
	// Config is the image config's user, environment, working directory
	// and whether it has ONBUILD triggers (they run at FROM).
	User, WorkingDir string
	Env              []string
	OnBuild          bool
	// Files reads /etc/passwd and /etc/group; called only when a RUN needs
	// them.
	Files func() (Files, error)
}

// Files are what BuildKit reads to look a user up.
type Files struct {
	// Passwd and Group: nil when the file does not exist. A file that
	// exists but cannot be read as a plain file (a symlink) is Unknown.
	Passwd, Group []byte
	Unknown       bool
}

// Options describe a build.
type Options struct {
	Dockerfile []byte
	BuildArgs  map[string]string
	Target     string // the stage to build; empty: the last
	// Base returns the loaded base a FROM reference names, or nil.
	Base func(ref string) *Base
}

// Error is a RUN step BuildKit would fail. Its message starts with "line
// N:", for the caller to put the Dockerfile's name before.
type Error struct {
	Line     int    // of the RUN in the Dockerfile
	User     string // the user spec the step runs as
	UserFrom string // "the base's config" or "USER on line N"
	Base     *Base
	// Missing is the file BuildKit needs: "/etc/group" or "/etc/passwd".
	Missing string
}

func (e *Error) Error() string {
	userPart, _, _ := strings.Cut(e.User, ":")
	what, says := "has /etc/passwd but no /etc/group", fmt.Sprintf("unable to find groups for spec %s: invalid argument", userPart)
	add := "Add an /etc/group to the base"
	if e.Missing == "/etc/passwd" {
		what, says = "has no /etc/passwd", fmt.Sprintf("unable to find user %s: invalid argument", userPart)
		add = "Add /etc/passwd and /etc/group to the base"
	}
	return fmt.Sprintf("line %d: BuildKit cannot run this RUN step as user %q (set by %s): the base %s, from %s, %s, "+
		"and BuildKit, the default builder, fails every step whose user it has to look up there (%q). "+
		"%s, set the user by number before the step (USER uid:gid, e.g. USER 1000:1000), or build with the classic builder: docker_buildkit: 0",
		e.Line, e.User, e.UserFrom, e.Base.Ref, e.Base.Param, what, says, add)
}

// Check returns an *Error when a RUN the build needs would fail for its
// user, the error reading a base's files, or nil. A Dockerfile it cannot
// parse is left to the build.
func Check(o Options) error {
	res, err := parser.Parse(bytes.NewReader(o.Dockerfile))
	if err != nil {
		return nil
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil || len(stages) == 0 {
		return nil
	}
	lex := shell.NewLex(res.EscapeToken)
	meta := env{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			setArg(lex, meta, meta, kv, o.BuildArgs)
		}
	}
	c := &checker{o: o, lex: lex, meta: meta, stages: stages, done: map[int]*state{}}
	target := len(stages) - 1
	if o.Target != "" {
		if target = c.stageIndex(o.Target, len(stages)); target < 0 {
			return nil
		}
	}
	var firstErr error
	for _, i := range c.needed(target) {
		if _, err := c.run(i); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

type checker struct {
	o      Options
	lex    *shell.Lex
	meta   env
	stages []instructions.Stage
	done   map[int]*state
}

// state is a stage's image while the check can still tell what is in it.
type state struct {
	base     *Base
	user     string
	userFrom string
	workdir  string
	env      env
}

// stageIndex finds a stage by name or index among the first n.
func (c *checker) stageIndex(ref string, n int) int {
	for i := 0; i < n; i++ {
		if c.stages[i].Name != "" && strings.EqualFold(c.stages[i].Name, ref) {
			return i
		}
	}
	if i, err := strconv.Atoi(ref); err == nil && i >= 0 && i < n {
		return i
	}
	return -1
}

// needed lists the stages the target depends on (FROM, COPY --from, RUN
// --mount from=), in Dockerfile order: only those are built.
func (c *checker) needed(target int) []int {
	seen := map[int]bool{}
	var visit func(i int)
	visit = func(i int) {
		if seen[i] {
			return
		}
		seen[i] = true
		st := c.stages[i]
		deps := []string{c.expandMeta(st.BaseName)}
		for _, cmd := range st.Commands {
			switch x := cmd.(type) {
			case *instructions.CopyCommand:
				if x.From != "" {
					deps = append(deps, c.expandMeta(x.From))
				}
			case *instructions.RunCommand:
				if x.Expand(func(w string) (string, error) { return w, nil }) == nil {
					for _, m := range instructions.GetMounts(x) {
						if m.From != "" {
							deps = append(deps, m.From)
						}
					}
				}
			}
		}
		for _, d := range deps {
			if j := c.stageIndex(d, i); j >= 0 {
				visit(j)
			}
		}
	}
	visit(target)
	var out []int
	for i := range c.stages {
		if seen[i] {
			out = append(out, i)
		}
	}
	return out
}

func (c *checker) expandMeta(w string) string {
	s, unmatched, err := c.lex.ProcessWord(w, c.meta)
	if err != nil || len(unmatched) > 0 {
		return ""
	}
	return s
}

// start is the state a stage begins in: a loaded base's, or the end state
// of the stage it is built FROM; nil when unknown.
func (c *checker) start(i int) *state {
	st := c.stages[i]
	if st.Platform != "" {
		return nil
	}
	ref := c.expandMeta(st.BaseName)
	if ref == "" {
		return nil
	}
	if j := c.stageIndex(ref, i); j >= 0 {
		s, _ := c.run(j)
		if s == nil {
			return nil
		}
		cp := *s
		cp.env = s.env.clone()
		return &cp
	}
	if c.o.Base == nil {
		return nil
	}
	b := c.o.Base(ref)
	if b == nil || b.OnBuild {
		return nil
	}
	s := &state{base: b, user: b.User, userFrom: "the base's config", workdir: b.WorkingDir, env: env{}}
	if s.workdir == "" {
		s.workdir = "/"
	}
	for _, kv := range b.Env {
		k, v, _ := strings.Cut(kv, "=")
		s.env[k] = v
	}
	return s
}

// run follows stage i and returns its end state while /etc is still the
// base's (nil otherwise), or the *Error of a RUN that would fail.
func (c *checker) run(i int) (*state, error) {
	if s, ok := c.done[i]; ok {
		return s, nil
	}
	c.done[i] = nil // a cycle, or a failure below, gives up on it
	s := c.start(i)
	if s == nil {
		return nil, nil
	}
	st := &stageRun{c: c, s: s, args: env{}}
	for _, cmd := range c.stages[i].Commands {
		more, err := st.follow(cmd)
		if !more {
			return nil, err
		}
	}
	c.done[i] = s
	return s, nil
}

// stageRun is a stage being followed: its state and the ARGs seen so far.
type stageRun struct {
	c    *checker
	s    *state
	args env
}

func (r *stageRun) lookup() env { return r.args.merge(r.s.env) }

// expand expands w with the stage's variables; false when it cannot be
// told (an unknown variable, a bad word).
func (r *stageRun) expand(w string) (string, bool) {
	res, unmatched, err := r.c.lex.ProcessWord(w, r.lookup())
	return res, err == nil && len(unmatched) == 0
}

// follow applies one instruction to the state; more is false once nothing
// more can be told about the stage (err: a RUN whose user lookup fails).
func (r *stageRun) follow(cmd instructions.Command) (more bool, err error) {
	c, s := r.c, r.s
	switch x := cmd.(type) {
	case *instructions.ArgCommand:
		for _, kv := range x.Args {
			setArg(c.lex, r.args, r.lookup(), kv, c.o.BuildArgs, c.meta)
		}
	case *instructions.EnvCommand:
		for _, kv := range x.Env {
			v, ok := r.expand(kv.Value)
			if !ok {
				return false, nil
			}
			s.env[kv.Key] = v
		}
	case *instructions.UserCommand:
		u, ok := r.expand(x.User)
		if !ok {
			return false, nil
		}
		s.user, s.userFrom = u, fmt.Sprintf("USER on line %d", line(x))
	case *instructions.WorkdirCommand:
		w, ok := r.expand(x.Path)
		if !ok {
			return false, nil
		}
		s.workdir = joinPath(s.workdir, w)
	case *instructions.CopyCommand:
		return c.outsideEtc(s, x.DestPath, r.expand), nil
	case *instructions.AddCommand:
		return c.outsideEtc(s, x.DestPath, r.expand), nil
	case *instructions.RunCommand:
		// The step may have changed /etc: nothing more can be told.
		return false, c.lookupFails(s, line(x))
	}
	return true, nil
}

// outsideEtc reports whether a COPY or ADD destination leaves /etc alone.
func (c *checker) outsideEtc(s *state, dest string, expand func(string) (string, bool)) bool {
	d, ok := expand(dest)
	if !ok {
		return false
	}
	p := joinPath(s.workdir, d)
	return p != "/" && p != "/etc" && !strings.HasPrefix(p, "/etc/")
}

// lookupFails predicts BuildKit's user lookup for a RUN (its executor's
// oci.GetUser and moby/sys/user.GetExecUser).
func (c *checker) lookupFails(s *state, at int) error {
	u := s.user
	if u == "" {
		return nil // the default user: a failed lookup falls back to 0:0
	}
	userArg, groupArg, hasGroup := strings.Cut(u, ":")
	if hasGroup && isID(userArg) && isID(groupArg) {
		return nil // uid:gid needs no files
	}
	f, err := s.base.Files()
	if err != nil {
		return fmt.Errorf("reading /etc/passwd and /etc/group of %s: %w", s.base.Ref, err)
	}
	if f.Unknown {
		return nil
	}
	e := &Error{Line: at, User: u, UserFrom: s.userFrom, Base: s.base}
	if f.Passwd == nil {
		e.Missing = "/etc/passwd"
		return e
	}
	if f.Group != nil {
		return nil
	}
	_, numeric := parseID(userArg)
	matched := passwdHas(f.Passwd, userArg)
	if !matched && !numeric {
		return nil // "unable to find user": the classic builder fails too
	}
	if matched || groupArg != "" {
		e.Missing = "/etc/group"
		return e
	}
	return nil
}

// passwdHas reports whether an /etc/passwd entry has the user's name, or
// its uid when the user is a number.
func passwdHas(passwd []byte, user string) bool {
	uid, numeric := parseID(user)
	for _, l := range strings.Split(string(passwd), "\n") {
		f := strings.Split(strings.TrimSpace(l), ":")
		if len(f) < 3 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if f[0] == user {
			return true
		}
		if id, err := strconv.ParseUint(f[2], 10, 32); numeric && err == nil && uint32(id) == uid {
			return true
		}
	}
	return false
}

// isID is BuildKit's test for the uid:gid fast path: a number, or root.
func isID(s string) bool {
	if s == "root" {
		return true
	}
	_, ok := parseID(s)
	return ok
}

func parseID(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

func joinPath(dir, p string) string {
	if !path.IsAbs(p) {
		p = path.Join("/", dir, p)
	}
	return path.Clean(p)
}

func line(cmd interface{ Location() []parser.Range }) int {
	if l := cmd.Location(); len(l) > 0 {
		return l[0].Start.Line
	}
	return 0
}

// setArg gives an ARG its value: the build arg, else the default, else
// (inside a stage) the global ARG of that name.
func setArg(lex *shell.Lex, into, scope env, kv instructions.KeyValuePairOptional, buildArgs map[string]string, global ...env) {
	if v, ok := buildArgs[kv.Key]; ok {
		into[kv.Key] = v
		return
	}
	if kv.Value != nil {
		if v, unmatched, err := lex.ProcessWord(*kv.Value, scope); err == nil && len(unmatched) == 0 {
			into[kv.Key] = v
		}
		return
	}
	for _, g := range global {
		if v, ok := g[kv.Key]; ok {
			into[kv.Key] = v
		}
	}
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

func (e env) clone() env {
	out := make(env, len(e))
	for k, v := range e {
		out[k] = v
	}
	return out
}

// merge is e with over's variables on top (ENV wins over an ARG of the
// same name, as Docker documents).
func (e env) merge(over env) env {
	out := e.clone()
	for k, v := range over {
		out[k] = v
	}
	return out
}

// RefKey is the name a reference has in the daemon (busybox and
// docker.io/library/busybox:latest are one), for matching FROM to bases;
// "" for digests and what does not parse.
func RefKey(ref string) string {
	t, err := name.NewTag(ref, name.WeakValidation)
	if err != nil {
		return ""
	}
	return t.Name()
}
