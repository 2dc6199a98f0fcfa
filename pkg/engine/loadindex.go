package engine

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/distribution/reference"
	"github.com/sirupsen/logrus"
)

// LoadIndex loads every platform of a named multi-platform layout folder
// into a daemon on the containerd image store, as one index under the
// folder's name, so a FROM of it in each platform's stage takes that
// platform's image without a pull. (A single image under the name would be
// taken for every platform.) The folder's blobs are streamed as an OCI
// layout tarball, without a temporary copy.
func LoadIndex(ctx context.Context, cli Client, f *baseimage.Folder, images []*baseimage.LayoutImage, log *logrus.Entry) (Base, error) {
	log = logging.OrDiscard(log)
	what := f.Ref()
	named, err := reference.ParseNormalizedNamed(what)
	if err != nil {
		return Base{}, fmt.Errorf("load base %s: %w", what, err)
	}
	var plats []string
	for _, img := range images {
		plats = append(plats, img.Platform)
	}
	idx, err := baseimage.NewOCIIndex(images, named.String(), f.Tag)
	if err != nil {
		return Base{}, fmt.Errorf("load base %s: %w", what, err)
	}
	log.Infof("loading base image %s from %s (%s, %d platforms: %s) as one index", what, f.Dir, f.Origin, len(images), strings.Join(plats, ", "))
	if _, err := loadStream(ctx, cli, func(w io.Writer) error { return idx.Write(ctx, w) }, log); err != nil {
		return Base{}, fmt.Errorf("load base %s from %s: %w", what, f.Path, err)
	}
	ins, err := cli.ImageInspect(ctx, what)
	if err != nil {
		return Base{}, fmt.Errorf("load base %s: not in the daemon after loading: %w", what, err)
	}
	if ins.ID != idx.Digest.String() {
		return Base{}, fmt.Errorf("load base %s: the daemon's image is %s, not the index %s loaded", what, ins.ID, idx.Digest)
	}
	log.Infof("loaded base image %s (index %s)", what, logging.ShortID(ins.ID))
	return Base{ID: ins.ID, FolderID: f.ID(), Repository: f.Repository, Tag: f.Tag}, nil
}
