package engine

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/client"
	v1 "github.com/google/go-containerregistry/pkg/v1"
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
	log = logging.OrDiscard(log)
	images, err := readSaveManifest(ctx, tarPath)
	if err != nil {
		return LoadResult{}, fmt.Errorf("load %s: %w", tarPath, err)
	}
	f, err := os.Open(tarPath)
	if err != nil {
		return LoadResult{}, fmt.Errorf("load %s: %w", tarPath, err)
	}
	defer f.Close()
	if _, err := imageLoad(ctx, cli, f, log); err != nil {
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

// imageLoad sends a docker-save stream to the daemon and reads its answer
// to the end (errors arrive inside it).
func imageLoad(ctx context.Context, cli Client, r io.Reader, log *logrus.Entry) (StreamResult, error) {
	resp, err := cli.ImageLoad(ctx, r, client.ImageLoadWithQuiet(true))
	if err != nil {
		return StreamResult{}, err
	}
	defer resp.Body.Close()
	if !resp.JSON {
		// Old daemons answer plain text; it still must be read to the end.
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return StreamResult{}, fmt.Errorf("reading answer: %w", err)
		}
		var res StreamResult
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l != "" {
				log.Info(l)
				res.Output = append(res.Output, l)
			}
		}
		return res, nil
	}
	return readBody(ctx, resp.Body, log)
}

// saveManifest is one entry of a docker-save manifest.json.
type saveManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// readSaveManifest reads manifest.json and hashes the config blobs it names.
func readSaveManifest(ctx context.Context, tarPath string) ([]LoadedImage, error) {
	manifests, configs, err := readSave(ctx, tarPath)
	if err != nil {
		return nil, err
	}
	images := make([]LoadedImage, 0, len(manifests))
	for _, m := range manifests {
		images = append(images, LoadedImage{ID: digestOf(configs[baseimage.CleanName(m.Config)]), RepoTags: m.RepoTags})
	}
	return images, nil
}

// readSave reads manifest.json and the config blobs it names, by entry
// name (in a second pass: entry order is not fixed; uncompressed tarballs
// skip layer content by seeking).
func readSave(ctx context.Context, tarPath string) ([]saveManifest, map[string][]byte, error) {
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
		return nil, nil, err
	}
	if manifests == nil {
		return nil, nil, errors.New("no manifest.json: not a docker-save tarball")
	}
	if len(manifests) == 0 {
		return nil, nil, errors.New("manifest.json lists no images")
	}
	configs := map[string][]byte{}
	for i, m := range manifests {
		if m.Config == "" {
			return nil, nil, fmt.Errorf("manifest.json entry %d has no Config", i)
		}
		configs[baseimage.CleanName(m.Config)] = nil
	}
	left := len(configs)
	err = walkTar(ctx, tarPath, func(name string, r io.Reader) (bool, error) {
		if c, ok := configs[name]; !ok || c != nil {
			return false, nil
		}
		b, err := io.ReadAll(io.LimitReader(r, baseimage.MaxConfig+1))
		if err != nil {
			return true, fmt.Errorf("reading config %s: %w", name, err)
		}
		if len(b) > baseimage.MaxConfig {
			return true, fmt.Errorf("config %s is larger than %d bytes", name, baseimage.MaxConfig)
		}
		configs[name] = b
		left--
		return left == 0, nil
	})
	if err != nil {
		return nil, nil, err
	}
	for _, m := range manifests {
		if configs[baseimage.CleanName(m.Config)] == nil {
			return nil, nil, fmt.Errorf("config %s named in manifest.json is not in the tarball", m.Config)
		}
	}
	return manifests, configs, nil
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// walkTar calls fn for every regular file until fn reports it is done.
func walkTar(ctx context.Context, tarPath string, fn func(name string, r io.Reader) (done bool, err error)) error {
	r, closeTar, err := baseimage.OpenTar(tarPath)
	if err != nil {
		return err
	}
	defer closeTar()
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
		done, err := fn(baseimage.CleanName(h.Name), tr)
		if err != nil || done {
			return err
		}
	}
}

// Base is a base image loaded from a folder and tagged with the name FROM
// uses (when the folder or its entry gives one).
type Base struct {
	// ID is the image's ID in the daemon.
	ID string
	// FolderID is the ID of the image as the folder holds it (its config
	// digest, checked against the folder's image-id or digest file). It
	// differs from ID when the image was loaded with the build platform
	// (LoadOptions.Platform).
	FolderID   string
	Repository string // empty: loaded by ID only
	Tag        string
}

// Ref is "repository:tag", the name a Dockerfile's FROM uses; the image ID
// when the base has no name.
func (b Base) Ref() string {
	if b.Repository == "" {
		return b.ID
	}
	return b.Repository + ":" + b.Tag
}

// Files of a folder written by a get with save.
const (
	BaseImageFile      = baseimage.ImageFile
	BaseImageIDFile    = baseimage.ImageIDFile
	BaseRepositoryFile = baseimage.RepositoryFile
	BaseTagFile        = baseimage.TagFile
)

// LoadBase recognises dir's layout (pkg/baseimage) and loads it as
// LoadFolder does, with the name its files give.
func LoadBase(ctx context.Context, cli Client, dir string, log *logrus.Entry) (Base, error) {
	f, err := baseimage.Detect(dir, baseimage.HostPlatform())
	if err != nil {
		return Base{}, fmt.Errorf("load base: %w", err)
	}
	return LoadFolder(ctx, cli, f, LoadOptions{}, log)
}

// LoadOptions say how LoadFolder hands an image to the daemon.
type LoadOptions struct {
	// Platform, when set, is written into a config that names no os or
	// architecture before the image is loaded (baseimage.FillPlatform): the
	// loaded image then has another config and ID than the folder's, with
	// the same layers. BuildKit needs it to take the image for FROM.
	Platform *v1.Platform
	// Seeded says the image is in the daemon already: Seeding wrote it into
	// the layer store before the daemon started. It is then only checked
	// and tagged; should the daemon not have it, it is loaded as usual.
	Seeded bool
	// ContainerdStore: the daemon runs the containerd image store, where
	// a loaded image's ID is its manifest's digest (a manifest the daemon
	// writes for a docker-save stream), not its config's. The image is
	// then found by the ID the load reports and checked by its layers.
	ContainerdStore bool
}

// LoadFolder loads a recognised base folder into the daemon, checks the
// image the folder holds has the ID the folder names (image-id, or
// oci-build-task's config digest) and tags it with the folder's name, so a
// FROM naming it needs no pull. The daemon is given no other name: a
// docker-save tarball's own tags (manifest.json's RepoTags) are left out on
// the way, so one folder cannot move a name another folder gives. Docker-save
// tarballs are streamed to the daemon entry by entry; OCI layouts are
// written as a docker-save stream on the fly (dockerd 20.10 loads nothing
// else), with zstd layers decompressed for daemons before Docker 23, which
// cannot load zstd.
func LoadFolder(ctx context.Context, cli Client, f *baseimage.Folder, o LoadOptions, log *logrus.Entry) (Base, error) {
	l := &folderLoad{ctx: ctx, cli: cli, f: f, log: logging.OrDiscard(log), what: f.Ref()}
	if l.what == "" {
		l.what = "(unnamed)"
	}
	detail := f.Origin + ", " + f.Kind.String()
	if f.Image != nil {
		detail += ", " + f.Image.Platform
	}
	if o.Seeded {
		l.log.Infof("checking base image %s from %s (%s), written into dockerd's layer store before it started", l.what, f.Dir, detail)
	} else {
		l.log.Infof("loading base image %s from %s (%s)", l.what, f.Dir, detail)
	}

	img := l.imageToWrite()
	raw, cfgName, err := l.folderConfig(img)
	if err != nil {
		return Base{}, err
	}
	b := Base{Repository: f.Repository, Tag: f.Tag, FolderID: digestOf(raw)}
	if err := l.checkFolderID(b.FolderID); err != nil {
		return Base{}, err
	}
	config, err := l.configToLoad(raw, o.Platform, b.FolderID)
	if err != nil {
		return Base{}, err
	}
	b.ID = digestOf(config)
	if o.ContainerdStore {
		return l.loadContainerd(b, img, config, cfgName)
	}
	if !l.seeded(o.Seeded, b.ID) {
		if _, err := l.send(img, config, cfgName, b.ID != b.FolderID); err != nil {
			return Base{}, fmt.Errorf("load base %s from %s: %w", l.what, f.Path, err)
		}
	}
	ins, err := cli.ImageInspect(ctx, b.ID)
	if err != nil {
		return Base{}, fmt.Errorf("load base %s: image %s not in the daemon after loading: %w", l.what, b.ID, err)
	}
	if ins.ID != b.ID {
		return Base{}, fmt.Errorf("load base %s: daemon gave ID %s to the image whose config digest is %s", l.what, ins.ID, b.ID)
	}
	if b.Repository == "" {
		// The caller warns when a name was needed (not for params.load).
		l.log.Infof("loaded base image %s without a name (the folder names no repository and tag)", logging.ShortID(b.ID))
		return b, nil
	}
	if err := Tag(ctx, cli, b.ID, b.Repository, b.Tag); err != nil {
		return Base{}, fmt.Errorf("load base %s: %w", l.what, err)
	}
	l.log.Infof("loaded base image %s (%s)", b.Ref(), logging.ShortID(b.ID))
	return b, nil
}

// seeded reports whether the daemon has the image Seeding wrote; a seed it
// lacks (which should not happen) is loaded after all.
func (l *folderLoad) seeded(seeded bool, id string) bool {
	if !seeded {
		return false
	}
	if _, err := l.cli.ImageInspect(l.ctx, id); err != nil {
		l.log.Warnf("load: base %s was written into dockerd's layer store, but dockerd does not have it (%v): loading it with docker load", l.what, err)
		return false
	}
	l.log.Debugf("load: base %s (%s) is in dockerd's layer store already", l.what, logging.ShortID(id))
	return true
}

// folderLoad is one LoadFolder under way; what names the base in messages.
type folderLoad struct {
	ctx  context.Context
	cli  Client
	f    *baseimage.Folder
	log  *logrus.Entry
	what string
}

// imageToWrite is the image to write as a docker-save stream: a layout's,
// or a docker-save tarball's when it has zstd layers an old daemon cannot
// load; nil when the tarball is streamed as it is.
func (l *folderLoad) imageToWrite() *baseimage.Image {
	f := l.f
	if f.Kind != baseimage.DockerSave {
		i := f.Image.Image()
		return &i
	}
	if f.Save != nil && f.Save.HasZstd() && !zstdLoads(l.ctx, l.cli) {
		// A docker-save tarball may carry zstd layers too (gets of zstd
		// images); only then is it rewritten.
		return f.Save
	}
	return nil
}

// folderConfig is the image's config as the folder holds it and, for a
// streamed tarball, the config's entry name in it.
func (l *folderLoad) folderConfig(img *baseimage.Image) (raw []byte, cfgName string, err error) {
	f := l.f
	switch {
	case img != nil:
		return img.RawConfig, "", nil
	case f.Save != nil:
		// Detect read the plain tarball's config in place already.
		return f.Save.RawConfig, f.Save.ConfigName, nil
	}
	manifests, configs, err := readSave(l.ctx, f.Path)
	if err != nil {
		return nil, "", fmt.Errorf("load base %s: %s: %w", l.what, f.Path, err)
	}
	if len(manifests) != 1 {
		return nil, "", fmt.Errorf("load base %s: %s holds %d images, want 1", l.what, f.Path, len(manifests))
	}
	cfgName = baseimage.CleanName(manifests[0].Config)
	return configs[cfgName], cfgName, nil
}

// checkFolderID fails when the folder's image is not the one its image-id
// or digest file names.
func (l *folderLoad) checkFolderID(folderID string) error {
	f := l.f
	if f.ImageID == "" || folderID == f.ImageID {
		return nil
	}
	src := filepath.Join(f.Dir, BaseImageIDFile)
	if f.Kind != baseimage.DockerSave || filepath.Base(f.Path) != BaseImageFile {
		src = filepath.Join(f.Dir, baseimage.DigestFile)
	}
	return fmt.Errorf("load base %s: %s holds image %s, but %s says %s: the folder was changed or mixed after it was written; fetch it again", l.what, f.Path, folderID, src, f.ImageID)
}

// configToLoad is the config the daemon gets: raw, or with the platform
// filled in when it names none (see LoadOptions.Platform).
func (l *folderLoad) configToLoad(raw []byte, platform *v1.Platform, folderID string) ([]byte, error) {
	if platform == nil {
		return raw, nil
	}
	filled, changed, err := baseimage.FillPlatform(raw, *platform)
	if err != nil {
		return nil, fmt.Errorf("load base %s: %s: %w", l.what, l.f.Path, err)
	}
	if !changed {
		return raw, nil
	}
	l.log.Infof("base %s: its config names no os/architecture, so BuildKit would not take it for FROM (it would go to the registry for it); loading it as %s with the build platform %s (the same layers; the folder's image is %s)",
		l.what, logging.ShortID(digestOf(filled)), platformString(*platform), logging.ShortID(folderID))
	return filled, nil
}

// send streams the image into the daemon: img written as a docker-save
// stream with config (zstd layers decompressed for an old daemon), or the
// folder's tarball copied with its config entry cfgName replaced when
// replaced is set.
func (l *folderLoad) send(img *baseimage.Image, config []byte, cfgName string, replaced bool) (StreamResult, error) {
	ctx, f := l.ctx, l.f
	if img != nil {
		load := *img
		load.RawConfig = config
		decompress := load.HasZstd() && !zstdLoads(ctx, l.cli)
		if decompress {
			l.log.Infof("base %s has zstd layers, which this dockerd cannot load (Docker 23 and later can): loading them decompressed", l.what)
		}
		return loadStream(ctx, l.cli, func(w io.Writer) error { return baseimage.WriteDockerSave(ctx, w, load, decompress) }, l.log)
	}
	var replace map[string][]byte
	if replaced {
		replace = map[string][]byte{cfgName: config}
	}
	return loadStream(ctx, l.cli, func(w io.Writer) error { return baseimage.CopySave(ctx, w, f.Path, replace) }, l.log)
}

func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// loadStream sends what write writes (a docker-save stream) straight into
// ImageLoad: no temporary copy of the layers.
func loadStream(ctx context.Context, cli Client, write func(io.Writer) error, log *logrus.Entry) (StreamResult, error) {
	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	go func() {
		err := write(pw)
		pw.CloseWithError(err)
		werr <- err
	}()
	res, err := imageLoad(ctx, cli, pr, log)
	// Unblock the writer if the daemon stopped reading early.
	pr.CloseWithError(errors.New("the daemon stopped reading the image"))
	if wErr := <-werr; wErr != nil && !errors.Is(wErr, io.ErrClosedPipe) && err == nil {
		return res, fmt.Errorf("writing the image for the daemon: %w", wErr)
	} else if wErr != nil && err != nil && !errors.Is(wErr, io.ErrClosedPipe) {
		return res, fmt.Errorf("%w (writing the image: %v)", err, wErr)
	}
	return res, err
}

// zstdLoads reports whether the daemon can load zstd layers: Docker 23 and
// later can. An unknown version counts as "cannot" (decompressing is safe).
func zstdLoads(ctx context.Context, cli Client) bool {
	v, ok := cli.(interface {
		ServerVersion(context.Context) (types.Version, error)
	})
	if !ok {
		return false
	}
	sv, err := v.ServerVersion(ctx)
	if err != nil {
		return false
	}
	major, _, _ := strings.Cut(sv.Version, ".")
	n, err := strconv.Atoi(major)
	return err == nil && n >= 23
}

// Tag names image (an ID or a name) repo:tag.
func Tag(ctx context.Context, cli Client, image, repo, tag string) error {
	if err := cli.ImageTag(ctx, image, repo+":"+tag); err != nil {
		return fmt.Errorf("tag %s as %s:%s: %w", logging.ShortID(image), repo, tag, err)
	}
	return nil
}
