package push

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/concourse-docker/docker-image-resource/pkg/layerstore"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
	"github.com/vbatts/tar-split/tar/asm"
	"github.com/vbatts/tar-split/tar/storage"
	"golang.org/x/sync/errgroup"
)

// LayerStore is dockerd's classic image and layer store on disk, where Push
// can read the config and the build's new layers in place instead of
// streaming `docker save` of the whole image, base layers included, out of
// the daemon (seconds per GiB of base).
//
// These are dockerd's private files. Reading them is safe only because the
// put started this dockerd and owns its data root: no other daemon or
// program writes there while the put runs, and a layer never changes once
// committed (its diff ID is the hash of its content). Nothing is written
// there. Every layer read is checked against its diff ID, and anything
// unexpected (another storage driver, the containerd image store, a missing
// or different file) makes Push stream the image as before.
type LayerStore struct {
	Root   string // the data root (dockerd --data-root)
	Driver string // the storage driver: "overlay2" and "vfs" are read
}

// errStore marks what dockerd's layer store cannot give: Push streams the
// image out of the daemon instead.
var errStore = errors.New("dockerd's layer store")

func storeError(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errStore, fmt.Sprintf(format, a...))
}

// storeImage is an image found in the layer store: the config's bytes and
// where each new layer's tar can be rebuilt from.
type storeImage struct {
	config  []byte
	diffIDs []v1.Hash
	layers  []storeLayer // new layers, each diff ID once, in rootfs order
}

// storeLayer is one committed layer: dockerd keeps its files unpacked and
// its tar's headers and padding in a tar-split file, from which the exact
// tar (the bytes its diff ID hashes) is rebuilt, as `docker save` does.
type storeLayer struct {
	diffID   v1.Hash
	tarSplit string // layerdb/sha256/<chain ID>/tar-split.json.gz
	files    string // the layer's own files: overlay2/<cache-id>/diff, vfs/dir/<cache-id>
}

// find checks the store has the config of imageID and, for each layer not
// in known, its tar-split and files. It only reads small files; every
// failure is errStore.
func (s *LayerStore) find(imageID string, known map[v1.Hash]bool) (*storeImage, error) {
	if s.Driver != "overlay2" && s.Driver != "vfs" {
		return nil, storeError("storage driver %q: only overlay2's and vfs's layers are read", s.Driver)
	}
	id, err := v1.NewHash(imageID)
	if err != nil || id.Algorithm != "sha256" {
		return nil, storeError("image ID %q is not a sha256 digest", imageID)
	}
	si := &storeImage{}
	// No such file with the containerd image store (dockerd 26+ with
	// containerd-snapshotter), whose image IDs are manifest digests.
	if si.config, err = os.ReadFile(layerstore.ConfigFile(s.Root, s.Driver, id.String())); err != nil {
		return nil, storeError("the image's config: %v", err)
	}
	if got := sha256Hash(si.config); got != id {
		return nil, storeError("the image's config hashes to %s, not its ID %s", got, id)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(si.config))
	if err != nil {
		return nil, storeError("parsing the image's config: %v", err)
	}
	si.diffIDs = cfg.RootFS.DiffIDs
	seen := map[v1.Hash]bool{}
	chain := ""
	for _, d := range si.diffIDs {
		chain = layerstore.ChainID(chain, d.String())
		if known[d] || seen[d] {
			continue
		}
		seen[d] = true
		l, err := s.layer(layerstore.LayerDBDir(s.Root, s.Driver, chain), d)
		if err != nil {
			return nil, storeError("layer %s: %v", logging.ShortID(d.String()), err)
		}
		si.layers = append(si.layers, l)
	}
	return si, nil
}

// layer is the committed layer whose metadata is in dir (layerdb's folder
// for its chain ID), which must be diffID's.
func (s *LayerStore) layer(dir string, diffID v1.Hash) (storeLayer, error) {
	l := storeLayer{diffID: diffID, tarSplit: filepath.Join(dir, "tar-split.json.gz")}
	diff, err := os.ReadFile(filepath.Join(dir, "diff"))
	if err != nil {
		return l, err
	}
	if got := strings.TrimSpace(string(diff)); got != diffID.String() {
		return l, fmt.Errorf("layerdb says its diff ID is %q", got)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "cache-id"))
	if err != nil {
		return l, err
	}
	cacheID := strings.TrimSpace(string(raw))
	if cacheID == "" || cacheID != filepath.Base(cacheID) || cacheID == "." || cacheID == ".." {
		return l, fmt.Errorf("cache-id %q is not a folder name", cacheID)
	}
	l.files = layerstore.LayerFiles(s.Root, s.Driver, cacheID)
	if fi, err := os.Stat(l.files); err != nil || !fi.IsDir() {
		return l, fmt.Errorf("its files: %v", orNotDir(err, l.files))
	}
	if fi, err := os.Stat(l.tarSplit); err != nil || !fi.Mode().IsRegular() {
		return l, fmt.Errorf("its tar-split: %v", orNotRegular(err, l.tarSplit))
	}
	return l, nil
}

func orNotDir(err error, p string) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%s is not a folder", p)
}

func orNotRegular(err error, p string) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("%s is not a file", p)
}

// read rebuilds each new layer's tar and compresses it into dir, as many
// layers at once as there are CPUs. A layer whose rebuilt tar does not
// hash to its diff ID is errStore; so is any read of the store that fails.
// On failure the files written so far are removed.
func (si *storeImage) read(ctx context.Context, dir string) (*saved, error) {
	s := &saved{config: si.config, diffIDs: si.diffIDs, fresh: map[v1.Hash]*freshLayer{}, from: FromLayerStore}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.NumCPU())
	for _, l := range si.layers {
		g.Go(func() error {
			f, err := l.compress(gctx, dir)
			if err != nil {
				return err
			}
			mu.Lock()
			s.fresh[l.diffID], s.streamed = f, s.streamed+f.rawSize
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		for _, f := range s.fresh {
			os.Remove(f.path)
		}
		return nil, err
	}
	return s, nil
}

// compress rebuilds the layer's tar with tar-split, the library dockerd
// itself rebuilds it with (its files for the payloads, the tar-split for
// everything else), hashes it and gzips it into dir. Newer dockerd reads
// overlay2 payloads through the mounted layer rather than its diff folder;
// a committed layer's diff folder holds those very files (the layer was
// untarred there), and the diff ID check catches any case where it does
// not.
func (l storeLayer) compress(ctx context.Context, dir string) (*freshLayer, error) {
	ts, err := os.Open(l.tarSplit)
	if err != nil {
		return nil, storeError("layer %s: %v", logging.ShortID(l.diffID.String()), err)
	}
	defer ts.Close()
	zr, err := gzip.NewReader(ts)
	if err != nil {
		return nil, storeError("layer %s: its tar-split: %v", logging.ShortID(l.diffID.String()), err)
	}
	defer zr.Close()
	raw := sha256.New()
	var out *sink
	f, err := gzipFile(dir, func(w io.Writer) error {
		out = &sink{ctx: ctx, w: io.MultiWriter(raw, w)}
		return asm.WriteOutputTarStream(layerFiles{l.files}, storage.NewJSONUnpacker(zr), out)
	})
	switch {
	case err != nil && out != nil && out.err != nil:
		return nil, out.err // writing the temp file, or ctx: nothing the store did
	case err != nil:
		return nil, storeError("layer %s: rebuilding its tar: %v", logging.ShortID(l.diffID.String()), err)
	}
	if got := sum(raw); got != l.diffID {
		os.Remove(f.path)
		return nil, storeError("layer %s: its tar rebuilt from the store hashes to %s", logging.ShortID(l.diffID.String()), got)
	}
	f.diffID, f.rawSize = l.diffID, out.n
	return f, nil
}

// sink is where the rebuilt tar goes: it counts the bytes, stops once ctx
// ends, and keeps its own error apart from the store's.
type sink struct {
	ctx context.Context
	w   io.Writer
	n   int64
	err error
}

func (s *sink) Write(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		s.err = err
		return 0, err
	}
	n, err := s.w.Write(p)
	s.n += int64(n)
	if err != nil {
		s.err = err
	}
	return n, err
}

// layerFiles opens a layer's payload files by their tar names, never
// outside its folder.
type layerFiles struct{ root string }

func (f layerFiles) Get(name string) (io.ReadCloser, error) {
	p := filepath.Join(f.root, name)
	if !strings.HasPrefix(p, f.root+string(filepath.Separator)) {
		return nil, fmt.Errorf("%q is outside the layer", name)
	}
	return os.Open(p)
}

// pulledBlob is where dockerd says a layer it pulled lives in a registry:
// the compressed blob's digest and the repository it came from.
type pulledBlob struct {
	digest v1.Hash
	repo   string // as dockerd writes it: "host:5000/team/base", "docker.io/library/alpine"
}

// pulled reads dockerd's distribution metadata for diffID: every blob it
// pulled (or pushed) that unpacks to this layer, and from which repository.
// dockerd writes it when it pulls a layer into the classic store, for the
// classic builder's FROM and for BuildKit's alike (dockerd 20.10 and
// 26.1), and `docker push` uses it to skip or mount those blobs. Only an
// entry whose reverse record (diffid-by-digest) names diffID again is
// kept. No metadata, or any that does not parse, is no entry: the layer
// stays the build's own.
func (s *LayerStore) pulled(diffID v1.Hash) []pulledBlob {
	if s == nil || diffID.Algorithm != "sha256" || (s.Driver != "overlay2" && s.Driver != "vfs") {
		return nil
	}
	dist := filepath.Join(layerstore.MetaDir(s.Root, s.Driver), "distribution")
	raw, err := os.ReadFile(filepath.Join(dist, "v2metadata-by-diffid", "sha256", diffID.Hex))
	if err != nil {
		return nil
	}
	var entries []struct {
		Digest           string
		SourceRepository string
	}
	if json.Unmarshal(raw, &entries) != nil {
		return nil
	}
	var out []pulledBlob
	for _, e := range entries {
		d, err := v1.NewHash(e.Digest)
		if err != nil || d.Algorithm != "sha256" || e.SourceRepository == "" {
			continue
		}
		back, err := os.ReadFile(filepath.Join(dist, "diffid-by-digest", "sha256", d.Hex))
		if err != nil || strings.TrimSpace(string(back)) != diffID.String() {
			continue
		}
		out = append(out, pulledBlob{digest: d, repo: e.SourceRepository})
	}
	return out
}
