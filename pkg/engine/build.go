package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"sort"
	"strings"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/sirupsen/logrus"
)

// BuildOptions describe a build.
type BuildOptions struct {
	// BuildKit builds with BuildKit through a session; false uses the
	// classic builder.
	BuildKit bool
	// Secrets are BuildKit build secrets.
	Secrets []Secret
	// InlineCache embeds BuildKit cache metadata in the image config so the
	// pushed image can serve as cache_from later (BuildKit only).
	InlineCache bool
	// ContextDir is the build context folder.
	ContextDir string
	// Dockerfile is the Dockerfile's path (absolute or relative to the working
	// directory), possibly outside ContextDir. Empty: ContextDir/Dockerfile.
	Dockerfile string
	// Target is the stage to build; empty builds the last one.
	Target    string
	BuildArgs map[string]string
	Labels    map[string]string
	// CacheFrom are names of images in the daemon to use as build cache.
	CacheFrom []string
	// Tags name the built image (optional: Push tags it anyway).
	Tags []string
	// Auth has the credentials for pulling FROM images (the build's
	// AuthConfigs for the classic builder, the session for BuildKit).
	Auth RegistryAuth
	// CertsDir is a certs.d folder (<domain>/ca.crt, *.cert + *.key): the
	// TLS settings BuildKit's session uses when it fetches registry tokens
	// for the daemon.
	CertsDir string
	// NetworkMode of RUN steps: "" for the daemon's default, "host", "none".
	NetworkMode string
	// PullParent pulls FROM images even when the daemon has them.
	PullParent bool
	NoCache    bool
}

// BuildResult is what a build made.
type BuildResult struct {
	// ID is the built image's ID ("sha256:...").
	ID string
}

// Build builds an image with the classic builder or BuildKit. The context is
// sent as a tar with .dockerignore applied; the classic builder's
// intermediate containers are always removed, also after a failed step. A
// failing step's error carries its output tail.
func Build(ctx context.Context, cli Client, o BuildOptions, log *logrus.Entry) (BuildResult, error) {
	log = orDiscard(log)
	bc, err := newBuildContext(o.ContextDir, o.Dockerfile)
	if err != nil {
		return BuildResult{}, fmt.Errorf("build: %w", err)
	}
	opts := build.ImageBuildOptions{
		Version:     build.BuilderV1,
		Dockerfile:  bc.dockerfile,
		Target:      o.Target,
		Tags:        o.Tags,
		Labels:      o.Labels,
		CacheFrom:   o.CacheFrom,
		NetworkMode: o.NetworkMode,
		PullParent:  o.PullParent,
		NoCache:     o.NoCache,
		Remove:      true,
		ForceRemove: true,
	}
	args := o.BuildArgs
	builder := "the classic builder"
	if o.BuildKit {
		builder = "BuildKit"
		opts.Version = build.BuilderBuildKit
		if o.InlineCache {
			args = maps.Clone(args)
			if args == nil {
				args = map[string]string{}
			}
			args[InlineCacheArg] = "1"
		}
	} else {
		opts.AuthConfigs = o.Auth.BuildConfigs()
		if len(o.Secrets) > 0 {
			return BuildResult{}, errors.New("build: secrets need BuildKit")
		}
	}
	names := make([]string, 0, len(args))
	if len(args) > 0 {
		opts.BuildArgs = make(map[string]*string, len(args))
		for k, v := range args {
			opts.BuildArgs[k] = &v
			names = append(names, k)
		}
	}
	sort.Strings(names)
	df := o.Dockerfile
	if df == "" {
		df = "Dockerfile"
	}
	log.Infof("building %s with %s, using %s", o.ContextDir, df, builder)
	if len(names) > 0 {
		// Names only: values may be credentials.
		log.Infof("build args: %s", strings.Join(names, ", "))
	}
	if len(o.Secrets) > 0 {
		ids := make([]string, len(o.Secrets))
		for i, s := range o.Secrets {
			ids[i] = s.ID
		}
		log.Infof("build secrets: %s", strings.Join(ids, ", "))
	}
	sr := newStreamReader(log)
	var progress *bkProgress
	buildKitID := ""
	if o.BuildKit {
		id, stop, err := buildKitSession(ctx, cli, o, log)
		if err != nil {
			return BuildResult{}, fmt.Errorf("build: %w", err)
		}
		defer stop()
		opts.SessionID = id
		// Runs before the session's stop: the build ends first.
		defer cancelOnAbort(ctx, cli, &opts, log)()
		progress = newBKProgress(log)
		sr.outputFn = progress.output
		sr.onAux = func(id string, aux json.RawMessage) bool {
			switch id {
			case auxBuildKitTrace:
				progress.trace(aux)
				return true
			case auxImageID:
				buildKitID = buildKitImageID(aux)
				return true
			}
			return false
		}
	}

	pr, pw := io.Pipe()
	written := make(chan error, 1)
	go func() {
		err := bc.write(ctx, pw)
		pw.CloseWithError(err)
		written <- err
	}()
	// Closing the reader unblocks the writer if the daemon stopped reading.
	finish := func() error {
		pr.Close()
		if err := <-written; err != nil && !errors.Is(err, io.ErrClosedPipe) {
			return err
		}
		return nil
	}

	resp, err := cli.ImageBuild(ctx, pr, opts)
	if err != nil {
		if werr := finish(); werr != nil {
			return BuildResult{}, fmt.Errorf("build: %w", werr)
		}
		return BuildResult{}, fmt.Errorf("build: %w", err)
	}
	res, err := readStream(ctx, resp.Body, sr)
	resp.Body.Close()
	if werr := finish(); werr != nil {
		return BuildResult{}, fmt.Errorf("build: %w", werr)
	}
	if err != nil {
		return BuildResult{}, fmt.Errorf("build: %w", err)
	}
	id := buildKitID
	for _, raw := range res.Aux {
		var r build.Result
		if json.Unmarshal(raw, &r) == nil && r.ID != "" {
			id = r.ID
		}
	}
	if !strings.HasPrefix(id, "sha256:") {
		return BuildResult{}, fmt.Errorf("build: finished without reporting an image ID (got %q)", id)
	}
	log.Infof("built image %s", ShortID(id))
	return BuildResult{ID: id}, nil
}

// buildCancelTimeout bounds the /build/cancel request of an aborted build.
const buildCancelTimeout = 2 * time.Second

// cancelOnAbort gives a BuildKit build an ID and, when ctx is cancelled,
// cancels it in dockerd as well, as the docker CLI does: closing the
// request ends the build only once dockerd notices the closed connection,
// and a build dockerd still runs keeps its request open, which dockerd 24+
// then waits for when it is stopped. The returned func waits for that
// cancel request to finish.
func cancelOnAbort(ctx context.Context, cli Client, opts *build.ImageBuildOptions, log *logrus.Entry) (wait func()) {
	opts.BuildID = "docker-image-resource-" + randomHex()
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(done)
		t := time.Now()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), buildCancelTimeout)
		defer cancel()
		if err := cli.BuildCancel(cctx, opts.BuildID); err != nil {
			log.Debugf("cancelling the build in dockerd: %v", err)
			return
		}
		log.Debugf("build cancelled in dockerd in %s", time.Since(t).Round(time.Millisecond))
	})
	return func() {
		if !stop() {
			<-done
		}
	}
}
