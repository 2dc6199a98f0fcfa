package resource

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/download"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// savesPlatforms reports whether the get saves several platforms
// (params.platforms, which ParseIn allows only with save: true): it writes
// oci/ instead of the image tarball, and no image-id, because
// pkg/baseimage's Detect reads any folder with an image-id as a
// single-platform save and would then require the tarball.
func savesPlatforms(req *protocol.InRequest) bool { return len(req.Params.Platforms) > 0 }

// platformPlan is what a get with params.platforms saves: the images, the
// one rootfs/ and metadata.json are of, and the layout's index.json.
type platformPlan struct {
	children []savedChild
	primary  int
	index    []byte
	// ownIndex: index.json is the version's index itself (every entry
	// saved), so it hashes to the version's digest.
	ownIndex bool
}

// fetchPlatforms is fetch for params.platforms: every listed platform's
// image goes into oci/, an OCI image layout holding the registry's own
// manifest, config and layer bytes (digests unchanged), under an index of
// just those images; rootfs/, metadata.json, docker_inspect.json and, with
// rootfs: true, rootfs.tar are of one of them, as without platforms (the
// get's platform: params.platform, source.platform or the worker's). The
// images are downloaded one after another, each with its layers in
// parallel up to max_concurrent_downloads, and rootfs/ is written while
// the other platforms download. It returns that image's ID.
func fetchPlatforms(ctx context.Context, env Env, s *session, dest string, req *protocol.InRequest, digest v1.Hash) (string, error) {
	src, params := &req.Source, &req.Params
	ref := src.Repository + "@" + digest.String()
	reg, err := loginClient(ctx, env, s, src)
	if err != nil {
		return "", err
	}
	start := time.Now()
	enterPhase(ctx, "download")
	plan, err := planPlatforms(ctx, s, reg, req, digest)
	if err != nil {
		return "", err
	}
	blobs := filepath.Join(dest, ".download")
	defer os.RemoveAll(blobs)
	layoutDir := filepath.Join(dest, LayoutDir)
	complete := false
	defer func() {
		if !complete {
			// A layout beside a failed rootfs/ would look like a base.
			os.RemoveAll(layoutDir)
		}
	}()
	lw, err := newLayoutWriter(layoutDir)
	if err != nil {
		return "", err
	}
	primary, id, err := saveChild(ctx, s, reg, req, plan, plan.primary, blobs, lw)
	if err != nil {
		return "", err
	}
	enterPhase(ctx, "writing rootfs/ and downloading the other platforms")
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return extractRootfs(gctx, s, primary, dest) })
	g.Go(func() error {
		for i := range plan.children {
			if i == plan.primary {
				continue
			}
			if _, _, err := saveChild(gctx, s, reg, req, plan, i, blobs, lw); err != nil {
				return err
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return "", err
	}
	if err := lw.finish(plan.index); err != nil {
		return "", fmt.Errorf("write %s/: %w", LayoutDir, err)
	}
	logLayoutIndex(s, plan, digest)

	repoTag := src.Repository + ":" + getTag(req)
	if err := writeImageFiles(primary, dest, repoTag, ref); err != nil {
		return "", err
	}
	if err := writeRootfsTar(ctx, s, primary, dest, bool(params.Rootfs)); err != nil {
		return "", err
	}
	complete = true
	s.log.Infof("fetched %s (%d platforms into %s/) in %s", ref, len(plan.children), LayoutDir, since(start))
	return id, nil
}

// planPlatforms reads the version's manifest and picks the images to save.
// An index gives one entry per listed platform (a platform it lacks fails
// with those it has). A single image is saved only when the one platform
// listed is its own: anything else is an error saying the image is not
// multi-platform.
func planPlatforms(ctx context.Context, s *session, reg *registry.Client, req *protocol.InRequest, digest v1.Hash) (*platformPlan, error) {
	src := &req.Source
	ref := src.Repository + "@" + digest.String()
	want := req.Params.PlatformList()
	desc, err := reg.Get(ctx, src.Repository, digest)
	if err != nil {
		return nil, registryError(reg, ref, err)
	}
	// reg.Get reads what go-containerregistry reads (up to 100 MiB);
	// what is kept must stay under the get's own cap.
	if n := int64(len(desc.Manifest)); n > registry.MaxManifestSize {
		return nil, fmt.Errorf("image %s: %w", ref, &registry.TooLargeError{What: "manifest", Size: n, Limit: registry.MaxManifestSize})
	}
	plan := &platformPlan{}
	switch {
	case desc.MediaType.IsIndex():
		if plan.children, err = chooseChildren(ref, desc.Manifest, want); err != nil {
			return nil, err
		}
		if plan.index, plan.ownIndex, err = layoutIndex(desc.Manifest, plan.children); err != nil {
			return nil, fmt.Errorf("image %s: writing its index: %w", ref, err)
		}
	case desc.MediaType.IsImage():
		child, index, err := singleImage(ctx, reg, req, digest, desc.MediaType, int64(len(desc.Manifest)), want)
		if err != nil {
			return nil, err
		}
		plan.children, plan.index = []savedChild{child}, index
	default:
		return nil, fmt.Errorf("image %s is a %s, neither an image nor an index", ref, desc.MediaType)
	}
	plan.primary = primaryChild(s, plan.children, getPlatform(req))
	return plan, nil
}

// singleImage is the one image a version names when it is no index: fine
// for params.platforms only when that lists exactly the image's platform
// (its config's os, architecture and variant).
func singleImage(ctx context.Context, reg *registry.Client, req *protocol.InRequest, digest v1.Hash, mt types.MediaType, size int64, want []protocol.Platform) (savedChild, []byte, error) {
	src := &req.Source
	ref := src.Repository + "@" + digest.String()
	img, err := reg.Image(ctx, src.Repository, digest, v1.Platform{})
	if err != nil {
		return savedChild{}, nil, registryError(reg, ref, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return savedChild{}, nil, registryError(reg, ref, err)
	}
	have := protocol.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}
	if have.OS == "" || have.Architecture == "" {
		return savedChild{}, nil, fmt.Errorf("params.platforms: image %s is not multi-platform: it is one image whose config names no platform; remove params.platforms to save it", ref)
	}
	if len(want) != 1 || !matches(have, want[0]) {
		return savedChild{}, nil, fmt.Errorf("params.platforms: image %s is not multi-platform: it is one %s image, and params.platforms lists %s; remove params.platforms to save it, or list only %s",
			ref, have, platformList(want), have)
	}
	desc := v1.Descriptor{MediaType: mt, Size: size, Digest: digest}
	index, err := singleImageIndex(desc, have)
	if err != nil {
		return savedChild{}, nil, err
	}
	return savedChild{field: "params.platforms[0]", want: want[0], desc: desc}, index, nil
}

func platformList(ps []protocol.Platform) string {
	var names []string
	for _, p := range ps {
		names = append(names, p.String())
	}
	return strings.Join(names, ", ")
}

// getPlatform is the platform a get without params.platforms would fetch:
// params.platform, else source.platform, else linux and our architecture.
func getPlatform(req *protocol.InRequest) protocol.Platform {
	if req.Params.Platform != nil {
		return req.Params.Platform.Resolve()
	}
	return req.Source.Platform.Resolve()
}

// primaryChild is the saved image rootfs/, metadata.json and
// docker_inspect.json are of: the get's platform when it is among them,
// else (with a warning) the first listed.
func primaryChild(s *session, children []savedChild, get protocol.Platform) int {
	for i, c := range children {
		have := platformOf(c.desc)
		if c.desc.Platform == nil {
			have = c.want // a single image: its config's, checked
		}
		if matches(have, get) {
			return i
		}
	}
	s.log.Warnf("params.platforms does not list the get's platform %s (params.platform, source.platform or the worker's): rootfs/, metadata.json and docker_inspect.json are of %s, the first listed", get, children[0].want)
	return 0
}

// saveChild downloads the plan's i-th image (its layers in parallel, as
// the single-platform get does) and adds it to the layout. It returns the
// local image and its ID.
func saveChild(ctx context.Context, s *session, reg *registry.Client, req *protocol.InRequest, plan *platformPlan, i int, blobDir string, lw *layoutWriter) (v1.Image, string, error) {
	c, src := plan.children[i], &req.Source
	ref := src.Repository + "@" + c.desc.Digest.String()
	if !c.desc.MediaType.IsImage() {
		return nil, "", fmt.Errorf("%s: %s is a %s, not an image", c.field, ref, c.desc.MediaType)
	}
	s.log.Infof("saving %s into %s/ (%s, %d of %d)", c.want, LayoutDir, c.field, i+1, len(plan.children))
	// The entry names an image manifest, so resolveImage takes it as it
	// is (no platform is chosen) and says what failed as a get does.
	img, id, err := resolveImage(ctx, s, reg, req, c.desc.Digest)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", c.field, err)
	}
	local, stats, err := download.Image(ctx, img, download.Options{Dir: blobDir, Concurrency: src.Downloads(), Log: s.log})
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", c.field, downloadError(reg, ref, err))
	}
	s.log.Debugf("download: %d layers, %d bytes in %s", stats.Layers, stats.Bytes, stats.Duration)
	if err := lw.addImage(ctx, local, c.desc.Digest, blobDir); err != nil {
		return nil, "", fmt.Errorf("write %s/ (%s image %s): %w", LayoutDir, c.want, logging.ShortDigest(c.desc.Digest.String()), err)
	}
	return local, id, nil
}

// logLayoutIndex says which index oci/index.json is: a new one (another
// digest) when only some of the version's entries were saved.
func logLayoutIndex(s *session, plan *platformPlan, version v1.Hash) {
	h, _, _ := v1.SHA256(bytes.NewReader(plan.index))
	switch {
	case plan.ownIndex:
		s.log.Infof("%s/index.json is the registry's index %s, with all its %d images", LayoutDir, logging.ShortDigest(version.String()), len(plan.children))
	default:
		s.log.Infof("%s/index.json lists the %d saved images: a new index %s (the version, in digest, is %s)", LayoutDir, len(plan.children), logging.ShortDigest(h.String()), logging.ShortDigest(version.String()))
	}
}
