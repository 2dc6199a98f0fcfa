package baseimage

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Blob is where a blob's bytes lie on disk: a whole file (layout folder) or
// a section of a tarball (layout tarball).
type Blob struct {
	File         string
	Offset, Size int64
}

// Open reads the blob's bytes.
func (b Blob) Open() (io.ReadCloser, error) {
	f, err := os.Open(b.File)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, b.Offset, b.Size), f}, nil
}

// blobs finds the blobs of a layout folder or an uncompressed layout
// tarball, whose entries are indexed once so blobs are read in place.
type blobs struct {
	dir     string
	tarPath string
	entries map[string]TarEntry
}

func openBlobs(p string, kind Kind) (*blobs, error) {
	if kind == OCILayoutDir {
		return &blobs{dir: p}, nil
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	entries, err := IndexTar(f)
	if errors.Is(err, errCompressed) {
		return nil, errors.New("a gzip-compressed OCI layout tarball: decompress it (gunzip) so its blobs can be read in place")
	}
	if err != nil {
		return nil, err
	}
	return &blobs{tarPath: p, entries: entries}, nil
}

func (b *blobs) file(name string) (Blob, error) {
	if b.dir != "" {
		p := filepath.Join(b.dir, filepath.FromSlash(name))
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			return Blob{}, fmt.Errorf("%s is missing", name)
		}
		return Blob{File: p, Size: fi.Size()}, nil
	}
	e, ok := b.entries[name]
	if !ok {
		return Blob{}, fmt.Errorf("%s is missing from the tarball", name)
	}
	return Blob{File: b.tarPath, Offset: e.Offset, Size: e.Size}, nil
}

// locate finds a blob by digest, checking its size against the descriptor's.
func (b *blobs) locate(d v1.Descriptor) (Blob, error) {
	bl, err := b.file("blobs/" + d.Digest.Algorithm + "/" + d.Digest.Hex)
	if err != nil {
		return Blob{}, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	if d.Size > 0 && bl.Size != d.Size {
		return Blob{}, fmt.Errorf("blob %s holds %d bytes, its descriptor says %d", d.Digest, bl.Size, d.Size)
	}
	return bl, nil
}

// read reads a small file whole.
func (b *blobs) read(bl Blob, limit int64) ([]byte, error) {
	if bl.Size > limit {
		return nil, fmt.Errorf("%d bytes, more than the %d expected", bl.Size, limit)
	}
	rc, err := bl.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// readVerified reads a small blob and checks it hashes to its digest.
func (b *blobs) readVerified(d v1.Descriptor) ([]byte, error) {
	bl, err := b.locate(d)
	if err != nil {
		return nil, err
	}
	raw, err := b.read(bl, MaxConfig)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	if d.Digest.Algorithm == "sha256" {
		s := sha256.Sum256(raw)
		if got := hex.EncodeToString(s[:]); got != d.Digest.Hex {
			return nil, fmt.Errorf("blob %s hashes to sha256:%s", d.Digest, got)
		}
	}
	return raw, nil
}

// LayoutImage is the chosen image of an OCI layout.
type LayoutImage struct {
	// Manifest is the image manifest, RawManifest its bytes, Descriptor
	// what pointed at it.
	Descriptor  v1.Descriptor
	Manifest    *v1.Manifest
	RawManifest []byte
	// Config and RawConfig are the image config; ID is its digest, the
	// image ID docker load gives.
	Config    *v1.ConfigFile
	RawConfig []byte
	ID        v1.Hash
	// Layers are where each layer blob lies, in manifest order.
	Layers []Blob
	// Platform is os/arch[/variant] of the chosen image.
	Platform string
}

// HostPlatform is the build platform: linux and the machine's architecture
// (the daemon runs on this machine).
func HostPlatform() v1.Platform {
	p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	switch runtime.GOARCH {
	case "arm":
		p.Variant = "v7"
	case "arm64":
		p.Variant = "v8"
	}
	return p
}

func platformString(p *v1.Platform) string {
	if p == nil || p.OS == "" {
		return "unknown platform"
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// candidate is an image manifest reachable from index.json.
type candidate struct {
	desc     v1.Descriptor
	platform *v1.Platform // from the descriptor; nil when it says none
}

// OpenLayout reads a layout's index.json, picks the image for platform
// (an index entry, or the only image), and reads its manifest and config.
func OpenLayout(p string, kind Kind, platform v1.Platform) (*LayoutImage, error) {
	b, cands, err := layoutCandidates(p, kind)
	if err != nil {
		return nil, err
	}
	c, err := choose(cands, platform)
	if err != nil {
		return nil, err
	}
	return readImage(b, c)
}

// layoutCandidates reads a layout's index.json down to its image
// manifests.
func layoutCandidates(p string, kind Kind) (*blobs, []candidate, error) {
	b, err := openBlobs(p, kind)
	if err != nil {
		return nil, nil, err
	}
	ibl, err := b.file("index.json")
	if err != nil {
		return nil, nil, err
	}
	raw, err := b.read(ibl, 16<<20)
	if err != nil {
		return nil, nil, fmt.Errorf("index.json: %w", err)
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, nil, fmt.Errorf("parsing index.json: %w", err)
	}
	var cands []candidate
	if err := collect(b, idx, 0, &cands); err != nil {
		return nil, nil, err
	}
	return b, cands, nil
}

// collect walks indexes (a layout may point at a multi-platform index)
// down to image manifests.
func collect(b *blobs, idx *v1.IndexManifest, depth int, out *[]candidate) error {
	if depth > 4 {
		return errors.New("indexes nested more than 4 deep")
	}
	for _, d := range idx.Manifests {
		switch {
		case d.MediaType.IsImage():
			*out = append(*out, candidate{desc: d, platform: d.Platform})
		case d.MediaType.IsIndex():
			raw, err := b.readVerified(d)
			if err != nil {
				return err
			}
			sub, err := v1.ParseIndexManifest(bytes.NewReader(raw))
			if err != nil {
				return fmt.Errorf("parsing index %s: %w", d.Digest, err)
			}
			if err := collect(b, sub, depth+1, out); err != nil {
				return err
			}
		}
		// Anything else (signatures, artifacts) is not an image to load.
	}
	return nil
}

// choose picks the image for want: with one image, that one; else the
// entry of want's OS and architecture, preferring its variant.
func choose(cands []candidate, want v1.Platform) (candidate, error) {
	if len(cands) == 0 {
		return candidate{}, errors.New("index.json names no image manifest")
	}
	if len(cands) == 1 {
		return cands[0], nil
	}
	var match []candidate
	for _, c := range cands {
		if c.platform != nil && c.platform.OS == want.OS && c.platform.Architecture == want.Architecture {
			match = append(match, c)
		}
	}
	for _, c := range match {
		if c.platform.Variant == want.Variant {
			return c, nil
		}
	}
	if len(match) > 0 {
		return match[0], nil
	}
	var have []string
	for _, c := range cands {
		have = append(have, platformString(c.platform))
	}
	return candidate{}, fmt.Errorf("it holds no image for the build platform %s, only: %s", platformString(&want), strings.Join(have, ", "))
}

func readImage(b *blobs, c candidate) (*LayoutImage, error) {
	raw, err := b.readVerified(c.desc)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parsing manifest %s: %w", c.desc.Digest, err)
	}
	cfgRaw, err := b.readVerified(m.Config)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(cfgRaw))
	if err != nil {
		return nil, fmt.Errorf("parsing config %s: %w", m.Config.Digest, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("manifest %s names %d layers, its config %d", c.desc.Digest, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	img := &LayoutImage{Descriptor: c.desc, Manifest: m, RawManifest: raw, Config: cfg, RawConfig: cfgRaw, ID: m.Config.Digest}
	if img.Descriptor.MediaType == "" {
		img.Descriptor.MediaType = m.MediaType
	}
	img.Platform = platformString(&v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant})
	for _, l := range m.Layers {
		if !l.MediaType.IsDistributable() {
			return nil, fmt.Errorf("layer %s is a foreign (non-distributable) layer, which is not in the layout", l.Digest)
		}
		bl, err := b.locate(l)
		if err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		}
		img.Layers = append(img.Layers, bl)
	}
	return img, nil
}

// LayoutImages reads every image manifest a layout's index.json reaches
// (each platform of a multi-platform index), with its manifest and config:
// what a daemon on the containerd image store loads as one index.
func LayoutImages(p string, kind Kind) ([]*LayoutImage, error) {
	b, cands, err := layoutCandidates(p, kind)
	if err != nil {
		return nil, err
	}
	var out []*LayoutImage
	for _, c := range cands {
		if c.platform == nil || c.platform.OS == "unknown" {
			// Attestations and images without a platform are no base.
			continue
		}
		img, err := readImage(b, c)
		if err != nil {
			return nil, err
		}
		out = append(out, img)
	}
	if len(out) == 0 {
		return nil, errors.New("index.json names no image manifest with a platform")
	}
	return out, nil
}
