package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// PlatformError says an index has no image for the wanted platform, and
// which platforms it does have.
type PlatformError struct {
	Want      v1.Platform
	Available []string
}

func (e *PlatformError) Error() string {
	return fmt.Sprintf("the image has no %s variant; it has: %s (choose one with platform: {os, architecture, variant})",
		PlatformString(e.Want), strings.Join(e.Available, ", "))
}

// PlatformString formats os/architecture[/variant].
func PlatformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// Image resolves repo@digest to one image: the manifest itself, or the
// entry of an index that matches want (a blank variant matches any).
// The returned image is lazy: the config and layers are fetched when read,
// from the repository (mirror or origin) that had the manifest. Manifests
// over MaxManifestSize and configs over MaxConfigSize are a *TooLargeError.
func (c *Client) Image(ctx context.Context, repo string, digest v1.Hash, want v1.Platform) (v1.Image, error) {
	r, err := c.Repository(repo)
	if err != nil {
		return nil, err
	}
	// Every manifest of this image (index, platform image) goes through
	// the capped transport.
	capped := *c
	capped.transport = manifestCap{next: c.transport}
	var (
		p    *remote.Puller
		from name.Repository
		desc *remote.Descriptor
	)
	_, err = c.firstOf(ctx, r, func(cand name.Repository) (v1.Hash, error) {
		pl, err := remote.NewPuller(capped.options(ctx, cand, r)...)
		if err != nil {
			return v1.Hash{}, err
		}
		ref := cand.Digest(digest.String())
		d, err := pl.Get(ctx, ref)
		if err != nil {
			return v1.Hash{}, c.notFound(ctx, ref, err)
		}
		p, from, desc = pl, cand, d
		return d.Digest, nil
	})
	if err != nil {
		return nil, err
	}
	if !desc.MediaType.IsIndex() {
		return newPulledImage(ctx, p, from, desc)
	}
	var m v1.IndexManifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		return nil, fmt.Errorf("read index %s: %w", digest, err)
	}
	var avail []string
	for _, d := range m.Manifests {
		if d.Platform == nil {
			continue
		}
		plat := *d.Platform
		if plat.OS == "unknown" { // attestation manifests, not images
			continue
		}
		avail = append(avail, PlatformString(plat))
		if plat.OS == want.OS && plat.Architecture == want.Architecture && (want.Variant == "" || plat.Variant == want.Variant) {
			img, err := pulledChild(ctx, p, from, d)
			if err != nil {
				return nil, fmt.Errorf("read %s image %s: %w", PlatformString(plat), d.Digest, err)
			}
			return img, nil
		}
	}
	sort.Strings(avail)
	return nil, &PlatformError{Want: want, Available: avail}
}

// pulledChild fetches the image an index entry names, from the index's
// repository.
func pulledChild(ctx context.Context, p *remote.Puller, repo name.Repository, d v1.Descriptor) (*pulledImage, error) {
	desc, err := p.Get(ctx, repo.Digest(d.Digest.String()))
	if err != nil {
		return nil, err
	}
	if desc.MediaType.IsIndex() {
		return nil, fmt.Errorf("it is an index itself, not an image")
	}
	return newPulledImage(ctx, p, repo, desc)
}
