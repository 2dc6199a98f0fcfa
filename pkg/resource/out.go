package resource

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/google/go-containerregistry/pkg/name"
)

// Out builds or loads an image from SRC, pushes it under every requested
// tag, and reports the pushed digest.
func Out(ctx context.Context, env Env) error {
	if len(env.Args) < 2 || env.Args[1] == "" {
		return errors.New("usage: out SRC — the source folder argument is missing")
	}
	p, err := protocol.ParseOut(env.Stdin)
	if err != nil {
		return err
	}
	req := p.Request
	s := newSession(env, &req.Source, p.Warnings)
	resp, err := put(ctx, env, s, env.Args[1], &req)
	if err != nil {
		return s.fail(err)
	}
	return writeJSON(env.Stdout, resp)
}

// phases records how long each part of a put took, for the log's closing
// summary and the response metadata.
type phases struct {
	start time.Time
	names []string
	took  map[string]time.Duration
}

func newPhases() *phases { return &phases{start: time.Now(), took: map[string]time.Duration{}} }

func (p *phases) since(name string, t time.Time) {
	if _, ok := p.took[name]; !ok {
		p.names = append(p.names, name)
	}
	p.took[name] += time.Since(t)
}

func put(ctx context.Context, env Env, s *session, srcDir string, req *protocol.OutRequest) (*protocol.Response, error) {
	plan, err := planPut(ctx, env, s, srcDir, req)
	if err != nil {
		return nil, err
	}
	timing := newPhases()

	t := time.Now()
	seed := planSeed(env, s, plan)
	if seed != nil {
		// The bases are written while dockerd starts.
		enterPhase(ctx, "daemon start and load")
	} else {
		enterPhase(ctx, "daemon start")
	}
	d, err := startDaemon(ctx, env, s, plan.src, daemonSeed(seed), plan.solves())
	// Writing the bases into the data root makes them available: "load".
	timing.since("daemon start", t.Add(seedTook(d)))
	if err != nil {
		return nil, err
	}
	defer func() {
		// A fresh context: the daemon must stop also when ctx was cancelled
		// by SIGTERM.
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := d.Stop(stopCtx); err != nil {
			s.log.Warn(err) // Stop's error says "stopping dockerd: ..." itself
		}
	}()
	cli := d.Client()
	if plan.solves() {
		if err := needContainerdStore(d); err != nil {
			return nil, err
		}
	}

	t = time.Now().Add(-seedTook(d))
	enterPhase(ctx, "load")
	bases, cacheFrom, err := loadBases(ctx, s, cli, srcDir, plan, seededBy(seed, d))
	if err != nil {
		return nil, err
	}
	if len(plan.baseFolders)+len(plan.cacheFolders) > 0 {
		timing.since("load", t)
	}

	t = time.Now()
	enterPhase(ctx, string(plan.source))
	if err := checkBaseUsers(ctx, cli, srcDir, plan, bases); err != nil {
		return nil, err
	}
	made, err := produce(ctx, env, s, cli, plan, cacheFrom, d.CertsDir())
	timing.since(string(plan.source), t)
	if err != nil {
		return nil, err
	}
	if made.layout != "" {
		defer os.RemoveAll(made.layout)
	}
	imageID := made.id

	t = time.Now()
	enterPhase(ctx, "push")
	src := plan.src // pushImage takes a pointer: to a copy, the plan stays as planned
	digest, pushMeta, err := pushImage(ctx, env, s, &src, d, plan, made)
	timing.since("push", t)
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", plan.repository, err)
	}
	warnCacheExport(s, plan, made)
	s.log.Infof("pushed %s:%s as %s", plan.repository, strings.Join(plan.tags, ", :"), digest)
	meta := protocol.Metadata("image", logging.ShortID(imageID), "tags", strings.Join(plan.tags, " "))
	return &protocol.Response{Version: plan.responseVersion(digest), Metadata: timing.report(s, append(meta, pushMeta...))}, nil
}

// report logs the closing summary and returns meta with a field for each
// phase's time and the total.
func (p *phases) report(s *session, meta []protocol.MetadataField) []protocol.MetadataField {
	var summary []string
	for _, n := range p.names {
		d := p.took[n].Round(10 * time.Millisecond)
		summary = append(summary, fmt.Sprintf("%s %s", n, d))
		meta = append(meta, protocol.MetadataField{Name: "time " + n, Value: d.String()})
	}
	total := time.Since(p.start).Round(10 * time.Millisecond)
	meta = append(meta, protocol.MetadataField{Name: "time total", Value: total.String()})
	s.log.Infof("done: %s; total %s", strings.Join(summary, ", "), total)
	return meta
}

// produce makes the image to push from the chosen source and returns its
// ID. certsDir is the daemon's certs.d, for BuildKit's registry access.
func produce(ctx context.Context, env Env, s *session, cli engine.Client, plan *putPlan, cacheFrom []string, certsDir string) (product, error) {
	if plan.solves() {
		return solveBuild(ctx, env, s, cli, plan, certsDir)
	}
	id, err := produceInDaemon(ctx, env, s, cli, plan, cacheFrom, certsDir)
	return product{id: id}, err
}

// produceInDaemon makes the image in the daemon and returns its ID.
func produceInDaemon(ctx context.Context, env Env, s *session, cli engine.Client, plan *putPlan, cacheFrom []string, certsDir string) (string, error) {
	switch plan.source {
	case sourceLoad:
		b, err := engine.LoadFolder(ctx, cli, plan.loadFolder, engine.LoadOptions{}, s.log)
		if err != nil {
			return "", fmt.Errorf("load %s: %w", plan.given, err)
		}
		return b.ID, nil
	case sourceBuild:
		return build(ctx, env, s, cli, plan, cacheFrom, certsDir)
	case sourceLoadFile:
		if _, err := engine.Load(ctx, cli, plan.path, s.log); err != nil {
			return "", fmt.Errorf("load_file %s: %w", plan.given, err)
		}
		ins, err := cli.ImageInspect(ctx, plan.ref)
		if err != nil {
			return "", fmt.Errorf("load_file %s holds no image %s (check load_repository and load_tag): %w", plan.given, plan.ref, err)
		}
		return ins.ID, nil
	case sourceImport:
		return engine.Import(ctx, cli, plan.path, plan.repository, plan.tags[0], s.log)
	case sourcePull:
		id, err := engine.Pull(ctx, cli, plan.ref, plan.auth, s.log)
		if err != nil {
			return "", fmt.Errorf("pull_repository %s: %w", plan.ref, err)
		}
		return id, nil
	}
	return "", fmt.Errorf("unknown image source %q", plan.source)
}

// build builds the image, with the `cache: true` image as cache when it
// can be had.
func build(ctx context.Context, env Env, s *session, cli engine.Client, plan *putPlan, cacheFrom []string, certsDir string) (string, error) {
	if plan.buildkit {
		warnNoInlineCache(s, plan.cacheFolders)
	}
	cacheFrom = append(cacheFrom, cacheImage(ctx, env, s, cli, plan)...)
	o := buildOptions(env, plan, cacheFrom)
	o.CertsDir = certsDir
	res, err := engine.Build(ctx, cli, o, s.log)
	if err != nil {
		return "", err
	}
	return res.ID, nil
}

// cacheImage is the `cache: true` image, <repository>:<cache_tag>, when it
// can be had: BuildKit reads its inline cache from the registry, the
// classic builder needs it pulled. None when cache is off or it is missing.
func cacheImage(ctx context.Context, env Env, s *session, cli engine.Client, plan *putPlan) []string {
	if !plan.cache {
		return nil
	}
	cacheRef := plan.repository + ":" + plan.cacheTag
	var err error
	if plan.buildkit {
		err = remoteCache(ctx, env, s, plan.src, plan.cacheTag)
	} else {
		_, err = engine.Pull(ctx, cli, cacheRef, plan.auth, s.log)
	}
	if err != nil {
		// The old resource's promise: a cache miss never fails a build.
		s.log.Warnf("cache: could not pull %s, building without it: %v", cacheRef, err)
		return nil
	}
	return []string{cacheRef}
}

// buildOptions are the plan's build options, for /build and the control
// API alike.
func buildOptions(env Env, plan *putPlan, cacheFrom []string) engine.BuildOptions {
	return engine.BuildOptions{
		ContextDir: plan.path, Dockerfile: plan.dockerfile, Target: plan.target,
		BuildArgs: plan.buildArgs, Labels: plan.labels, CacheFrom: cacheFrom, Auth: plan.auth,
		NetworkMode: env.Hooks.BuildNetwork,
		// Inline cache always: it costs a few config bytes and lets any
		// later build use this image as cache_from.
		BuildKit: plan.buildkit, Secrets: plan.secrets, InlineCache: plan.buildkit,
	}
}

// warnUnnamed says when a loaded base has no name: a FROM cannot use it
// unless the entry's object form names it.
func warnUnnamed(s *session, param, dir string, f *baseimage.Folder, b engine.Base) {
	if b.Repository != "" {
		return
	}
	use := ""
	if param == "cache_from" {
		use = " It is used as build cache by its ID."
	}
	s.log.Warnf("params.%s %s (%s) is loaded as image %s without a name: nothing in the folder says which name a Dockerfile's FROM uses, "+
		"so FROM cannot refer to it by name (it would be pulled). Name it with the object form {path: %s, repository: ..., tag: ...}.%s",
		param, dir, f.Origin, logging.ShortID(b.ID), dir, use)
}

func startDaemon(ctx context.Context, env Env, s *session, src protocol.Source, seed *daemon.Seed, containerdStore bool) (*daemon.Daemon, error) {
	o := daemon.Options{
		Seed:                   seed,
		ContainerdStore:        containerdStore,
		Debug:                  bool(src.Debug),
		StartupTimeout:         time.Duration(src.StartupTimeoutSecs()) * time.Second,
		MaxConcurrentDownloads: src.Downloads(),
		MaxConcurrentUploads:   src.Uploads(),
		InsecureRegistries:     src.InsecureRegistries,
		RegistryMirror:         src.RegistryMirror,
		Log:                    s.log,
		Getenv:                 env.Getenv,
		CACerts:                src.CACerts,
		ClientCerts:            src.ClientCerts,
	}
	env.Hooks.daemon(&o)
	return daemon.Start(ctx, o)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func rel(base, path string) string {
	if r, err := filepath.Rel(base, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}

// repoHost is the registry host of a repository, as credentials are keyed.
func repoHost(repo string) string {
	r, err := name.NewRepository(repo)
	if err != nil {
		return ""
	}
	return r.RegistryStr()
}
