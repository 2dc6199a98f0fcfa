package resource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/concourse-docker/docker-image-resource/pkg/ctxio"
	"github.com/concourse-docker/docker-image-resource/pkg/download"
	"github.com/concourse-docker/docker-image-resource/pkg/imagefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// LayoutDir is the folder a get with params.platforms writes: the name
// registry-image-resource's format: oci-layout uses, so pkg/baseimage's
// Detect reads it as that layout (and a put's load_base takes the build
// platform's image from it).
const LayoutDir = "oci"

// ociLayoutFile is the oci-layout file of image-spec 1.0, as
// go-containerregistry's layout.Write writes it.
const ociLayoutFile = `{"imageLayoutVersion":"1.0.0"}`

// layoutWriter fills an OCI image layout with the registry's own bytes:
// manifests and configs as fetched, layer blobs as downloaded (hard links
// to the download's files, a copy where the filesystem refuses links).
// index.json comes last, so a layout cut short is no layout.
type layoutWriter struct {
	dir string
}

func newLayoutWriter(dir string) (*layoutWriter, error) {
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	return &layoutWriter{dir: dir}, nil
}

func (w *layoutWriter) blobPath(h v1.Hash) string {
	return filepath.Join(w.dir, "blobs", h.Algorithm, h.Hex)
}

// addImage writes img's manifest (its bytes must hash to digest), config
// and layer blobs; blobDir holds the downloaded layers (download.BlobPath).
// A blob another image already wrote is kept.
func (w *layoutWriter) addImage(ctx context.Context, img v1.Image, digest v1.Hash, blobDir string) error {
	raw, err := img.RawManifest()
	if err != nil {
		return err
	}
	if err := w.addBytes(digest, raw); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	if err := w.addBytes(m.Config.Digest, cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	for _, l := range m.Layers {
		if err := w.addFile(ctx, l.Digest, download.BlobPath(blobDir, l.Digest)); err != nil {
			return fmt.Errorf("layer %s: %w", l.Digest, err)
		}
	}
	return nil
}

// addBytes writes a small blob, checking it is what its digest names: a
// layout's blob is trusted by name later.
func (w *layoutWriter) addBytes(h v1.Hash, b []byte) error {
	if h.Algorithm != "sha256" {
		return fmt.Errorf("digest %s: only sha256 blobs are written", h)
	}
	sum := sha256.Sum256(b)
	if got := hex.EncodeToString(sum[:]); got != h.Hex {
		return fmt.Errorf("blob %s hashes to sha256:%s", h, got)
	}
	p := w.blobPath(h)
	if fi, err := os.Stat(p); err == nil && fi.Size() == int64(len(b)) {
		return nil
	}
	return imagefs.WriteFileAtomic(p, b, 0o644)
}

// addFile puts the downloaded blob src (already checked against its
// digest by pkg/download) into the layout: a hard link costs no space or
// time; across filesystems or where links are refused, a copy.
func (w *layoutWriter) addFile(ctx context.Context, h v1.Hash, src string) error {
	dst := w.blobPath(h)
	if _, err := os.Lstat(dst); err == nil {
		return nil // a layer two platforms share
	}
	if err := os.Link(src, dst); err == nil {
		// pkg/download's files are private (0600); a layout is read by
		// whatever step gets the folder, as the image tarball is.
		return os.Chmod(dst, 0o644)
	} else if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("the downloaded blob %s is missing: %w", src, err)
	}
	return copyFileAtomic(ctx, src, dst)
}

func copyFileAtomic(ctx context.Context, src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := io.Copy(tmp, ctxio.Reader(ctx, in)); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// finish writes oci-layout and then index.json: only now is the folder a
// layout.
func (w *layoutWriter) finish(index []byte) error {
	if err := imagefs.WriteFileAtomic(filepath.Join(w.dir, "oci-layout"), []byte(ociLayoutFile), 0o644); err != nil {
		return err
	}
	return imagefs.WriteFileAtomic(filepath.Join(w.dir, "index.json"), index, 0o644)
}
