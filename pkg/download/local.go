package download

import (
	"bytes"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// localImage serves the original manifest and config bytes (so digests stay
// the registry's), the manifest and config parsed once, and layers from the
// downloaded files (partial adds Uncompressed() with gzip/zstd detection).
type localImage struct {
	rawManifest []byte
	rawConfig   []byte
	mediaType   types.MediaType
	manifest    *v1.Manifest
	config      *v1.ConfigFile
	layers      map[v1.Hash]*localLayer
}

func newLocalImage(dir string, rawManifest []byte, mt types.MediaType, m *v1.Manifest, rawConfig []byte, cfg *v1.ConfigFile) (v1.Image, error) {
	li := &localImage{
		rawManifest: rawManifest,
		rawConfig:   rawConfig,
		mediaType:   mt,
		manifest:    m,
		config:      cfg,
		layers:      map[v1.Hash]*localLayer{},
	}
	// diff_ids pair with the manifest's layers by position.
	pairDiffIDs := len(cfg.RootFS.DiffIDs) == len(m.Layers)
	for i, d := range m.Layers {
		if _, ok := li.layers[d.Digest]; ok {
			continue
		}
		l := &localLayer{desc: d, path: BlobPath(dir, d.Digest)}
		if pairDiffIDs {
			l.diffID = cfg.RootFS.DiffIDs[i]
		}
		li.layers[d.Digest] = l
	}
	return li, nil
}

func (i *localImage) RawManifest() ([]byte, error)        { return i.rawManifest, nil }
func (i *localImage) RawConfigFile() ([]byte, error)      { return i.rawConfig, nil }
func (i *localImage) MediaType() (types.MediaType, error) { return i.mediaType, nil }
func (i *localImage) ConfigName() (v1.Hash, error)        { return i.manifest.Config.Digest, nil }
func (i *localImage) Size() (int64, error)                { return int64(len(i.rawManifest)), nil }

// Manifest and ConfigFile hand out copies: callers may change them.
func (i *localImage) Manifest() (*v1.Manifest, error) {
	m := *i.manifest
	m.Layers = append([]v1.Descriptor(nil), m.Layers...)
	return &m, nil
}

func (i *localImage) ConfigFile() (*v1.ConfigFile, error) {
	c := *i.config
	c.RootFS.DiffIDs = append([]v1.Hash(nil), c.RootFS.DiffIDs...)
	return &c, nil
}

func (i *localImage) Digest() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(i.rawManifest))
	return h, err
}

func (i *localImage) Layers() ([]v1.Layer, error) {
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

func (i *localImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	if l, ok := i.layers[h]; ok {
		return partial.CompressedToLayer(l)
	}
	if h == i.manifest.Config.Digest {
		return static.NewLayer(i.rawConfig, i.manifest.Config.MediaType), nil
	}
	return nil, fmt.Errorf("blob %s is not part of this image", h)
}

func (i *localImage) LayerByDiffID(h v1.Hash) (v1.Layer, error) {
	for _, l := range i.layers {
		if l.diffID == h {
			return partial.CompressedToLayer(l)
		}
	}
	for _, d := range i.manifest.Layers {
		l, err := partial.CompressedToLayer(i.layers[d.Digest])
		if err != nil {
			return nil, err
		}
		if id, err := l.DiffID(); err == nil && id == h {
			return l, nil
		}
	}
	return nil, fmt.Errorf("diff id %s is not part of this image", h)
}

type localLayer struct {
	desc   v1.Descriptor
	diffID v1.Hash // zero when the config did not list it
	path   string
}

func (l *localLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *localLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *localLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }

// Descriptor keeps annotations and URLs of the manifest entry.
func (l *localLayer) Descriptor() (*v1.Descriptor, error) {
	d := l.desc
	return &d, nil
}

func (l *localLayer) Compressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, fmt.Errorf("open downloaded layer %s: %w", l.desc.Digest, err)
	}
	return f, nil
}

// DiffID comes from the config; hashing the uncompressed stream is the
// fallback for configs without a matching diff_ids list.
func (l *localLayer) DiffID() (v1.Hash, error) {
	if l.diffID != (v1.Hash{}) {
		return l.diffID, nil
	}
	full, err := partial.CompressedToLayer(compressedOnly{l})
	if err != nil {
		return v1.Hash{}, err
	}
	return full.DiffID()
}

// compressedOnly hides DiffID so partial computes it instead of recursing.
type compressedOnly struct{ l *localLayer }

func (c compressedOnly) Digest() (v1.Hash, error)            { return c.l.Digest() }
func (c compressedOnly) Size() (int64, error)                { return c.l.Size() }
func (c compressedOnly) MediaType() (types.MediaType, error) { return c.l.MediaType() }
func (c compressedOnly) Compressed() (io.ReadCloser, error)  { return c.l.Compressed() }
