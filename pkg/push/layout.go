package push

// PushLayout: the image BuildKit's oci exporter (tar=false) wrote into a
// local OCI image layout goes to the registry from here, not through
// BuildKit's own push, so that the fan-out rules of fanout.go hold: every
// blob to every repository first, then the manifests. The layout is read as
// untrusted input: only blobs/sha256/<hex> paths built from descriptor
// digests, inside the folder (os.Root), and every byte sent checked against
// its descriptor's size and digest.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	"github.com/docker/go-units"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sirupsen/logrus"
)

// LayoutOptions name an OCI layout folder whose one root manifest goes to
// Repository (and Additional) under every tag.
type LayoutOptions struct {
	Registry   *registry.Client
	Dir        string   // the OCI layout folder
	Repository string   // as users write it
	Additional []string // as in Options
	Tags       []string
	// Bases are base folders (as Options.Bases): blobs with their digests
	// are mounted from a base's repository on the same registry instead of
	// uploaded.
	Bases []string
	Jobs  int
	Log   *logrus.Entry
}

// FromLayout is Result.From of PushLayout.
const FromLayout Source = "an OCI image layout"

// ErrCorruptBlob matches (errors.Is) a blob of the OCI layout whose bytes
// are not what its descriptor says, found while it was uploaded.
var ErrCorruptBlob = errors.New("the OCI layout is corrupt")

// maxManifestSize bounds index.json and the manifests read into memory:
// distribution refuses manifests above 4 MiB anyway.
const maxManifestSize = 4 << 20

// PushLayout pushes the one manifest o.Dir's index.json names, an image
// manifest or an index of image manifests, byte for byte (its digest
// unchanged) to o.Repository and every o.Additional under every tag: every
// blob (configs and layers, each once) to every repository first; then an
// index's image manifests by digest (a registry may refuse an index naming
// manifests it lacks); then the root under every tag. A failure before the
// first tag leaves no tag anywhere. Result.Manifests counts every manifest
// PUT, the children's by digest included.
func PushLayout(ctx context.Context, o LayoutOptions) (*Result, error) {
	log := logging.OrDiscard(o.Log)
	if len(o.Tags) == 0 {
		return nil, errors.New("push: no tags given")
	}
	start := time.Now()
	dests, err := newDestinations(o.Registry, o.Repository, o.Additional)
	if err != nil {
		return nil, err
	}
	target := dests.all[0]
	lay, err := openLayout(o.Dir)
	if err != nil {
		return nil, err
	}
	defer lay.close()
	p, err := lay.plan()
	if err != nil {
		return nil, err
	}
	owners := baseBlobOwners(o.Bases, log)
	used := map[*base]bool{}
	for _, d := range p.blobs {
		if b := owners[d.Digest]; b != nil {
			used[b] = true
		}
	}
	w, err := newWriter(ctx, Options{Registry: o.Registry, Jobs: o.Jobs}, target, dests, used)
	if err != nil {
		return nil, err
	}
	res := &Result{Digest: p.root.Digest, MediaType: p.root.MediaType, From: FromLayout}
	if !p.isIndex() {
		res.Config = p.images[0].manifest.Config.Digest
	}
	blobs, sizes, mountable := p.layers(lay, w, owners, res)
	log.Infof("push: layout %s holds %s: %d blob%s, %s", o.Dir, p.describe(), len(p.blobs), plural(len(p.blobs)), units.HumanSize(float64(p.blobBytes())))
	if mountable > 0 {
		log.Infof("push: %s in a base folder too: mounted from the base's repository where a registry lacks them", count(mountable, "blob is", "blobs are"))
	}

	sendStart := time.Now()
	log.Infof("push: sending every blob to %s on %s before writing any manifest", count(len(dests.all), "repository", "repositories"), count(dests.registries(), "registry", "registries"))
	if err := w.send(ctx, blobs); err != nil {
		return nil, err
	}
	log.Infof("push: blobs sent: %s", blobSummary(w.obs.tally(sizes)))
	if err := p.putChildren(ctx, w, o.Tags, log); err != nil {
		return nil, err
	}
	if err := w.tagAll(ctx, o.Tags, rawManifest{raw: p.raw, mt: p.root.MediaType}, nil); err != nil {
		return nil, err
	}
	log.Infof("push: %s written under %s to %s", logging.ShortDigest(p.root.Digest.String()), count(len(o.Tags), "tag", "tags"), count(len(dests.all), "repository", "repositories"))
	res.Upload, res.Took = time.Since(sendStart), time.Since(start)
	w.report(res, sizes)
	return res, nil
}

// layoutPlan is what a layout's root names, read and checked.
type layoutPlan struct {
	root   v1.Descriptor
	raw    []byte        // the root manifest's bytes, as pushed
	images []layoutImage // the root itself, or an index's children in order
	blobs  []v1.Descriptor
}

type layoutImage struct {
	desc     v1.Descriptor
	raw      []byte
	manifest *v1.Manifest
}

func (p *layoutPlan) isIndex() bool { return isIndexType(p.root.MediaType) }

func (p *layoutPlan) blobBytes() int64 {
	var n int64
	for _, d := range p.blobs {
		n += d.Size
	}
	return n
}

// describe is what the root is, for the log: "an OCI image manifest
// sha256:…" or "an OCI image index sha256:… for 2 platforms (linux/amd64,
// linux/arm64)".
func (p *layoutPlan) describe() string {
	s := fmt.Sprintf("%s %s", typeName(p.root.MediaType), logging.ShortDigest(p.root.Digest.String()))
	if !p.isIndex() {
		return s
	}
	var plats []string
	for _, im := range p.images {
		if im.desc.Platform == nil {
			plats = append(plats, "no platform")
		} else {
			plats = append(plats, im.desc.Platform.String())
		}
	}
	return fmt.Sprintf("%s for %s (%s)", s, count(len(p.images), "platform", "platforms"), strings.Join(plats, ", "))
}

// blobSummary says what happened to the blobs, summed over the
// repositories: "27kB (8 blobs) uploaded, 27kB (8 blobs) already there".
func blobSummary(uploaded, existing, mounted BlobStats) string {
	var parts []string
	for _, s := range []struct {
		n    BlobStats
		what string
	}{{uploaded, "uploaded"}, {mounted, "mounted"}, {existing, "already there"}} {
		if s.n.Blobs > 0 {
			parts = append(parts, s.n.String()+" "+s.what)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// layers are the blobs as the writer sends them: read from the layout,
// checked while they stream, and mounted from a base's repository when a
// base folder has the same digest and its repository is on a destination's
// registry (as writer.layer does). sizes maps every digest to its size;
// mountable counts the blobs so wrapped.
func (p *layoutPlan) layers(lay *ociLayout, w *writer, owners map[v1.Hash]*base, res *Result) (out []v1.Layer, sizes map[string]int64, mountable int) {
	layers := map[v1.Hash]bool{}
	for _, im := range p.images {
		for _, l := range im.manifest.Layers {
			layers[l.Digest] = true
		}
	}
	sizes = map[string]int64{}
	for _, d := range p.blobs {
		sizes[d.Digest.String()] = d.Size
		var l v1.Layer = lay.blob(d)
		b := owners[d.Digest]
		if ref, ok := w.mountable[b]; ok {
			l = &remote.MountableLayer{Layer: l, Reference: ref}
			mountable++
		}
		switch {
		case layers[d.Digest] && b != nil:
			res.BaseLayers++
		case layers[d.Digest]:
			res.NewLayers++
		}
		out = append(out, l)
	}
	return out, sizes, mountable
}

// putChildren writes an index's image manifests by digest to every
// repository, before any tag: nothing is tagged yet, so a failure says so.
func (p *layoutPlan) putChildren(ctx context.Context, w *writer, tags []string, log *logrus.Entry) error {
	if !p.isIndex() {
		return nil
	}
	log.Infof("push: writing the index's %s by digest to every repository", count(len(p.images), "image manifest", "image manifests"))
	for i, repo := range w.dests.all {
		for _, im := range p.images {
			if err := w.pusher.Put(ctx, repo.Digest(im.desc.Digest.String()), rawManifest{raw: im.raw, mt: im.desc.MediaType}); err != nil {
				return &ManifestError{Ref: w.dests.given[i] + "@" + im.desc.Digest.String(), NotWritten: w.refsFrom(tags, 0, 0), Err: w.explain(err)}
			}
		}
	}
	return nil
}

func isImageType(mt types.MediaType) bool {
	return mt == types.OCIManifestSchema1 || mt == types.DockerManifestSchema2
}

func isIndexType(mt types.MediaType) bool {
	return mt == types.OCIImageIndex || mt == types.DockerManifestList
}

func typeName(mt types.MediaType) string {
	switch mt {
	case types.OCIManifestSchema1:
		return "an OCI image manifest"
	case types.DockerManifestSchema2:
		return "a Docker image manifest"
	case types.OCIImageIndex:
		return "an OCI image index"
	case types.DockerManifestList:
		return "a Docker manifest list"
	}
	return string(mt)
}

// baseBlobOwners maps the digests of the bases' layer blobs and configs to
// their base, the first folder's first. A folder that cannot be read only
// means its blobs are uploaded (if the registry lacks them).
func baseBlobOwners(dirs []string, log *logrus.Entry) map[v1.Hash]*base {
	owners := map[v1.Hash]*base{}
	add := func(d v1.Hash, b *base) {
		if _, ok := owners[d]; !ok && d.Hex != "" {
			owners[d] = b
		}
	}
	for _, dir := range dirs {
		b, err := readBase(dir)
		if err != nil {
			log.Debugf("push: base %s: %v: its blobs are not mounted", dir, err)
			continue
		}
		for _, l := range b.layers {
			// A digest from a tarball's file name is not proven, which
			// costs nothing here: the registry mounts only a blob of
			// that digest, and the bytes uploaded otherwise are the
			// layout's own, checked.
			add(l.digest, b)
		}
		add(b.id, b)
		// A base of several platforms (a get with params.platforms):
		// the other platforms' blobs are in its repository too.
		for _, d := range otherPlatformBlobs(b) {
			add(d, b)
		}
	}
	return owners
}

// otherPlatformBlobs are the layer and config digests of every platform
// of a layout base's index (none for a docker-save tarball).
func otherPlatformBlobs(b *base) []v1.Hash {
	if b.kind == baseimage.DockerSave {
		return nil
	}
	imgs, err := baseimage.LayoutImages(b.tarball, b.kind)
	if err != nil {
		return nil
	}
	var out []v1.Hash
	for _, img := range imgs {
		out = append(out, img.Manifest.Config.Digest)
		for _, l := range img.Manifest.Layers {
			out = append(out, l.Digest)
		}
	}
	return out
}

// ociLayout is an OCI image layout folder, opened so that no path leaves it.
type ociLayout struct {
	dir  string
	root *os.Root
}

func openLayout(dir string) (*ociLayout, error) {
	if dir == "" {
		return nil, errors.New("push: no OCI layout folder given")
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("push: OCI layout: %w", err)
	}
	l := &ociLayout{dir: dir, root: root}
	raw, err := l.readSmall("oci-layout")
	if err != nil {
		l.close()
		return nil, err
	}
	var v struct {
		ImageLayoutVersion string `json:"imageLayoutVersion"`
	}
	if err := json.Unmarshal(raw, &v); err != nil || v.ImageLayoutVersion == "" {
		l.close()
		return nil, fmt.Errorf("push: %s/oci-layout does not name an imageLayoutVersion (%v): not an OCI image layout", dir, err)
	}
	return l, nil
}

func (l *ociLayout) close() { l.root.Close() }

// readSmall reads a regular file of the layout of at most maxManifestSize.
func (l *ociLayout) readSmall(name string) ([]byte, error) {
	f, err := l.open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("push: reading %s/%s: %w", l.dir, name, err)
	}
	if len(b) > maxManifestSize {
		return nil, fmt.Errorf("push: %s/%s is larger than %s", l.dir, name, units.BytesSize(maxManifestSize))
	}
	return b, nil
}

// open opens a regular file inside the layout (symlinks may not leave it;
// a FIFO or a folder must not be read).
func (l *ociLayout) open(name string) (*os.File, error) {
	f, err := l.root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("push: OCI layout %s: %w", l.dir, err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s is a %s, not a regular file", name, fsType(st.Mode()))
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("push: OCI layout %s: %w", l.dir, err)
	}
	return f, nil
}

func fsType(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "folder"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeDevice != 0:
		return "device"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// layoutBlobPath is where the layout holds d: built from the digest alone.
func layoutBlobPath(d v1.Hash) (string, error) {
	if d.Algorithm != "sha256" || !sha256Hex.MatchString(d.Hex) {
		return "", fmt.Errorf("digest %q is not sha256 with 64 hex digits", d)
	}
	return "blobs/sha256/" + d.Hex, nil
}

// readManifest reads the manifest d names, which must be d's size and hash
// to d's digest.
func (l *ociLayout) readManifest(d v1.Descriptor) ([]byte, error) {
	p, err := layoutBlobPath(d.Digest)
	if err != nil {
		return nil, fmt.Errorf("push: OCI layout %s: manifest: %w", l.dir, err)
	}
	if d.Size <= 0 || d.Size > maxManifestSize {
		return nil, fmt.Errorf("push: OCI layout %s: manifest %s has size %d (at most %s)", l.dir, d.Digest, d.Size, units.BytesSize(maxManifestSize))
	}
	b, err := l.readSmall(p)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != d.Size {
		return nil, fmt.Errorf("push: OCI layout %s: %s is %d bytes, its descriptor says %d: the layout is corrupt", l.dir, p, len(b), d.Size)
	}
	if got := sha256Hash(b); got != d.Digest {
		return nil, fmt.Errorf("push: OCI layout %s: %s hashes to %s, not its name: the layout is corrupt", l.dir, p, got)
	}
	return b, nil
}

// plan reads index.json and the manifests under it and checks that every
// blob is there with its size.
func (l *ociLayout) plan() (*layoutPlan, error) {
	raw, err := l.readSmall("index.json")
	if err != nil {
		return nil, err
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, fmt.Errorf("push: %s/index.json: %w", l.dir, err)
	}
	if n := len(idx.Manifests); n != 1 {
		return nil, fmt.Errorf("push: %s/index.json names %d manifests; want exactly one (an image or an index) to push", l.dir, n)
	}
	p := &layoutPlan{root: idx.Manifests[0]}
	mt := p.root.MediaType
	switch {
	case isImageType(mt):
		im, err := l.image(p.root)
		if err != nil {
			return nil, err
		}
		p.raw, p.images = im.raw, []layoutImage{im}
	case isIndexType(mt):
		if err := l.index(p); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("push: %s/index.json names a manifest of media type %q; want an image manifest or an index", l.dir, mt)
	}
	return p, l.checkBlobs(p)
}

// index reads the root index and its image manifests.
func (l *ociLayout) index(p *layoutPlan) error {
	raw, err := l.readManifest(p.root)
	if err != nil {
		return err
	}
	ix, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("push: OCI layout %s: index %s: %w", l.dir, p.root.Digest, err)
	}
	if ix.MediaType != "" && ix.MediaType != p.root.MediaType {
		return fmt.Errorf("push: OCI layout %s: index %s says it is %q, index.json %q", l.dir, p.root.Digest, ix.MediaType, p.root.MediaType)
	}
	if len(ix.Manifests) == 0 {
		return fmt.Errorf("push: OCI layout %s: index %s names no manifests", l.dir, p.root.Digest)
	}
	p.raw = raw
	for _, c := range ix.Manifests {
		switch {
		case isIndexType(c.MediaType):
			return fmt.Errorf("push: OCI layout %s: index %s names another index, %s: pushing nested indexes is not implemented yet", l.dir, p.root.Digest, c.Digest)
		case !isImageType(c.MediaType):
			return fmt.Errorf("push: OCI layout %s: index %s names %s of media type %q; want image manifests only", l.dir, p.root.Digest, c.Digest, c.MediaType)
		}
		im, err := l.image(c)
		if err != nil {
			return err
		}
		p.images = append(p.images, im)
	}
	return nil
}

// image reads and parses the image manifest d names; checkBlobs then
// lists its blobs.
func (l *ociLayout) image(d v1.Descriptor) (layoutImage, error) {
	raw, err := l.readManifest(d)
	if err != nil {
		return layoutImage{}, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return layoutImage{}, fmt.Errorf("push: OCI layout %s: image manifest %s: %w", l.dir, d.Digest, err)
	}
	if m.SchemaVersion != 2 || (m.MediaType != "" && m.MediaType != d.MediaType) {
		return layoutImage{}, fmt.Errorf("push: OCI layout %s: image manifest %s is schema %d of %q, its descriptor says %q", l.dir, d.Digest, m.SchemaVersion, m.MediaType, d.MediaType)
	}
	return layoutImage{desc: d, raw: raw, manifest: m}, nil
}

// checkBlobs lists every config and layer once, in manifest order, and
// checks that each is a regular file of the layout of its descriptor's
// size: a missing or cut blob fails before any request.
func (l *ociLayout) checkBlobs(p *layoutPlan) error {
	seen := map[v1.Hash]int64{}
	for _, im := range p.images {
		for _, d := range append([]v1.Descriptor{im.manifest.Config}, im.manifest.Layers...) {
			if size, ok := seen[d.Digest]; ok {
				if size != d.Size {
					return fmt.Errorf("push: OCI layout %s: blob %s has sizes %d and %d in its manifests", l.dir, d.Digest, size, d.Size)
				}
				continue
			}
			path, err := layoutBlobPath(d.Digest)
			if err != nil {
				return fmt.Errorf("push: OCI layout %s: image manifest %s: %w", l.dir, im.desc.Digest, err)
			}
			f, err := l.open(path)
			if err != nil {
				return fmt.Errorf("%w (named by image manifest %s)", err, im.desc.Digest)
			}
			st, err := f.Stat()
			f.Close()
			if err != nil {
				return fmt.Errorf("push: OCI layout %s: %w", l.dir, err)
			}
			if st.Size() != d.Size {
				return fmt.Errorf("push: OCI layout %s: %s is %d bytes, its descriptor says %d: the layout is corrupt", l.dir, path, st.Size(), d.Size)
			}
			seen[d.Digest] = d.Size
			p.blobs = append(p.blobs, d)
		}
	}
	return nil
}

// blob is d as a layer whose bytes are the layout's file, checked while
// they are read.
func (l *ociLayout) blob(d v1.Descriptor) *blob {
	path, _ := layoutBlobPath(d.Digest) // checkBlobs proved it
	return &blob{digest: d.Digest, diffID: d.Digest, size: d.Size, mediaType: d.MediaType, open: func() (io.ReadCloser, error) {
		f, err := l.open(path)
		if err != nil {
			return nil, err
		}
		return &checkedReader{rc: f, h: sha256.New(), size: d.Size, want: d.Digest, name: l.dir + "/" + path}, nil
	}}
}

// checkedReader fails the read that ends a blob whose bytes are not its
// descriptor's: too many, too few, or another digest. The error comes with
// the last bytes, so an HTTP body of exactly the descriptor's length still
// fails before the upload is committed.
type checkedReader struct {
	rc      io.ReadCloser
	h       hash.Hash
	n, size int64
	want    v1.Hash
	name    string
	done    bool
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	switch {
	case c.n > c.size:
		return n, fmt.Errorf("%w: %s holds more than the %d bytes its descriptor says", ErrCorruptBlob, c.name, c.size)
	case c.done:
	case c.n == c.size || errors.Is(err, io.EOF):
		c.done = true
		if c.n < c.size {
			return n, fmt.Errorf("%w: %s holds %d bytes, its descriptor says %d", ErrCorruptBlob, c.name, c.n, c.size)
		}
		if got := hex.EncodeToString(c.h.Sum(nil)); got != c.want.Hex {
			return n, fmt.Errorf("%w: %s hashes to sha256:%s, not its name", ErrCorruptBlob, c.name, got)
		}
	}
	return n, err
}

func (c *checkedReader) Close() error { return c.rc.Close() }
