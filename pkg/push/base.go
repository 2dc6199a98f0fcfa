package push

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/ctxio"
	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// base is a base folder (pkg/baseimage: a get with save: true,
// registry-image-resource's oci or oci-layout format, oci-build-task's
// output), indexed so every layer's original compressed blob can be read in
// place: inside a docker-save or OCI-layout tarball, or as a layout's file.
type base struct {
	dir     string
	tarball string         // the image's file: a tarball, or a layout folder
	kind    baseimage.Kind // how it is stored
	id      v1.Hash        // config digest: the image ID docker load gives
	repo    string         // repository file, as users write it; may be empty
	tag     string
	version string // digest file: the manifest (or index) digest; may be empty
	config  []byte
	layers  []*baseBlob // in rootfs order

	// Set by identify: the media type family, and how it was found.
	family    family
	familyWhy string
	// raw is the registry's own manifest when it could be rebuilt or
	// fetched; pushing it unchanged keeps the base's manifest digest.
	raw []byte
	// verified: every layer digest was proven (by the manifest digest or by
	// hashing), so the manifest may name them.
	verified bool
	// fixed: the family and raw manifest are known (an OCI layout holds
	// the registry's own manifest); identify has nothing to find.
	fixed bool
}

// baseBlob is one layer of a base as the registry stores it.
type baseBlob struct {
	base   *base
	diffID v1.Hash
	// digest comes from the tarball's file name (tarball.Write names layers
	// by digest); zero when the name does not say, until verify hashes it.
	digest v1.Hash
	size   int64
	file   string // the tarball or the layout's blob file
	offset int64  // of the blob's bytes inside file
	comp   compression.Compression
	// fetch, when set, reads the blob from the registry instead (a layer
	// dockerd pulled: there is no file).
	fetch func() (io.ReadCloser, error)
}

// saveManifest is one entry of a docker-save manifest.json.
type saveManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// blobName is how tarball.Write names a layer: its digest's hex and an
// extension for the compression.
var blobName = regexp.MustCompile(`^([0-9a-f]{64})(\.tar|\.tar\.gz|\.tar\.zst)$`)

// readBase indexes dir's image. It reads only tar headers, manifests, the
// config and four bytes of each layer: no blob is read in full here.
func readBase(dir string) (*base, error) {
	bf, err := baseimage.Detect(dir, baseimage.HostPlatform())
	if err != nil {
		return nil, err
	}
	b := &base{dir: dir, tarball: bf.Path, kind: bf.Kind, repo: bf.Repository, tag: bf.Tag, version: bf.ManifestDigest}
	if bf.Image != nil {
		return layoutBase(b, bf.Image)
	}
	// Detect read the tarball in place (manifest.json, config, layer
	// offsets) and checked the ID the folder names; nil when compressed.
	img := bf.Save
	if img == nil {
		return nil, fmt.Errorf("%s: the tarball is compressed; its blobs cannot be read in place", b.tarball)
	}
	if img.Foreign {
		return nil, errors.New("it has foreign (non-distributable) layers")
	}
	b.config = img.RawConfig
	b.id = sha256Hash(b.config)
	cfg, err := v1.ParseConfigFile(bytes.NewReader(b.config))
	if err != nil {
		return nil, fmt.Errorf("%s: parsing config: %w", b.tarball, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(img.Layers) {
		return nil, fmt.Errorf("%s: config names %d layers, manifest.json %d", b.tarball, len(cfg.RootFS.DiffIDs), len(img.Layers))
	}
	f, err := os.Open(b.tarball)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	for i, bl := range img.Layers {
		name := img.LayerNames[i]
		l := &baseBlob{base: b, diffID: cfg.RootFS.DiffIDs[i], size: bl.Size, file: bl.File, offset: bl.Offset}
		if sm := blobName.FindStringSubmatch(path.Base(name)); sm != nil {
			l.digest = v1.Hash{Algorithm: "sha256", Hex: sm[1]}
		}
		if l.comp, err = sniff(f, baseimage.TarEntry{Offset: bl.Offset, Size: bl.Size}); err != nil {
			return nil, fmt.Errorf("%s: layer %s: %w", b.tarball, name, err)
		}
		b.layers = append(b.layers, l)
	}
	return b, nil
}

// layoutBase is an OCI layout's chosen image: its manifest is the
// registry's own, so its media types and bytes are kept.
func layoutBase(b *base, img *baseimage.LayoutImage) (*base, error) {
	b.config, b.id, b.raw, b.fixed = img.RawConfig, img.ID, img.RawManifest, true
	b.family, b.familyWhy = docker, "the base image's own format (its manifest in the OCI layout)"
	if img.Descriptor.MediaType == types.OCIManifestSchema1 || img.Manifest.MediaType == types.OCIManifestSchema1 {
		b.family = oci
	}
	for i, d := range img.Manifest.Layers {
		bl := img.Layers[i]
		l := &baseBlob{base: b, diffID: img.Config.RootFS.DiffIDs[i], digest: d.Digest, size: bl.Size, file: bl.File, offset: bl.Offset}
		f, err := os.Open(bl.File)
		if err != nil {
			return nil, err
		}
		l.comp, err = sniff(f, baseimage.TarEntry{Offset: bl.Offset, Size: bl.Size})
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", d.Digest, err)
		}
		b.layers = append(b.layers, l)
	}
	return b, nil
}

// sniff tells a blob's compression from its first bytes.
func sniff(f io.ReaderAt, e baseimage.TarEntry) (compression.Compression, error) {
	var m [4]byte
	n, err := f.ReadAt(m[:min(4, e.Size)], e.Offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	switch {
	case n >= 2 && m[0] == 0x1f && m[1] == 0x8b:
		return compression.GZip, nil
	case n == 4 && m == [4]byte{0x28, 0xb5, 0x2f, 0xfd}:
		return compression.ZStd, nil
	}
	return compression.None, nil
}

// open reads the blob's bytes from the tarball or layout.
func (l *baseBlob) open() (io.ReadCloser, error) {
	if l.fetch != nil {
		return l.fetch()
	}
	return baseimage.Blob{File: l.file, Offset: l.offset, Size: l.size}.Open()
}

// verify hashes every layer whose digest is not proven yet: a tarball whose
// file names lie must not make the manifest name blobs it does not hold.
func (b *base) verify(ctx context.Context) error {
	if b.verified {
		return nil
	}
	for _, l := range b.layers {
		rc, err := l.open()
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.Copy(h, ctxio.Reader(ctx, rc))
		rc.Close()
		if err != nil {
			return fmt.Errorf("hashing layer %s: %w", l.diffID, err)
		}
		got := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
		if l.digest.Hex != "" && got != l.digest {
			return fmt.Errorf("the tarball names a layer blob %s, but its bytes hash to %s", l.digest, got)
		}
		l.digest = got
	}
	b.verified = true
	return nil
}

func sha256Hash(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}
