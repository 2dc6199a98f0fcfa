package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/docker/docker/api/types/build"
	"github.com/sirupsen/logrus"
)

// BuildOptions describe a build with the classic builder.
type BuildOptions struct {
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
	// Auth has the credentials for pulling FROM images.
	Auth RegistryAuth
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

// Build builds an image with the classic builder. The context is sent as a
// tar with .dockerignore applied; intermediate containers are always removed,
// also after a failed step. A failing step's error carries its output tail.
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
		AuthConfigs: o.Auth.BuildConfigs(),
		NetworkMode: o.NetworkMode,
		PullParent:  o.PullParent,
		NoCache:     o.NoCache,
		Remove:      true,
		ForceRemove: true,
	}
	names := make([]string, 0, len(o.BuildArgs))
	if len(o.BuildArgs) > 0 {
		opts.BuildArgs = make(map[string]*string, len(o.BuildArgs))
		for k, v := range o.BuildArgs {
			opts.BuildArgs[k] = &v
			names = append(names, k)
		}
	}
	sort.Strings(names)
	df := o.Dockerfile
	if df == "" {
		df = "Dockerfile"
	}
	log.Infof("building %s with %s", o.ContextDir, df)
	if len(names) > 0 {
		// Names only: values may be credentials.
		log.Infof("build args: %s", strings.Join(names, ", "))
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
	res, err := readBody(ctx, resp.Body, log)
	if werr := finish(); werr != nil {
		return BuildResult{}, fmt.Errorf("build: %w", werr)
	}
	if err != nil {
		return BuildResult{}, fmt.Errorf("build: %w", err)
	}
	id := ""
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
