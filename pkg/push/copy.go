package push

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sirupsen/logrus"
)

// CopyOptions name an image the daemon pushed to Repository and the
// repositories it goes on to.
type CopyOptions struct {
	Registry   *registry.Client
	Repository string   // where the daemon pushed, as users write it
	Digest     string   // the manifest digest the daemon reported
	Tags       []string // the tags it pushed, and the ones the others get
	Additional []string // as users write them
	Jobs       int
	Log        *logrus.Entry
}

// Copy sends the image the daemon pushed to o.Repository on to every
// additional repository, as Push does for its own: every blob to every one
// of them first (mounted from o.Repository on its registry, streamed from
// it to other registries, once per registry), then the very manifest bytes
// the daemon wrote, under every tag. The daemon has tagged o.Repository by
// then: a failure here leaves its tags and none in the others, which the
// error says.
func Copy(ctx context.Context, o CopyOptions) (*Result, error) {
	log := logging.OrDiscard(o.Log)
	start := time.Now()
	dests, err := newDestinations(o.Registry, o.Repository, o.Additional)
	if err != nil {
		return nil, err
	}
	primary := dests.all[0]
	dests.primaryDone = true
	h, err := v1.NewHash(o.Digest)
	if err != nil {
		return nil, fmt.Errorf("the daemon reported digest %q: %w", o.Digest, err)
	}
	src := primary.Digest(h.String())
	opts := o.Registry.RemoteOptions(ctx, primary)
	desc, err := remote.Get(src, opts...)
	if err != nil {
		return nil, fmt.Errorf("reading %s back to copy it: %w", src, o.Registry.Explain(err))
	}
	if !desc.MediaType.IsImage() || desc.MediaType.IsSchema1() {
		return nil, fmt.Errorf("the daemon pushed %s as %s: copying anything but a single-platform image manifest is not implemented yet", src, desc.MediaType)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	sizes := map[string]int64{}
	var blobs []v1.Layer
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		sizes[d.Digest.String()] = d.Size
		blobs = append(blobs, &remote.MountableLayer{Layer: remoteBlobLayer(o.Registry, opts, primary, d), Reference: src})
	}

	w := &writer{target: primary, dests: dests, jobs: uploadJobs(o.Jobs), explain: o.Registry.Explain}
	// Source credentials for the primary's registry only, as in Push.
	if w.pusher, w.obs, err = newPusher(ctx, o.Registry, w.jobs, []name.Repository{primary}); err != nil {
		return nil, err
	}
	log.Infof("push: copying %s from %s to %s: every blob first, then the manifests",
		logging.ShortDigest(h.String()), o.Repository, count(len(o.Additional), "more repository", "more repositories"))
	if err := w.send(ctx, blobs); err != nil {
		return nil, err
	}
	var done []string
	for _, t := range o.Tags {
		done = append(done, o.Repository+":"+t)
	}
	if err := w.tagAll(ctx, o.Tags, rawManifest{raw: desc.Manifest, mt: desc.MediaType}, done); err != nil {
		return nil, err
	}
	res := &Result{Digest: h, MediaType: desc.MediaType, Config: m.Config.Digest, Took: time.Since(start)}
	w.report(res, sizes)
	return res, nil
}

// remoteBlobLayer is blob d of repo, read from there when a destination
// needs its bytes.
func remoteBlobLayer(reg *registry.Client, opts []remote.Option, repo name.Repository, d v1.Descriptor) v1.Layer {
	return &blob{digest: d.Digest, diffID: d.Digest, size: d.Size, mediaType: d.MediaType, open: func() (io.ReadCloser, error) {
		l, err := remote.Layer(repo.Digest(d.Digest.String()), opts...)
		if err != nil {
			return nil, err
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, fmt.Errorf("reading blob %s from %s: %w", d.Digest, repo, reg.Explain(err))
		}
		return rc, nil
	}}
}

// rawManifest is a manifest as bytes: written unchanged, its digest kept.
type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }
func (m rawManifest) Size() (int64, error)                { return int64(len(m.raw)), nil }
func (m rawManifest) Digest() (v1.Hash, error)            { return sha256Hash(m.raw), nil }
