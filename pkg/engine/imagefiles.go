package engine

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// FileReader is the part of the Engine API client ReadImageFiles uses;
// *client.Client satisfies it.
type FileReader interface {
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, containerName string) (container.CreateResponse, error)
	CopyFromContainer(ctx context.Context, containerID, srcPath string) (io.ReadCloser, container.PathStat, error)
	ContainerRemove(ctx context.Context, containerID string, options container.RemoveOptions) error
}

var _ FileReader = (*client.Client)(nil)

// ImageFile is a file of an image's filesystem.
type ImageFile struct {
	// Regular: a plain file, whose Content is read (up to maxImageFile).
	// Otherwise it exists as something else (a symlink, a folder).
	Regular bool
	Content []byte
}

// maxImageFile caps a file ReadImageFiles reads (an /etc/passwd).
const maxImageFile = 1 << 20

// ReadImageFiles reads small files of an image the daemon holds, with
// every layer and whiteout applied: through a container created from it
// and never started, removed again. A path the image does not have is
// missing from the map.
func ReadImageFiles(ctx context.Context, cli FileReader, image string, paths ...string) (map[string]ImageFile, error) {
	c, err := cli.ContainerCreate(ctx, &container.Config{Image: image, Cmd: []string{"/nonexistent"}, NetworkDisabled: true},
		&container.HostConfig{NetworkMode: "none"}, nil, nil, "")
	if err != nil {
		return nil, fmt.Errorf("creating a container of %s to read its files: %w", logging.ShortID(image), err)
	}
	defer func() {
		// Removed also when ctx ended: the daemon is stopped next anyway,
		// but a container left would keep the image's layers mounted.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = cli.ContainerRemove(rctx, c.ID, container.RemoveOptions{Force: true})
	}()
	out := map[string]ImageFile{}
	for _, p := range paths {
		f, ok, err := readContainerFile(ctx, cli, c.ID, p)
		if err != nil {
			return nil, fmt.Errorf("reading %s of %s: %w", p, logging.ShortID(image), err)
		}
		if ok {
			out[p] = f
		}
	}
	return out, nil
}

func readContainerFile(ctx context.Context, cli FileReader, id, p string) (ImageFile, bool, error) {
	rc, _, err := cli.CopyFromContainer(ctx, id, p)
	if cerrdefs.IsNotFound(err) {
		return ImageFile{}, false, nil
	}
	if err != nil {
		return ImageFile{}, false, err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	h, err := tr.Next()
	if err != nil {
		return ImageFile{}, false, fmt.Errorf("reading the daemon's archive: %w", err)
	}
	if h.Typeflag != tar.TypeReg {
		return ImageFile{}, true, nil
	}
	b, err := io.ReadAll(io.LimitReader(tr, maxImageFile+1))
	if err != nil {
		return ImageFile{}, false, fmt.Errorf("reading the daemon's archive: %w", err)
	}
	if len(b) > maxImageFile {
		return ImageFile{}, false, fmt.Errorf("larger than %d bytes", maxImageFile)
	}
	return ImageFile{Regular: true, Content: b}, true, nil
}
