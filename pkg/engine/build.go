package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/logging"
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
	log = logging.OrDiscard(log)
	bc, err := newBuildContext(o.ContextDir, o.Dockerfile)
	if err != nil {
		return BuildResult{}, fmt.Errorf("build: %w", err)
	}
	opts, err := imageBuildOptions(o, bc.dockerfile)
	if err != nil {
		return BuildResult{}, err
	}
	logBuild(log, o, opts)
	sr := newStreamReader(log)
	buildKitID := ""
	if o.BuildKit {
		stop, err := startBuildKit(ctx, cli, o, &opts, sr, &buildKitID, log)
		if err != nil {
			return BuildResult{}, fmt.Errorf("build: %w", err)
		}
		defer stop()
	}
	res, err := sendBuild(ctx, cli, bc, opts, sr)
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
	log.Infof("built image %s", logging.ShortID(id))
	return BuildResult{ID: id}, nil
}

// imageBuildOptions is the Engine API's form of o, for either builder;
// dockerfile is the Dockerfile's name inside the context tar.
func imageBuildOptions(o BuildOptions, dockerfile string) (build.ImageBuildOptions, error) {
	opts := build.ImageBuildOptions{
		Version:     build.BuilderV1,
		Dockerfile:  dockerfile,
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
	if o.BuildKit {
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
			return opts, errors.New("build: secrets need BuildKit")
		}
	}
	if len(args) > 0 {
		opts.BuildArgs = make(map[string]*string, len(args))
		for k, v := range args {
			opts.BuildArgs[k] = &v
		}
	}
	return opts, nil
}

// logBuild says what is built with which builder, and the names of the
// build args and secrets: never their values, which may be credentials.
func logBuild(log *logrus.Entry, o BuildOptions, opts build.ImageBuildOptions) {
	builder := "the classic builder"
	if o.BuildKit {
		builder = "BuildKit"
	}
	df := o.Dockerfile
	if df == "" {
		df = "Dockerfile"
	}
	log.Infof("building %s with %s, using %s", o.ContextDir, df, builder)
	if len(opts.BuildArgs) > 0 {
		names := slices.Sorted(maps.Keys(opts.BuildArgs))
		log.Infof("build args: %s", strings.Join(names, ", "))
	}
	if len(o.Secrets) > 0 {
		ids := make([]string, len(o.Secrets))
		for i, s := range o.Secrets {
			ids[i] = s.ID
		}
		log.Infof("build secrets: %s", strings.Join(ids, ", "))
	}
}

// startBuildKit opens the BuildKit session for the build, arranges for an
// abort to cancel the build in dockerd, and reads BuildKit's progress and
// image ID (into *id) from the stream. stop waits for that cancel, then
// ends the session: the build ends first.
func startBuildKit(ctx context.Context, cli Client, o BuildOptions, opts *build.ImageBuildOptions, sr *streamReader, id *string, log *logrus.Entry) (stop func(), err error) {
	sessionID, stopSession, err := buildKitSession(ctx, cli, o, log)
	if err != nil {
		return nil, err
	}
	opts.SessionID = sessionID
	waitCancel := cancelOnAbort(ctx, cli, opts, log)
	progress := newBKProgress(log)
	sr.outputFn = progress.output
	sr.onAux = func(auxID string, aux json.RawMessage) bool {
		switch auxID {
		case auxBuildKitTrace:
			progress.trace(aux)
			return true
		case auxImageID:
			*id = buildKitImageID(aux)
			return true
		}
		return false
	}
	return func() {
		waitCancel()
		stopSession()
	}, nil
}

// sendBuild streams the context to ImageBuild as it is written and reads
// the answer to the end. Closing the reader unblocks the writer if the
// daemon stopped reading; a failure to write the context comes first.
func sendBuild(ctx context.Context, cli Client, bc *buildContext, opts build.ImageBuildOptions, sr *streamReader) (StreamResult, error) {
	pr, pw := io.Pipe()
	written := make(chan error, 1)
	go func() {
		err := bc.write(ctx, pw)
		pw.CloseWithError(err)
		written <- err
	}()
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
			return StreamResult{}, werr
		}
		return StreamResult{}, err
	}
	res, err := readStream(ctx, resp.Body, sr)
	resp.Body.Close()
	if werr := finish(); werr != nil {
		return StreamResult{}, werr
	}
	return res, err
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
