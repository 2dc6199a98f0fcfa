package push

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// family is a media type family: a manifest names its config and layers
// with types of one family.
type family int

const (
	docker family = iota
	oci
)

func (f family) String() string {
	if f == oci {
		return "OCI"
	}
	return "Docker"
}

// withArticle is "a Docker" or "an OCI", for the push summary.
func (f family) withArticle() string {
	if f == oci {
		return "an OCI"
	}
	return "a Docker"
}

func (f family) manifest() types.MediaType {
	if f == oci {
		return types.OCIManifestSchema1
	}
	return types.DockerManifestSchema2
}

func (f family) config() types.MediaType {
	if f == oci {
		return types.OCIConfigJSON
	}
	return types.DockerConfigJSON
}

func (f family) layer(c compression.Compression) types.MediaType {
	switch {
	case c == compression.ZStd:
		return types.OCILayerZStd // Docker types cannot say zstd
	case c == compression.None && f == oci:
		return types.OCIUncompressedLayer
	case c == compression.None:
		return types.DockerUncompressedLayer
	case f == oci:
		return types.OCILayer
	}
	return types.DockerLayer
}

// lookupTimeout bounds asking the registry for the base's manifest: the
// answer only picks media type names, and the push must not wait long on it.
const lookupTimeout = 10 * time.Second

// identify finds the base's media type family and, when it can, the
// registry's own manifest (which also proves the layer digests):
//  1. rebuild the manifest as go-containerregistry and docker push write it
//     and compare with the digest file — no network;
//  2. else, with reg (the caller passes it only when the base lives on the
//     target's registry: reachable, with credentials), fetch the manifest
//     (for an index, the entry of the config's platform);
//  3. else zstd layers mean OCI, anything else Docker, as docker push would.
func (b *base) identify(ctx context.Context, reg *registry.Client) {
	if b.fixed {
		return // an OCI layout's manifest says it all
	}
	if b.version == "" {
		b.guess("the folder names no manifest digest")
		return
	}
	want, err := v1.NewHash(b.version)
	if err != nil {
		b.guess("its digest file holds no digest")
		return
	}
	if b.rebuild(want) {
		return
	}
	if reg == nil {
		b.guess("its manifest could not be rebuilt, and it lives on another registry than the target")
		return
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	if err := b.fetch(ctx, reg, want); err != nil {
		b.guess(fmt.Sprintf("its manifest could not be rebuilt or fetched (%s)", reg.Explain(err)))
	}
}

// guess picks the family docker push would, and says why the base's own is
// unknown. familyWhy completes the push summary's "writing a Docker image
// manifest, ...".
func (b *base) guess(why string) {
	b.family, b.familyWhy = docker, "the format docker push writes; the base image's own format is unknown: "+why
	for _, l := range b.layers {
		if l.comp == compression.ZStd {
			b.family, b.familyWhy = oci, "as the base image's zstd-compressed layers need; its own format is unknown: "+why
		}
	}
}

// rebuild tries the serialisations of go-containerregistry (compact JSON)
// and of docker and containerd (three-space indent) in both families.
func (b *base) rebuild(want v1.Hash) bool {
	for _, l := range b.layers {
		if l.digest.Hex == "" {
			return false
		}
	}
	for _, f := range []family{docker, oci} {
		m := b.manifest(f)
		compact, err1 := json.Marshal(m)
		indented, err2 := json.MarshalIndent(m, "", "   ")
		if err1 != nil || err2 != nil {
			return false
		}
		for _, raw := range [][]byte{compact, indented} {
			if sha256Hash(raw) == want {
				b.family, b.familyWhy, b.raw, b.verified = f, "the base image's own format (the base folder's files rebuild its manifest exactly, digest "+want.String()[:19]+")", raw, true
				return true
			}
		}
	}
	return false
}

func (b *base) manifest(f family) *v1.Manifest {
	m := &v1.Manifest{
		SchemaVersion: 2,
		MediaType:     f.manifest(),
		Config:        v1.Descriptor{MediaType: f.config(), Size: int64(len(b.config)), Digest: b.id},
	}
	for _, l := range b.layers {
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: f.layer(l.comp), Size: l.size, Digest: l.digest})
	}
	return m
}

// fetch asks the registry for the version's manifest; for an index, for
// the manifest of the config's platform.
func (b *base) fetch(ctx context.Context, reg *registry.Client, digest v1.Hash) error {
	desc, err := reg.Get(ctx, b.repo, digest)
	if err != nil {
		return err
	}
	if desc.MediaType.IsIndex() {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
		if err != nil {
			return fmt.Errorf("parsing index %s: %w", digest, err)
		}
		cfg, err := v1.ParseConfigFile(bytes.NewReader(b.config))
		if err != nil {
			return err
		}
		for _, d := range idx.Manifests {
			if p := d.Platform; p != nil && p.OS == cfg.OS && p.Architecture == cfg.Architecture && (cfg.Variant == "" || p.Variant == cfg.Variant) {
				return b.fetch(ctx, reg, d.Digest)
			}
		}
		return fmt.Errorf("index %s has no %s/%s entry", digest, cfg.OS, cfg.Architecture)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return fmt.Errorf("parsing manifest %s: %w", digest, err)
	}
	if m.Config.Digest != b.id || len(m.Layers) != len(b.layers) {
		return fmt.Errorf("manifest %s is not the saved image %s", digest, b.id)
	}
	f := docker
	if desc.MediaType == types.OCIManifestSchema1 {
		f = oci
	}
	verified := true
	for i, l := range b.layers {
		if m.Layers[i].Digest != l.digest || m.Layers[i].Size != l.size {
			verified = false // the bytes will be hashed instead
		}
	}
	b.family, b.familyWhy, b.verified = f, "the base image's own format (its manifest "+digest.String()[:19]+", read from the registry)", verified
	if verified {
		b.raw = desc.Manifest
	}
	return nil
}
