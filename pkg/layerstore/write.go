package layerstore

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/imagefs"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/sirupsen/logrus"
	"github.com/vbatts/tar-split/tar/asm"
	"github.com/vbatts/tar-split/tar/storage"
	"golang.org/x/sync/errgroup"
)

// Driver is the storage driver whose layout Write writes: dockerd must run
// with it (--storage-driver overlay2) on the data root.
const Driver = "overlay2"

// Image is one image to write: its config (the image ID is its digest) and
// its layer blobs, bottom first, gzip, zstd or uncompressed tars.
type Image struct {
	Name   string // for the log: the name FROM uses, or anything
	Config []byte
	Layers []Layer
}

// Layer is one layer blob.
type Layer struct {
	Open func() (io.ReadCloser, error)
	Size int64 // the blob's size, for the log
}

// BlobLayers are a folder's layer blobs, read in place.
func BlobLayers(blobs []baseimage.Blob) []Layer {
	out := make([]Layer, len(blobs))
	for i, b := range blobs {
		out[i] = Layer{Open: b.Open, Size: b.Size}
	}
	return out
}

// Options controls Write.
type Options struct {
	// Workers is how many layers are extracted at once; default GOMAXPROCS.
	Workers int
	Log     *logrus.Entry
}

// DiffIDError is a layer whose content is not the one the image's config
// names: nothing is written.
type DiffIDError struct {
	Image string
	Layer int // 1-based, in the config's order
	Want  string
	Got   string
}

func (e *DiffIDError) Error() string {
	return fmt.Sprintf("%s: layer %d holds %s, but the config's rootfs.diff_ids[%d] says %s: the blob is not the layer the image names",
		e.Image, e.Layer, e.Got, e.Layer-1, e.Want)
}

// NotFreshError is a data root that already holds something: only a fresh
// one is written to, so nothing of dockerd's own is ever touched.
type NotFreshError struct{ Root string }

func (e *NotFreshError) Error() string {
	return fmt.Sprintf("data root %s is not empty: only a fresh data root is written to", e.Root)
}

// layer is one layer to write, once per chain ID across all images.
type layer struct {
	image   string
	index   int // 1-based in its first image
	chainID string
	diffID  string // the config's
	parent  *layer
	blob    Layer
	cacheID string
	link    string

	// Set by extract.
	size    int64
	tmpMeta string // its layerdb folder under layerdb/tmp, renamed at the end
}

// Write writes imgs into root, a fresh (missing or empty) data root, for
// dockerd's overlay2 driver and classic image store. On any error,
// everything written is removed again and root is left empty.
func Write(ctx context.Context, root string, imgs []Image, o Options) (err error) {
	log := logging.OrDiscard(o.Log)
	if err := checkFresh(root); err != nil {
		return err
	}
	layers, err := plan(imgs)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if cerr := clear(root); cerr != nil {
				log.Warnf("removing the half-written layer store from %s: %v", root, cerr)
			}
		}
	}()
	w := &writer{root: root, log: log}
	if err := w.makeDirs(); err != nil {
		return err
	}
	for _, l := range layers {
		if err := w.makeLayerDirs(l); err != nil {
			return err
		}
	}
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for _, l := range layers {
		g.Go(func() error { return w.extract(gctx, l) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	// Layers are committed only once every one is in: dockerd takes a
	// layerdb folder as a whole layer.
	for _, l := range layers {
		if err := w.commit(l); err != nil {
			return err
		}
	}
	for _, img := range imgs {
		if err := w.writeConfig(img.Config); err != nil {
			return err
		}
	}
	return nil
}

// checkFresh accepts a missing or empty root (made if missing).
func checkFresh(root string) error {
	if err := os.MkdirAll(root, 0o711); err != nil {
		return fmt.Errorf("making data root %s: %w", root, err)
	}
	f, err := os.Open(root)
	if err != nil {
		return err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading data root %s: %w", root, err)
	}
	if len(names) > 0 {
		return &NotFreshError{Root: root}
	}
	return nil
}

// clear removes everything in root, leaving root itself.
func clear(root string) error {
	ents, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		errs = append(errs, os.RemoveAll(filepath.Join(root, e.Name())))
	}
	return errors.Join(errs...)
}

// imageConfig is the part of an image config Write reads.
type imageConfig struct {
	RootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// plan lists the layers to write, each chain ID once, parents first.
func plan(imgs []Image) ([]*layer, error) {
	byChain := map[string]*layer{}
	var out []*layer
	for _, img := range imgs {
		var cfg imageConfig
		if err := json.Unmarshal(img.Config, &cfg); err != nil {
			return nil, fmt.Errorf("%s: parsing the config: %w", img.Name, err)
		}
		if cfg.RootFS.Type != "layers" {
			return nil, fmt.Errorf("%s: the config's rootfs.type is %q, want \"layers\"", img.Name, cfg.RootFS.Type)
		}
		if len(cfg.RootFS.DiffIDs) != len(img.Layers) {
			return nil, fmt.Errorf("%s: the config names %d layers (rootfs.diff_ids), the image has %d", img.Name, len(cfg.RootFS.DiffIDs), len(img.Layers))
		}
		var parent *layer
		for i, d := range cfg.RootFS.DiffIDs {
			if !validDigest(d) {
				return nil, fmt.Errorf("%s: the config's rootfs.diff_ids[%d] %q is not a sha256 digest", img.Name, i, d)
			}
			chain := ChainID("", d)
			if parent != nil {
				chain = ChainID(parent.chainID, d)
			}
			l := byChain[chain]
			if l == nil {
				l = &layer{image: img.Name, index: i + 1, chainID: chain, diffID: d, parent: parent, blob: img.Layers[i],
					cacheID: randomHex(), link: randomLink()}
				byChain[chain] = l
				out = append(out, l)
			}
			parent = l
		}
	}
	return out, nil
}

func validDigest(d string) bool {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil && strings.ToLower(h) == h
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// randomHex is a cache ID as dockerd makes them (stringid.GenerateRandomID):
// 64 hex characters, not all digits.
func randomHex() string {
	for {
		b := make([]byte, 32)
		rand.Read(b)
		s := hex.EncodeToString(b)
		if strings.Trim(s, "0123456789") != "" {
			return s
		}
	}
}

// randomLink is an overlay2 link name: 26 base32 characters, as dockerd's
// overlay2 makes them.
func randomLink() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base32.StdEncoding.EncodeToString(b)[:26]
}

type writer struct {
	root string
	log  *logrus.Entry
}

func (w *writer) overlay(p ...string) string {
	return filepath.Join(append([]string{w.root, "overlay2"}, p...)...)
}

func (w *writer) meta(p ...string) string {
	return filepath.Join(append([]string{MetaDir(w.root, Driver)}, p...)...)
}

// makeDirs makes the driver's and the image store's folders with dockerd's
// modes.
func (w *writer) makeDirs() error {
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{
		{w.overlay(), 0o710},
		{w.overlay("l"), 0o700},
		{filepath.Join(w.root, "image"), 0o700},
		{w.meta(), 0o700},
		{w.meta("layerdb"), 0o700},
		{w.meta("layerdb", "sha256"), 0o755},
		{w.meta("layerdb", "tmp"), 0o755},
		{w.meta("imagedb"), 0o700},
		{w.meta("imagedb", "content"), 0o700},
		{w.meta("imagedb", "content", "sha256"), 0o700},
	} {
		if err := mkdirMode(d.path, d.mode); err != nil {
			return err
		}
	}
	return nil
}

// mkdirMode makes dir with exactly mode, whatever the umask.
func mkdirMode(dir string, mode os.FileMode) error {
	if err := os.Mkdir(dir, mode); err != nil {
		return fmt.Errorf("making %s: %w", dir, err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		return fmt.Errorf("making %s: %w", dir, err)
	}
	return nil
}

// writeFile writes a small file with exactly mode.
func writeFile(p string, b []byte, mode os.FileMode) error {
	if err := os.WriteFile(p, b, mode); err != nil {
		return err
	}
	return os.Chmod(p, mode)
}

// makeLayerDirs makes the layer's overlay2 folder as the driver's Create
// does: diff/, link and l/<link>, and with a parent work/, lower and the
// parent's committed marker.
func (w *writer) makeLayerDirs(l *layer) error {
	dir := w.overlay(l.cacheID)
	if err := mkdirMode(dir, 0o701); err != nil {
		return err
	}
	if err := mkdirMode(filepath.Join(dir, "diff"), 0o755); err != nil {
		return err
	}
	if err := os.Symlink(filepath.Join("..", l.cacheID, "diff"), w.overlay("l", l.link)); err != nil {
		return fmt.Errorf("layer %s: %w", l.chainID, err)
	}
	if err := writeFile(filepath.Join(dir, "link"), []byte(l.link), 0o644); err != nil {
		return fmt.Errorf("layer %s: %w", l.chainID, err)
	}
	if l.parent == nil {
		return nil
	}
	if err := mkdirMode(filepath.Join(dir, "work"), 0o700); err != nil {
		return err
	}
	if err := writeFile(w.overlay(l.parent.cacheID, "committed"), nil, 0o600); err != nil {
		return fmt.Errorf("layer %s: %w", l.parent.chainID, err)
	}
	lower := []string{"l/" + l.parent.link}
	for p := l.parent.parent; p != nil; p = p.parent {
		lower = append(lower, "l/"+p.link)
	}
	if err := writeFile(filepath.Join(dir, "lower"), []byte(strings.Join(lower, ":")), 0o644); err != nil {
		return fmt.Errorf("layer %s: %w", l.chainID, err)
	}
	return nil
}

// extract unpacks the layer into its diff folder while hashing it and
// recording its tar-split, then checks the hash against the config's diff
// ID and measures the folder as overlay2's ApplyDiff does.
func (w *writer) extract(ctx context.Context, l *layer) (err error) {
	what := fmt.Sprintf("%s: layer %d", l.image, l.index)
	tmp, err := os.MkdirTemp(w.meta("layerdb", "tmp"), "write-set-")
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	l.tmpMeta = tmp
	got, err := w.unpack(ctx, l, filepath.Join(tmp, "tar-split.json.gz"))
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if got != l.diffID {
		return &DiffIDError{Image: l.image, Layer: l.index, Want: l.diffID, Got: got}
	}
	if l.size, err = diskSize(w.overlay(l.cacheID, "diff")); err != nil {
		return fmt.Errorf("%s: measuring: %w", what, err)
	}
	return nil
}

// unpack streams the blob through the decompressor, the hash and the
// tar-split packer into the diff folder and returns the diff ID.
func (w *writer) unpack(ctx context.Context, l *layer, tarSplit string) (string, error) {
	rc, err := l.blob.Open()
	if err != nil {
		return "", err
	}
	defer rc.Close()
	plain, closePlain, err := decompress(rc)
	if err != nil {
		return "", err
	}
	defer closePlain()

	tsf, err := os.OpenFile(tarSplit, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", err
	}
	defer tsf.Close()
	bw := bufio.NewWriterSize(tsf, 64<<10)
	zw := gzip.NewWriter(bw)

	h := sha256.New()
	// A nil file putter: the files go to the diff folder through ExtractDiff
	// (dockerd passes nil too).
	ts, err := asm.NewInputTarStream(io.TeeReader(plain, h), storage.NewJSONPacker(zw), nil)
	if err != nil {
		return "", err
	}
	if err := imagefs.ExtractDiff(ctx, ts, w.overlay(l.cacheID, "diff"), imagefs.DiffOptions{SpillDir: w.overlay(l.cacheID), Log: w.log}); err != nil {
		return "", err
	}
	// ExtractDiff read ts to its end: the packer has seen the whole tar.
	if err := zw.Close(); err != nil {
		return "", fmt.Errorf("writing tar-split: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return "", fmt.Errorf("writing tar-split: %w", err)
	}
	if err := tsf.Close(); err != nil {
		return "", fmt.Errorf("writing tar-split: %w", err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// decompress tells gzip and zstd blobs by their magic; anything else is
// taken as a plain tar.
func decompress(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 1<<20)
	magic, _ := br.Peek(4)
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("opening gzip: %w", err)
		}
		return zr, func() { zr.Close() }, nil
	case baseimage.IsZstd(magic):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("opening zstd: %w", err)
		}
		return zr, zr.Close, nil
	}
	return br, func() {}, nil
}

// diskSize is overlay2's layer size (dockerd's directory.Size): the sizes
// of everything but directories, each inode once.
func diskSize(dir string) (int64, error) {
	seen := map[uint64]bool{}
	var size int64
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.IsDir() || fi.Size() == 0 {
			return nil
		}
		ino := inode(fi)
		if seen[ino] {
			return nil
		}
		seen[ino] = true
		size += fi.Size()
		return nil
	})
	return size, err
}

// commit writes the layer's layerdb files into its temporary folder and
// renames it into place.
func (w *writer) commit(l *layer) error {
	files := map[string]string{
		"diff":     l.diffID,
		"size":     strconv.FormatInt(l.size, 10),
		"cache-id": l.cacheID,
	}
	if l.parent != nil {
		files["parent"] = l.parent.chainID
	}
	for name, v := range files {
		if err := writeFile(filepath.Join(l.tmpMeta, name), []byte(v), 0o644); err != nil {
			return fmt.Errorf("layer %s: %w", l.chainID, err)
		}
	}
	final := LayerDBDir(w.root, Driver, l.chainID)
	if err := os.Rename(l.tmpMeta, final); err != nil {
		return fmt.Errorf("layer %s: %w", l.chainID, err)
	}
	return nil
}

// writeConfig writes the config under its digest, through a temporary
// name.
func (w *writer) writeConfig(cfg []byte) error {
	final := ConfigFile(w.root, Driver, digestOf(cfg))
	tmp := final + ".tmp-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := writeFile(tmp, cfg, 0o600); err != nil {
		return fmt.Errorf("writing the image config: %w", err)
	}
	return os.Rename(tmp, final)
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
