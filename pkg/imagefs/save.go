package imagefs

import (
	"context"
	"fmt"
	"io"

	"github.com/concourse-docker/docker-image-resource/pkg/ctxio"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// WriteSaveTarball writes img as a `docker save` tarball at path (through a
// temporary file renamed at the end), written by go-containerregistry's
// tarball.Write. manifest.json names the config blob ("sha256:<hex>"; the
// image ID `docker load` gives is that config digest) and RepoTags [repoTag]: repoTag is written as
// given ("alpine:3", "127.0.0.1:5000/base:1"; ":latest" is appended when it
// has no tag). An empty repoTag writes no RepoTags. Layers are copied as the
// registry stores them (gzip stays gzip, zstd stays zstd: Docker before 23
// cannot load zstd layers).
func WriteSaveTarball(ctx context.Context, img v1.Image, repoTag string, path string) error {
	var ref name.Reference
	if repoTag == "" {
		d, err := img.Digest()
		if err != nil {
			return fmt.Errorf("image digest: %w", err)
		}
		// A digest reference makes tarball.Write leave RepoTags out.
		if ref, err = name.NewDigest("image@" + d.String()); err != nil {
			return fmt.Errorf("digest reference: %w", err)
		}
	} else {
		t, err := name.NewTag(repoTag)
		if err != nil {
			return fmt.Errorf("image name %q: %w", repoTag, err)
		}
		ref = t
	}
	return writeAtomic(path, 0o644, func(w io.Writer) error {
		return tarball.Write(ref, img, ctxio.Writer(ctx, w))
	})
}
