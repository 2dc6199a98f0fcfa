// Command build-image builds the resource's image from the top-level
// Dockerfile through the Engine API (no docker CLI): `make image`.
//
// It uses the daemon DOCKER_HOST (or /var/run/docker.sock) names when one
// answers; otherwise, or with -private, it starts a private isolated dockerd
// (root needed), builds with host networking (the daemon has no bridge) and
// saves the image as a docker-load tarball, since the daemon goes away.
//
// With -local-bases the bases are made on this machine instead of pulled:
// a Debian trixie minbase from debootstrap and the machine's Go toolchain
// (see package test/image), for machines that cannot reach Docker Hub. They
// get the Dockerfile's default base names, so -local-bases always uses a
// private daemon (it never retags images in a daemon of yours).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/test/image"
	"github.com/docker/docker/client"
	"github.com/sirupsen/logrus"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "build-image: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		tag        = flag.String("tag", "docker-image-resource:dev", "name of the built image")
		version    = flag.String("version", "dev", "version stamped into the binaries and labels")
		revision   = flag.String("revision", "", "source revision for the org.opencontainers.image.revision label")
		builder    = flag.String("builder-image", "", "BUILDER_IMAGE build arg (default: the Dockerfile's)")
		runtimeImg = flag.String("runtime-image", "", "RUNTIME_IMAGE build arg (default: the Dockerfile's)")
		localBases = flag.Bool("local-bases", false, "make the bases on this machine (debootstrap, local Go) instead of pulling them; implies -private")
		private    = flag.Bool("private", false, "build in a private dockerd even when a daemon answers")
		output     = flag.String("o", "", "also save the image to this docker-load tarball (default with a private daemon: bin/docker-image-resource.tar)")
		cacheDir   = flag.String("cache", image.DefaultCacheDir, "where -local-bases keeps the debootstrap tarball")
	)
	flag.Parse()
	if *localBases {
		*private = true
	}
	lg := logrus.New()
	lg.SetOutput(os.Stderr)
	lg.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "15:04:05"})
	log := logrus.NewEntry(lg)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	t0 := time.Now()
	repo, err := image.RepoRoot(".")
	if err != nil {
		return err
	}
	args := map[string]string{}
	if *revision != "" {
		args["REVISION"] = *revision
	}
	if *builder != "" {
		args["BUILDER_IMAGE"] = *builder
	}
	if *runtimeImg != "" {
		args["RUNTIME_IMAGE"] = *runtimeImg
	}

	var cli *client.Client
	network := ""
	if !*private {
		cli, err = client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err = cli.Ping(pctx)
		cancel()
		if err != nil {
			log.Infof("no daemon answers at %s (%v): starting a private one", cli.DaemonHost(), err)
			cli.Close()
			cli = nil
		}
	}
	if cli == nil {
		if os.Geteuid() != 0 {
			return errors.New("a private dockerd needs root (or set DOCKER_HOST to a daemon you can use)")
		}
		d, err := daemon.Start(ctx, daemon.Options{Isolated: true, Log: log})
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := d.Stop(sctx); err != nil {
				log.Warnf("stopping the private dockerd: %v", err)
			}
		}()
		cli = d.Client()
		// The isolated daemon has no bridge: RUN steps use the host's network.
		network = "host"
		if *output == "" {
			*output = filepath.Join(repo, "bin", "docker-image-resource.tar")
		}
	}

	if *localBases {
		names := image.BaseNames{Builder: args["BUILDER_IMAGE"], Runtime: args["RUNTIME_IMAGE"]}
		b, r, err := image.DockerfileBases(filepath.Join(repo, "Dockerfile"))
		if err != nil {
			return err
		}
		if names.Builder == "" {
			names.Builder = b
		}
		if names.Runtime == "" {
			names.Runtime = r
		}
		mb, err := image.Minbase(ctx, image.MinbaseOptions{CacheDir: *cacheDir, Log: log})
		if err != nil {
			return err
		}
		in, err := image.DefaultBuilderInputs(ctx)
		if err != nil {
			return err
		}
		if err := image.ImportBases(ctx, cli, mb, in, names, log); err != nil {
			return err
		}
	}

	id, err := image.Build(ctx, cli, image.BuildOptions{Repo: repo, Tag: *tag, Version: *version, BuildArgs: args, NetworkMode: network}, log)
	if err != nil {
		return err
	}
	ins, err := cli.ImageInspect(ctx, id)
	if err != nil {
		return err
	}
	if *output != "" {
		if err := image.Save(ctx, cli, *tag, *output); err != nil {
			return err
		}
		log.Infof("saved %s to %s (load it with the Engine API, e.g. docker load -i)", *tag, *output)
	}
	log.Infof("image %s %s, %.1f MB, in %s", *tag, id, float64(ins.Size)/1e6, time.Since(t0).Round(time.Second))
	return nil
}
