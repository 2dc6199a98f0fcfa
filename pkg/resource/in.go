package resource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/download"
	"github.com/concourse-docker/docker-image-resource/pkg/imagefs"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"
)

// GetHeapLimit is the soft limit cmd/in gives the Go heap: the README
// promises the get stays under 64 MiB of memory. What the get holds is
// bounded whatever the image: a manifest and a config of up to 8 MiB each,
// and per layer entry nothing (pkg/imagefs spills what it keeps per entry
// to temporary files past a few MiB); the limit makes the garbage
// collector run before the garbage of parsing an 8 MiB manifest doubles
// the heap, which it would by default.
const GetHeapLimit = 32 << 20

// In fetches the image at version.digest into DEST straight from the
// registry: no daemon, every blob downloaded once.
func In(ctx context.Context, env Env) error {
	if len(env.Args) < 2 || env.Args[1] == "" {
		return errors.New("usage: in DEST — the destination folder argument is missing")
	}
	dest := env.Args[1]
	p, err := protocol.ParseIn(env.Stdin)
	if err != nil {
		return err
	}
	req := p.Request
	s := newSession(env, &req.Source, p.Warnings)
	resp, err := get(ctx, env, s, dest, &req)
	if err != nil {
		return s.fail(err)
	}
	return writeJSON(env.Stdout, resp)
}

func get(ctx context.Context, env Env, s *session, dest string, req *protocol.InRequest) (*protocol.Response, error) {
	src := &req.Source
	repo, tag := src.Repository, getTag(req)
	digest, err := v1.NewHash(req.Version.Digest)
	if err != nil {
		return nil, fmt.Errorf("version.digest: %w", err)
	}
	if err := protocol.ValidateTag("version.tag", tag); err != nil {
		return nil, err
	}
	if err := writableDir(dest); err != nil {
		return nil, err
	}
	resp := &protocol.Response{Version: protocol.Version{Tag: req.Version.Tag, Digest: digest.String()}}
	files := map[string]string{"repository": repo, "tag": tag, "digest": digest.String()}

	if !req.Params.SkipDownload {
		fetchImage := fetch
		if savesPlatforms(req) {
			fetchImage = fetchPlatforms // oci/ instead of image, no image-id
		}
		id, err := fetchImage(ctx, env, s, dest, req, digest)
		if err != nil {
			return nil, noSpace(dest, err)
		}
		if !savesPlatforms(req) {
			files["image-id"] = id
		}
		resp.Metadata = protocol.Metadata("repository", repo, "tag", tag, "image", logging.ShortID(id))
	} else {
		s.log.Infof("skip_download: writing only repository, tag and digest")
		resp.Metadata = protocol.Metadata("repository", repo, "tag", tag)
	}
	// The small files come last, so a get that failed half-way never looks
	// complete.
	for _, name := range []string{"image-id", "repository", "tag", "digest"} {
		if v, ok := files[name]; ok {
			if err := imagefs.WriteFileAtomic(filepath.Join(dest, name), []byte(v+"\n"), 0o644); err != nil {
				return nil, noSpace(dest, fmt.Errorf("write %s: %w", name, err))
			}
		}
	}
	return resp, nil
}

// getTag is the tag the get names the image by: the version's, with tag
// tracking (its check reports {"tag", "digest"}), else source.tag.
func getTag(req *protocol.InRequest) string {
	if req.Version.Tag != "" {
		return req.Version.Tag
	}
	return req.Source.TagOrDefault()
}

// fetch downloads the image and writes rootfs/, metadata.json,
// docker_inspect.json and, when asked, image and rootfs.tar. It returns the
// image ID.
func fetch(ctx context.Context, env Env, s *session, dest string, req *protocol.InRequest, digest v1.Hash) (string, error) {
	src, params := &req.Source, &req.Params
	ref := src.Repository + "@" + digest.String()
	reg, err := loginClient(ctx, env, s, src)
	if err != nil {
		return "", err
	}
	start := time.Now()
	remoteImg, id, err := resolveImage(ctx, s, reg, req, digest)
	if err != nil {
		return "", err
	}
	// Blobs land next to DEST's files (same filesystem, so the tarball copy is
	// cheap) and go away once everything is written.
	blobs := filepath.Join(dest, ".download")
	defer os.RemoveAll(blobs)
	local, stats, err := download.Image(ctx, remoteImg, download.Options{Dir: blobs, Concurrency: src.Downloads(), Log: s.log})
	if err != nil {
		return "", downloadError(reg, ref, err)
	}
	s.log.Debugf("download: %d layers, %d bytes in %s", stats.Layers, stats.Bytes, stats.Duration)

	repoTag := src.Repository + ":" + getTag(req)
	if err := writeRootfsAndImage(ctx, s, local, dest, repoTag, bool(params.Save)); err != nil {
		return "", err
	}
	if err := writeImageFiles(local, dest, repoTag, ref); err != nil {
		return "", err
	}
	if err := writeRootfsTar(ctx, s, local, dest, bool(params.Rootfs)); err != nil {
		return "", err
	}
	s.log.Infof("fetched %s in %s", ref, since(start))
	return id, nil
}

// resolveImage finds the image of the request's platform at digest and
// returns it with its ID.
func resolveImage(ctx context.Context, s *session, reg *registry.Client, req *protocol.InRequest, digest v1.Hash) (v1.Image, string, error) {
	src := &req.Source
	ref := src.Repository + "@" + digest.String()
	plat := src.Platform.Resolve()
	if req.Params.Platform != nil {
		plat = req.Params.Platform.Resolve()
	}
	enterPhase(ctx, "download")
	img, err := reg.Image(ctx, src.Repository, digest, v1.Platform{OS: plat.OS, Architecture: plat.Architecture, Variant: plat.Variant})
	if err != nil {
		return nil, "", registryError(reg, ref, err)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return nil, "", fmt.Errorf("fetch image %s: %w", ref, reg.Explain(err))
	}
	s.log.Infof("fetching %s (image %s)", ref, logging.ShortID(cfgName.String()))
	return img, cfgName.String(), nil
}

// downloadError says what stopped the download: the disk, the image's
// registryError says why the registry did not give repo@digest.
func registryError(reg *registry.Client, ref string, err error) error {
	var perr *registry.PlatformError
	var big *registry.TooLargeError
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return fmt.Errorf("image %s not found", ref)
	case errors.As(err, &perr):
		return fmt.Errorf("image %s: %w", ref, perr)
	case errors.As(err, &big):
		return fmt.Errorf("image %s: %w", ref, big)
	}
	return fmt.Errorf("fetch image %s: %w", ref, reg.Explain(err))
}

// size, a layer, or the registry.
func downloadError(reg *registry.Client, ref string, err error) error {
	if isNoSpace(err) {
		return fmt.Errorf("download %s: %w", ref, err)
	}
	var big *registry.TooLargeError
	if errors.As(err, &big) {
		return fmt.Errorf("image %s: %w", ref, big)
	}
	var le *download.LayerError
	if errors.As(err, &le) {
		return fmt.Errorf("download %s: layer %s (attempt %d of %d): %w", ref, le.Digest, le.Attempt, le.Attempts, reg.Explain(le.Err))
	}
	return fmt.Errorf("download %s: %w", ref, reg.Explain(err))
}

// writeImageFiles writes metadata.json and docker_inspect.json.
func writeImageFiles(local v1.Image, dest, repoTag, ref string) error {
	cfg, err := local.ConfigFile()
	if err != nil {
		return fmt.Errorf("read image config: %w", err)
	}
	meta, err := imagefs.ReadMetadata(cfg, filepath.Join(dest, "rootfs"))
	if err != nil {
		return fmt.Errorf("metadata.json: %w", err)
	}
	metaJSON, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	if err := imagefs.WriteFileAtomic(filepath.Join(dest, "metadata.json"), metaJSON, 0o644); err != nil {
		return fmt.Errorf("write metadata.json: %w", err)
	}
	inspect, err := imagefs.InspectJSON(local, repoTag, ref)
	if err != nil {
		return fmt.Errorf("docker_inspect.json: %w", err)
	}
	if err := imagefs.WriteFileAtomic(filepath.Join(dest, "docker_inspect.json"), inspect, 0o644); err != nil {
		return fmt.Errorf("write docker_inspect.json: %w", err)
	}
	return nil
}

// writeTarballs writes image (save: true) and rootfs.tar (rootfs: true).
// writeRootfsAndImage extracts rootfs/ and, with save: true, writes the
// image tarball at the same time: one is mostly decompressing, the other
// copying the downloaded blobs, so together they cost little more than
// rootfs/ alone (issue 14: a get for a load_base should cost what
// unpacking the layers once does).
func writeRootfsAndImage(ctx context.Context, s *session, local v1.Image, dest, repoTag string, save bool) error {
	if !save {
		enterPhase(ctx, "writing rootfs/")
		return extractRootfs(ctx, s, local, dest)
	}
	enterPhase(ctx, "writing rootfs/ and image")
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return extractRootfs(gctx, s, local, dest) })
	g.Go(func() error {
		phase := time.Now()
		if err := imagefs.WriteSaveTarball(gctx, local, repoTag, filepath.Join(dest, "image")); err != nil {
			return fmt.Errorf("write image (save: true): %w", err)
		}
		s.log.Infof("image (docker load tarball, tagged %s) written in %s", repoTag, since(phase))
		return nil
	})
	err := g.Wait()
	if err != nil {
		// A finished image beside a failed rootfs/ would look complete.
		os.Remove(filepath.Join(dest, "image"))
	}
	return err
}

func extractRootfs(ctx context.Context, s *session, local v1.Image, dest string) error {
	if err := imagefs.ExtractRootfs(ctx, local, filepath.Join(dest, "rootfs"), imagefs.ExtractOptions{Chown: os.Geteuid() == 0, Log: s.log}); err != nil {
		return fmt.Errorf("write rootfs/: %w", err)
	}
	return nil
}

func writeRootfsTar(ctx context.Context, s *session, local v1.Image, dest string, rootfs bool) error {
	if !rootfs {
		return nil
	}
	enterPhase(ctx, "writing rootfs.tar")
	phase := time.Now()
	if err := imagefs.WriteRootfsTar(ctx, local, filepath.Join(dest, "rootfs.tar")); err != nil {
		return fmt.Errorf("write rootfs.tar: %w", err)
	}
	s.log.Infof("rootfs.tar written in %s", since(phase))
	return nil
}

// writableDir makes sure DEST exists and can be written, with a message that
// says so instead of a failure deep inside the download.
func writableDir(dest string) error {
	if fi, err := os.Stat(dest); err == nil && !fi.IsDir() {
		return fmt.Errorf("destination %s is not a folder", dest)
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return fmt.Errorf("destination %s cannot be created: %w", dest, err)
	}
	f, err := os.CreateTemp(dest, ".write-test-*")
	if err != nil {
		return fmt.Errorf("destination %s is not writable: %w", dest, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// noSpace says which folder filled up when the disk is full: the get's
// files are written in place, so DEST's filesystem is the one to grow.
func noSpace(dest string, err error) error {
	if !isNoSpace(err) {
		return err
	}
	return fmt.Errorf("no space left on device in the destination %s (the get writes the compressed layers, rootfs/ and, with save or rootfs, a copy of the image there): %w", dest, err)
}

func isNoSpace(err error) bool { return errors.Is(err, syscall.ENOSPC) }

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }
