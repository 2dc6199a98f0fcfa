package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// pulledImage is the image a get reads: its manifest (capped by
// manifestCap) is parsed once, its config is fetched once and only when its
// declared size is under MaxConfigSize, reading no more than that size, and
// its layers are fetched by digest from the repository that answered.
// go-containerregistry's remote image parses the manifest again for every
// layer it opens, which for a manifest near the cap costs tens of MiB per
// download running at once.
type pulledImage struct {
	ctx    context.Context
	puller *remote.Puller
	repo   name.Repository // where the manifest came from: mirror or origin
	desc   *remote.Descriptor
	// manifest is parsed from desc.Manifest without its top-level
	// annotations, which nothing the get writes uses (RawManifest has them).
	manifest *v1.Manifest

	configOnce sync.Once
	config     []byte
	configErr  error
}

func newPulledImage(ctx context.Context, p *remote.Puller, repo name.Repository, desc *remote.Descriptor) (*pulledImage, error) {
	switch desc.MediaType {
	case types.OCIManifestSchema1, types.DockerManifestSchema2:
	default:
		if desc.MediaType.IsSchema1() {
			// go-containerregistry says why it does not read these.
			_, err := desc.Image()
			return nil, err
		}
	}
	// Exactly the manifest's size: the buffer it was read into may be
	// twice that.
	desc.Manifest = bytes.Clone(desc.Manifest)
	var m v1.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		return nil, fmt.Errorf("parse manifest %s: %w", desc.Digest, err)
	}
	m.Annotations = nil
	return &pulledImage{ctx: ctx, puller: p, repo: repo, desc: desc, manifest: &m}, nil
}

func (i *pulledImage) MediaType() (types.MediaType, error) { return i.desc.MediaType, nil }
func (i *pulledImage) RawManifest() ([]byte, error)        { return i.desc.Manifest, nil }
func (i *pulledImage) Manifest() (*v1.Manifest, error)     { return i.manifest, nil }
func (i *pulledImage) Digest() (v1.Hash, error)            { return i.desc.Digest, nil }
func (i *pulledImage) Size() (int64, error)                { return int64(len(i.desc.Manifest)), nil }
func (i *pulledImage) ConfigName() (v1.Hash, error)        { return i.manifest.Config.Digest, nil }

// RawConfigFile fetches the config once: refused over MaxConfigSize without
// a request, and read to its declared size at most.
func (i *pulledImage) RawConfigFile() ([]byte, error) {
	i.configOnce.Do(func() { i.config, i.configErr = i.fetchConfig() })
	return i.config, i.configErr
}

func (i *pulledImage) fetchConfig() ([]byte, error) {
	d := i.manifest.Config
	if d.Size > MaxConfigSize {
		return nil, &TooLargeError{What: "config", Size: d.Size, Limit: MaxConfigSize}
	}
	if d.Data != nil {
		return d.Data, verifyBlob(d, d.Data)
	}
	l, err := i.puller.Layer(i.ctx, i.repo.Digest(d.Digest.String()))
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, d.Size+1))
	if err != nil {
		return nil, err
	}
	return b, verifyBlob(d, b)
}

// verifyBlob checks b against its descriptor.
func verifyBlob(d v1.Descriptor, b []byte) error {
	if int64(len(b)) != d.Size {
		return fmt.Errorf("the registry sent %s bytes, the manifest says %d", sizeSeen(len(b), d.Size), d.Size)
	}
	sum := sha256.Sum256(b)
	if d.Digest.Algorithm != "sha256" || hex.EncodeToString(sum[:]) != d.Digest.Hex {
		return fmt.Errorf("digest mismatch: the registry sent sha256:%s", hex.EncodeToString(sum[:]))
	}
	return nil
}

func sizeSeen(n int, want int64) string {
	if int64(n) > want {
		return fmt.Sprintf("more than %d", want)
	}
	return fmt.Sprint(n)
}

func (i *pulledImage) ConfigFile() (*v1.ConfigFile, error) {
	raw, err := i.RawConfigFile()
	if err != nil {
		return nil, err
	}
	var cf v1.ConfigFile
	if err := json.Unmarshal(raw, &cf); err != nil {
		return nil, fmt.Errorf("parse config: %w", err)
	}
	return &cf, nil
}

func (i *pulledImage) Layers() ([]v1.Layer, error) {
	ls := make([]v1.Layer, 0, len(i.manifest.Layers))
	for _, d := range i.manifest.Layers {
		l, err := i.LayerByDigest(d.Digest)
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// LayerByDigest fetches a layer blob of this image from its repository;
// a foreign layer (one with URLs) goes through go-containerregistry's
// remote image, which also tries the URLs.
func (i *pulledImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	for _, d := range i.manifest.Layers {
		if d.Digest != h {
			continue
		}
		if len(d.URLs) > 0 {
			img, err := i.desc.Image()
			if err != nil {
				return nil, err
			}
			return img.LayerByDigest(h)
		}
		return partial.CompressedToLayer(&pulledLayer{img: i, desc: d})
	}
	return nil, fmt.Errorf("blob %s is not a layer of image %s", h, i.desc.Digest)
}

func (i *pulledImage) LayerByDiffID(h v1.Hash) (v1.Layer, error) {
	cf, err := i.ConfigFile()
	if err != nil {
		return nil, err
	}
	for k, d := range cf.RootFS.DiffIDs {
		if d == h && k < len(i.manifest.Layers) {
			return i.LayerByDigest(i.manifest.Layers[k].Digest)
		}
	}
	return nil, fmt.Errorf("diff id %s is not a layer of image %s", h, i.desc.Digest)
}

// pulledLayer is a layer blob described by the manifest.
type pulledLayer struct {
	img  *pulledImage
	desc v1.Descriptor
}

func (l *pulledLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *pulledLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *pulledLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }

func (l *pulledLayer) Descriptor() (*v1.Descriptor, error) {
	d := l.desc
	return &d, nil
}

func (l *pulledLayer) Compressed() (io.ReadCloser, error) {
	rl, err := l.img.puller.Layer(l.img.ctx, l.img.repo.Digest(l.desc.Digest.String()))
	if err != nil {
		return nil, err
	}
	return rl.Compressed()
}
