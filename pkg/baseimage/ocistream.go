package baseimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations an OCI layout's index.json entry carries: containerd's
// importer names the image it loads by the first.
const (
	annotationImageName = "io.containerd.image.name"
	annotationRefName   = "org.opencontainers.image.ref.name"
)

// OCIIndex is images as one new OCI index, named for a load: what a
// dockerd on the containerd image store loads as one multi-platform image.
type OCIIndex struct {
	images []*LayoutImage
	raw    []byte
	top    []byte
	// Digest is the new index's: the image ID such a dockerd gives it.
	Digest v1.Hash
}

// NewOCIIndex makes the index of images under name (a full reference,
// "registry.example.com/team/base:1") and tag. Manifests, configs and
// layers stay as the layout holds them, so every digest below the index is
// the registry's.
func NewOCIIndex(images []*LayoutImage, name, tag string) (*OCIIndex, error) {
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for _, img := range images {
		d := img.Descriptor
		d.Platform = &v1.Platform{OS: img.Config.OS, Architecture: img.Config.Architecture, Variant: img.Config.Variant}
		d.Annotations = nil
		idx.Manifests = append(idx.Manifests, d)
	}
	rawIdx, err := json.Marshal(idx)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(rawIdx)
	x := &OCIIndex{images: images, raw: rawIdx, Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}
	idxDesc := v1.Descriptor{MediaType: types.OCIImageIndex, Size: int64(len(rawIdx)), Digest: x.Digest,
		Annotations: map[string]string{annotationImageName: name, annotationRefName: tag}}
	if x.top, err = json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{idxDesc}}); err != nil {
		return nil, err
	}
	return x, nil
}

// Write writes the index as an OCI image layout tarball.
func (x *OCIIndex) Write(ctx context.Context, w io.Writer) error {
	images, rawIdx, top := x.images, x.raw, x.top
	tw := tar.NewWriter(w)
	small := func(name string, b []byte) error {
		return writeEntry(tw, name, int64(len(b)), func(w io.Writer) error { _, err := w.Write(b); return err })
	}
	if err := small("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := small("index.json", top); err != nil {
		return err
	}
	written := map[v1.Hash]bool{}
	blob := func(d v1.Hash, size int64, open func() (io.ReadCloser, error)) error {
		if written[d] {
			return nil // a layer two platforms share
		}
		written[d] = true
		return writeEntry(tw, "blobs/"+d.Algorithm+"/"+d.Hex, size, copyFrom(ctx, open, size, "blob "+d.String()))
	}
	inMemory := func(b []byte) func() (io.ReadCloser, error) {
		return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
	if err := blob(x.Digest, int64(len(rawIdx)), inMemory(rawIdx)); err != nil {
		return err
	}
	for _, img := range images {
		if err := blob(img.Descriptor.Digest, int64(len(img.RawManifest)), inMemory(img.RawManifest)); err != nil {
			return err
		}
		if err := blob(img.Manifest.Config.Digest, int64(len(img.RawConfig)), inMemory(img.RawConfig)); err != nil {
			return err
		}
		for i, l := range img.Manifest.Layers {
			if err := blob(l.Digest, img.Layers[i].Size, img.Layers[i].Open); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}
