package engine

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/docker/docker/client"
	"github.com/sirupsen/logrus"
)

// LoadedImage is one image of a docker-save tarball as the daemon holds it.
type LoadedImage struct {
	// ID is the config digest ("sha256:..."): the image ID on the classic
	// image store.
	ID string
	// RepoTags are the names the tarball gave the image (may be empty).
	RepoTags []string
}

// LoadResult is what Load put into the daemon, in manifest.json order.
type LoadResult struct {
	Images []LoadedImage
}

// Load loads a docker-save tarball (plain or gzip) into the daemon. The IDs
// come from the tarball's manifest.json and config blobs (the load stream
// names no IDs when the tarball has tags), checked with ImageInspect.
func Load(ctx context.Context, cli Client, tarPath string, log *logrus.Entry) (LoadResult, error) {
	log = orDiscard(log)
	images, err := readSaveManifest(ctx, tarPath)
	if err != nil {
		return LoadResult{}, fmt.Errorf("load %s: %w", tarPath, err)
	}
	f, err := os.Open(tarPath)
	if err != nil {
		return LoadResult{}, fmt.Errorf("load %s: %w", tarPath, err)
	}
	defer f.Close()
	resp, err := cli.ImageLoad(ctx, f, client.ImageLoadWithQuiet(true))
	if err != nil {
		return LoadResult{}, fmt.Errorf("load %s: %w", tarPath, err)
	}
	if !resp.JSON {
		// Old daemons answer plain text; it still must be read to the end.
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return LoadResult{}, fmt.Errorf("load %s: reading answer: %w", tarPath, err)
		}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l != "" {
				log.Info(l)
			}
		}
	} else if _, err := readBody(ctx, resp.Body, log); err != nil {
		return LoadResult{}, fmt.Errorf("load %s: %w", tarPath, err)
	}
	for _, img := range images {
		ins, err := cli.ImageInspect(ctx, img.ID)
		if err != nil {
			return LoadResult{}, fmt.Errorf("load %s: image %s not in the daemon after loading: %w", tarPath, img.ID, err)
		}
		if ins.ID != img.ID {
			return LoadResult{}, fmt.Errorf("load %s: daemon gave ID %s to the image whose config digest is %s", tarPath, ins.ID, img.ID)
		}
		for _, t := range img.RepoTags {
			ti, err := cli.ImageInspect(ctx, t)
			if err != nil {
				return LoadResult{}, fmt.Errorf("load %s: tag %s not in the daemon after loading: %w", tarPath, t, err)
			}
			if ti.ID != img.ID {
				return LoadResult{}, fmt.Errorf("load %s: tag %s points at %s, not at the loaded %s", tarPath, t, ti.ID, img.ID)
			}
		}
	}
	return LoadResult{Images: images}, nil
}

// saveManifest is one entry of a docker-save manifest.json.
type saveManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// readSaveManifest reads manifest.json and hashes the config blobs it names
// (in a second pass: entry order is not fixed; uncompressed tarballs skip
// layer content by seeking).
func readSaveManifest(ctx context.Context, tarPath string) ([]LoadedImage, error) {
	var manifests []saveManifest
	err := walkTar(ctx, tarPath, func(name string, r io.Reader) (bool, error) {
		if name != "manifest.json" {
			return false, nil
		}
		if err := json.NewDecoder(r).Decode(&manifests); err != nil {
			return true, fmt.Errorf("parsing manifest.json: %w", err)
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if manifests == nil {
		return nil, errors.New("no manifest.json: not a docker-save tarball")
	}
	if len(manifests) == 0 {
		return nil, errors.New("manifest.json lists no images")
	}
	digests := map[string]string{}
	for i, m := range manifests {
		if m.Config == "" {
			return nil, fmt.Errorf("manifest.json entry %d has no Config", i)
		}
		digests[cleanTarName(m.Config)] = ""
	}
	err = walkTar(ctx, tarPath, func(name string, r io.Reader) (bool, error) {
		if _, ok := digests[name]; !ok {
			return false, nil
		}
		h := sha256.New()
		if _, err := io.Copy(h, r); err != nil {
			return true, fmt.Errorf("reading config %s: %w", name, err)
		}
		digests[name] = "sha256:" + hex.EncodeToString(h.Sum(nil))
		for _, d := range digests {
			if d == "" {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	images := make([]LoadedImage, 0, len(manifests))
	for _, m := range manifests {
		id := digests[cleanTarName(m.Config)]
		if id == "" {
			return nil, fmt.Errorf("config %s named in manifest.json is not in the tarball", m.Config)
		}
		images = append(images, LoadedImage{ID: id, RepoTags: m.RepoTags})
	}
	return images, nil
}

// walkTar calls fn for every regular file until fn reports it is done.
func walkTar(ctx context.Context, tarPath string, fn func(name string, r io.Reader) (done bool, err error)) error {
	f, err := os.Open(tarPath)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var r io.Reader = f
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("opening gzip: %w", err)
		}
		defer zr.Close()
		r = zr
	} else if _, err := f.Seek(0, io.SeekStart); err != nil {
		// Peek read ahead; rewind so tar reads f itself and can seek.
		return err
	}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading tarball: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		done, err := fn(cleanTarName(h.Name), tr)
		if err != nil || done {
			return err
		}
	}
}

func cleanTarName(n string) string {
	return strings.TrimPrefix(path.Clean("/"+n), "/")
}

// Base is a base image loaded from a get-with-save folder and tagged as its
// repository and tag.
type Base struct {
	ID         string
	Repository string
	Tag        string
}

// Ref is "repository:tag", the name a Dockerfile's FROM uses.
func (b Base) Ref() string { return b.Repository + ":" + b.Tag }

// Files of a folder written by a get with save.
const (
	BaseImageFile      = "image"
	BaseImageIDFile    = "image-id"
	BaseRepositoryFile = "repository"
	BaseTagFile        = "tag"
)

// LoadBase loads the image of a get-with-save folder (files image, image-id,
// repository, tag), checks it got the ID image-id names, and tags it
// repository:tag, so a FROM naming it needs no pull.
func LoadBase(ctx context.Context, cli Client, dir string, log *logrus.Entry) (Base, error) {
	log = orDiscard(log)
	vals := map[string]string{}
	for _, name := range []string{BaseImageIDFile, BaseRepositoryFile, BaseTagFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			return Base{}, missingBaseFile(dir, name)
		}
		if err != nil {
			return Base{}, fmt.Errorf("load base %s: %w", dir, err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return Base{}, fmt.Errorf("load base %s: file %q is empty", dir, name)
		}
		vals[name] = v
	}
	imgPath := filepath.Join(dir, BaseImageFile)
	if _, err := os.Stat(imgPath); errors.Is(err, os.ErrNotExist) {
		return Base{}, missingBaseFile(dir, BaseImageFile)
	} else if err != nil {
		return Base{}, fmt.Errorf("load base %s: %w", dir, err)
	}
	want := vals[BaseImageIDFile]
	if !strings.HasPrefix(want, "sha256:") {
		want = "sha256:" + want
	}
	b := Base{ID: want, Repository: vals[BaseRepositoryFile], Tag: vals[BaseTagFile]}

	log.Infof("loading base image %s from %s", b.Ref(), dir)
	res, err := Load(ctx, cli, imgPath, log)
	if err != nil {
		return Base{}, fmt.Errorf("load base %s: %w", b.Ref(), err)
	}
	if len(res.Images) != 1 {
		return Base{}, fmt.Errorf("load base %s: %s holds %d images, want 1", b.Ref(), imgPath, len(res.Images))
	}
	if got := res.Images[0].ID; got != want {
		return Base{}, fmt.Errorf("load base %s: %s loaded as image %s, but %s says %s", b.Ref(), imgPath, got, filepath.Join(dir, BaseImageIDFile), want)
	}
	if err := Tag(ctx, cli, b.ID, b.Repository, b.Tag); err != nil {
		return Base{}, fmt.Errorf("load base %s: %w", b.Ref(), err)
	}
	log.Infof("loaded base image %s (%s)", b.Ref(), ShortID(b.ID))
	return b, nil
}

func missingBaseFile(dir, name string) error {
	return fmt.Errorf("load base %s: no file %q in it: was it fetched by a get step with save: true?", dir, name)
}

// Tag names image (an ID or a name) repo:tag.
func Tag(ctx context.Context, cli Client, image, repo, tag string) error {
	if err := cli.ImageTag(ctx, image, repo+":"+tag); err != nil {
		return fmt.Errorf("tag %s as %s:%s: %w", ShortID(image), repo, tag, err)
	}
	return nil
}

// ShortID is the 12-hex-digit form of an image ID; other strings unchanged.
func ShortID(id string) string {
	s := strings.TrimPrefix(id, "sha256:")
	if len(s) == 64 && s != id {
		return s[:12]
	}
	return id
}
