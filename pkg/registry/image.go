package registry

import (
	"context"
	"fmt"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
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
// The returned image is lazy: layers are fetched when read.
func (c *Client) Image(ctx context.Context, repo string, digest v1.Hash, want v1.Platform) (v1.Image, error) {
	desc, err := c.Get(ctx, repo, digest)
	if err != nil {
		return nil, err
	}
	if !desc.MediaType.IsIndex() {
		return desc.Image()
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("read index %s: %w", digest, err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("read index %s: %w", digest, err)
	}
	var avail []string
	for _, d := range m.Manifests {
		if d.Platform == nil {
			continue
		}
		p := *d.Platform
		if p.OS == "unknown" { // attestation manifests, not images
			continue
		}
		avail = append(avail, PlatformString(p))
		if p.OS == want.OS && p.Architecture == want.Architecture && (want.Variant == "" || p.Variant == want.Variant) {
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("read %s image %s: %w", PlatformString(p), d.Digest, err)
			}
			return img, nil
		}
	}
	sort.Strings(avail)
	return nil, &PlatformError{Want: want, Available: avail}
}
