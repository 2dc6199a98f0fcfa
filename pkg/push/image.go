package push

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// blob is a layer whose compressed bytes and digests are known up front:
// go-containerregistry then never compresses or hashes anything itself.
type blob struct {
	digest, diffID v1.Hash
	size           int64
	mediaType      types.MediaType
	comp           compression.Compression
	open           func() (io.ReadCloser, error)
}

func (b *blob) Digest() (v1.Hash, error)             { return b.digest, nil }
func (b *blob) DiffID() (v1.Hash, error)             { return b.diffID, nil }
func (b *blob) Size() (int64, error)                 { return b.size, nil }
func (b *blob) MediaType() (types.MediaType, error)  { return b.mediaType, nil }
func (b *blob) Compressed() (io.ReadCloser, error)   { return b.open() }
func (b *blob) Uncompressed() (io.ReadCloser, error) { return decompress(b.open, b.comp) }

func (b *blob) descriptor() v1.Descriptor {
	return v1.Descriptor{MediaType: b.mediaType, Size: b.size, Digest: b.digest}
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

func decompress(open func() (io.ReadCloser, error), c compression.Compression) (io.ReadCloser, error) {
	rc, err := open()
	if err != nil {
		return nil, err
	}
	switch c {
	case compression.GZip:
		zr, err := gzip.NewReader(rc)
		if err != nil {
			rc.Close()
			return nil, err
		}
		return readCloser{zr, func() error { zr.Close(); return rc.Close() }}, nil
	case compression.ZStd:
		zr, err := zstd.NewReader(rc)
		if err != nil {
			rc.Close()
			return nil, err
		}
		return readCloser{zr, func() error { zr.Close(); return rc.Close() }}, nil
	}
	return rc, nil
}

// pushImage is the pushed image: the daemon's config bytes, a manifest of one
// media type family, and layers that are either a base's original blobs
// (possibly wrapped as remote.MountableLayer) or freshly compressed ones.
type pushImage struct {
	config   []byte
	mt       types.MediaType
	cfgMT    types.MediaType
	manifest []byte
	layers   []v1.Layer
	// configFrom is the base repository holding this very config (load):
	// the registry may mount it like the layers.
	configFrom name.Reference
}

// newImage writes the manifest; raw, when given, is used instead (a base
// pushed unchanged keeps its manifest digest).
func newImage(config []byte, f family, layers []v1.Layer, descs []v1.Descriptor, raw []byte) (*pushImage, error) {
	img := &pushImage{config: config, mt: f.manifest(), cfgMT: f.config(), layers: layers}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     f.manifest(),
		Config:        v1.Descriptor{MediaType: f.config(), Size: int64(len(config)), Digest: sha256Hash(config)},
		Layers:        descs,
	}
	if raw != nil && sameManifest(raw, &m) {
		img.manifest = raw
		return img, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	img.manifest = b
	return img, nil
}

// sameManifest: raw names exactly m's config and layers, with m's types.
func sameManifest(raw []byte, m *v1.Manifest) bool {
	r, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil || r.MediaType != m.MediaType || !sameDesc(r.Config, m.Config) || len(r.Layers) != len(m.Layers) {
		return false
	}
	for i := range r.Layers {
		if !sameDesc(r.Layers[i], m.Layers[i]) {
			return false
		}
	}
	return true
}

func sameDesc(a, b v1.Descriptor) bool {
	return a.MediaType == b.MediaType && a.Size == b.Size && a.Digest == b.Digest
}

func (i *pushImage) Layers() ([]v1.Layer, error)         { return i.layers, nil }
func (i *pushImage) MediaType() (types.MediaType, error) { return i.mt, nil }
func (i *pushImage) Size() (int64, error)                { return int64(len(i.manifest)), nil }
func (i *pushImage) ConfigName() (v1.Hash, error)        { return sha256Hash(i.config), nil }
func (i *pushImage) RawConfigFile() ([]byte, error)      { return i.config, nil }
func (i *pushImage) Digest() (v1.Hash, error)            { return sha256Hash(i.manifest), nil }
func (i *pushImage) RawManifest() ([]byte, error)        { return i.manifest, nil }

// ConfigLayer is what go-containerregistry uploads as the config blob
// (partial.ConfigLayer looks for this method).
func (i *pushImage) ConfigLayer() (v1.Layer, error) {
	d := sha256Hash(i.config)
	cfg := &blob{digest: d, diffID: d, size: int64(len(i.config)), mediaType: i.cfgMT, comp: compression.None,
		open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(i.config)), nil }}
	if i.configFrom != nil {
		return &remote.MountableLayer{Layer: cfg, Reference: i.configFrom}, nil
	}
	return cfg, nil
}

func (i *pushImage) ConfigFile() (*v1.ConfigFile, error) {
	return v1.ParseConfigFile(bytes.NewReader(i.config))
}

func (i *pushImage) Manifest() (*v1.Manifest, error) {
	return v1.ParseManifest(bytes.NewReader(i.manifest))
}

func (i *pushImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	for _, l := range i.layers {
		if d, err := l.Digest(); err == nil && d == h {
			return l, nil
		}
	}
	return nil, fmt.Errorf("no layer with digest %s", h)
}

func (i *pushImage) LayerByDiffID(h v1.Hash) (v1.Layer, error) {
	for _, l := range i.layers {
		if d, err := l.DiffID(); err == nil && d == h {
			return l, nil
		}
	}
	return nil, errors.New("no layer with diff ID " + h.String())
}

var _ v1.Image = (*pushImage)(nil)
