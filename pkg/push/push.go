// Package push pushes an image the put's daemon built (or loaded) straight
// to the registry with go-containerregistry, so that base layers never travel
// again. A base that arrived by `docker load` has no distribution metadata:
// `docker push` would compress and upload every base layer again. Here the
// pushed manifest names the base's original compressed blobs, read in place
// from the get's `image` tarball: the registry skips those it has, mounts
// those another repository of it has, and only then are the original bytes
// sent as they are. Only layers the build produced are compressed (once,
// gzip) and uploaded. The config is the daemon's own bytes, so its digest is
// still the image ID.
//
// A layer dockerd pulled from the target's registry (a FROM without base
// folders, BuildKit's or the classic builder's) is pushed as its original
// blob too, which dockerd's distribution metadata in its layer store names.
// When an image has a layer of an image the daemon pulled whose original
// blob is still not known (from another registry, no layer store), Push
// fails with ErrNeedsDaemon before any request, and the caller pushes
// through the daemon.
//
// Options.Additional sends the same image to more repositories, every blob
// everywhere before the first manifest (fanout.go); Copy does the same for
// an image the daemon pushed.
package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/go-units"
	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"
)

// Daemon is the part of the Engine API client Push uses; *client.Client
// satisfies it.
type Daemon interface {
	ImageSave(ctx context.Context, imageIDs []string, opts ...client.ImageSaveOption) (io.ReadCloser, error)
	ImageInspect(ctx context.Context, ref string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImageList(ctx context.Context, options image.ListOptions) ([]image.Summary, error)
}

var _ Daemon = (*client.Client)(nil)

// Options say what to push where.
type Options struct {
	Daemon   Daemon
	Registry *registry.Client
	// Image is the ID of the image to push ("sha256:...").
	Image string
	// Repository is the target, as users write it ("host:5000/team/app").
	Repository string
	// Additional are more repositories, as users write them, that get the
	// same image under every tag (fanout.go): every blob goes to every
	// repository before the first manifest is written anywhere. Source
	// credentials (Registry's Username) go to Repository's registry only.
	Additional []string
	// Tags: the first is pushed with the blobs, the others only get the
	// manifest.
	Tags []string
	// Bases are folders of gets with save: true (load_base, load_bases,
	// cache_from, load): their `image` tarballs hold the original blobs.
	Bases []string
	// Jobs is how many blobs are uploaded at once (max_concurrent_uploads).
	Jobs int
	// TempDir holds new layers while they are compressed (default: the
	// system's).
	TempDir string
	// LayerStore, when set, is the daemon's layer store on disk, for a
	// daemon the caller started and owns: the config and new layers are
	// read there instead of streaming the whole image out of the daemon.
	// Nil: the save stream.
	LayerStore *LayerStore
	Log        *logrus.Entry
}

// Source is where Push read the config and the new layers.
type Source string

const (
	FromLayerStore Source = "dockerd's layer store"
	FromSaveStream Source = "the daemon's save stream"
)

// BlobStats counts blobs and their bytes.
type BlobStats struct {
	Blobs int
	Bytes int64
}

func (s *BlobStats) add(n int64) { s.Blobs++; s.Bytes += n }

func (s BlobStats) String() string {
	return fmt.Sprintf("%s (%d blob%s)", units.HumanSize(float64(s.Bytes)), s.Blobs, plural(s.Blobs))
}

// Result is what a push did.
type Result struct {
	// Digest is the manifest's digest, the same for every tag.
	Digest    v1.Hash
	MediaType types.MediaType
	// Config is the config's digest: the daemon's image ID.
	Config v1.Hash
	// BaseLayers are pushed from bases' original blobs, NewLayers were
	// compressed here.
	BaseLayers, NewLayers int
	// Uploaded: the blobs uploaded, and every request body byte sent
	// (manifests included). Existing: blobs the repository had (HEAD).
	// Mounted: blobs the registry mounted from a base's repository.
	Uploaded, Existing, Mounted BlobStats
	// Manifests is the number of manifest PUTs (one per tag and
	// repository).
	Manifests int
	// Repositories is what each repository got, Repository first, then the
	// Additional ones; Uploaded, Existing and Mounted above are their sums.
	Repositories []RepositoryStats
	// From is where the config and new layers were read (empty when the
	// image was a base).
	From Source
	// Save is the time to get the config and new layers out of the daemon
	// (zero when the image was a base), a layer store attempt that fell
	// back to the save stream included; base blobs go to the registry
	// meanwhile. Upload is the time after it: new layers, config,
	// manifests. Took is the whole.
	Save, Upload, Took time.Duration
}

// Reused are the blobs that did not travel: already there or mounted.
func (r *Result) Reused() BlobStats {
	return BlobStats{Blobs: r.Existing.Blobs + r.Mounted.Blobs, Bytes: r.Existing.Bytes + r.Mounted.Bytes}
}

// ErrNeedsDaemon matches (errors.Is) the failures that mean "push this image
// through the daemon instead": a layer's original blob is unknown (decided
// before any request), or the daemon's save stream or a base's blobs turn
// out unusable (base blobs may have been sent by then, but no manifest).
// They are *NeedsDaemonError, whose Reason says why.
var ErrNeedsDaemon = errors.New("the registry push cannot reuse this image's blobs")

// NeedsDaemonError is a push that must go through the daemon instead.
type NeedsDaemonError struct {
	Reason string // why, for the log: "layer ... came from ..., which the daemon pulled: ..."
}

func (e *NeedsDaemonError) Error() string { return ErrNeedsDaemon.Error() + ": " + e.Reason }

// Is makes it ErrNeedsDaemon to errors.Is.
func (e *NeedsDaemonError) Is(target error) bool { return target == ErrNeedsDaemon }

func needsDaemon(format string, a ...any) error {
	return &NeedsDaemonError{Reason: fmt.Sprintf(format, a...)}
}

// emptyLayer is the diff ID of an empty tar (RUN steps that change
// nothing). Cheap to compress, so a pulled copy of it is no reason to leave
// the push to the daemon.
const emptyLayer = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"

// Push pushes o.Image to o.Repository under every tag.
func Push(ctx context.Context, o Options) (*Result, error) {
	log := logging.OrDiscard(o.Log)
	if len(o.Tags) == 0 {
		return nil, errors.New("push: no tags given")
	}
	dests, err := newDestinations(o.Registry, o.Repository, o.Additional)
	if err != nil {
		return nil, err
	}
	target := dests.all[0]
	p, err := planLayers(ctx, o, target, log)
	if err != nil {
		return nil, err
	}
	if len(p.diffIDs) == 0 {
		// BuildKit makes such images (FROM scratch plus metadata), and
		// dockerd before 23 refuses to save them ("empty export").
		return nil, needsDaemon("the image has no layers, which `docker save` cannot export on older daemons")
	}
	dir, err := os.MkdirTemp(o.TempDir, "push-")
	if err != nil {
		return nil, fmt.Errorf("push: temp folder: %w", err)
	}
	defer os.RemoveAll(dir)
	w, err := newWriter(ctx, o, target, dests, p.used)
	if err != nil {
		return nil, err
	}

	res := &Result{BaseLayers: len(p.diffIDs) - len(p.fresh), NewLayers: len(p.fresh)}
	start := time.Now()
	sv, err := sendBaseBlobs(ctx, o, target, p, w, dir, log)
	if err != nil {
		return nil, err
	}
	config, err := imageConfig(p, sv, res, log)
	if err != nil {
		return nil, err
	}
	img, sizes, err := assemble(p, w, config, sv, log)
	if err != nil {
		return nil, err
	}
	res.Config, res.MediaType = sha256Hash(config), img.mt
	res.Digest, _ = img.Digest()

	final := time.Now()
	if err := pushBlobsThenTags(ctx, o, w, img, log); err != nil {
		return nil, err
	}
	res.Upload, res.Took = time.Since(final), time.Since(start)
	w.report(res, sizes)
	return res, nil
}

// sendBaseBlobs does three things at once: the bases' media types and
// digest checks (disk, maybe the network), the config and new layers out of
// the daemon (newLayers; nil when the image is a base itself), and the base
// blobs, which need neither: skipped, mounted or uploaded as they are.
func sendBaseBlobs(ctx context.Context, o Options, target name.Repository, p *layerPlan, w *writer, dir string, log *logrus.Entry) (*saved, error) {
	early := w.baseLayers(p) // before verify may fill in digests
	g, gctx := errgroup.WithContext(ctx)
	for b := range p.used {
		g.Go(func() error {
			var lookup *registry.Client
			if r, err := o.Registry.Repository(b.repo); err == nil && r.RegistryStr() == target.RegistryStr() {
				lookup = o.Registry
			}
			b.identify(gctx, lookup)
			if err := b.verify(gctx); err != nil {
				return needsDaemon("base %s: %v", b.dir, err)
			}
			return nil
		})
	}
	g.Go(func() error { return w.send(gctx, early) })
	var sv *saved
	if p.self == nil {
		g.Go(func() error {
			var err error
			sv, err = newLayers(gctx, o, p, dir, log)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return sv, nil
}

// newLayers gets the config and the new layers out of the daemon, and is
// the one place that decides from where: dockerd's layer store on disk when
// the caller owns the daemon (o.LayerStore) and the store has them, which
// costs only the new layers; else, or when what the store gives is not
// exactly the image, the daemon's save stream of the whole image (base
// layers included: seconds per GiB of base).
func newLayers(ctx context.Context, o Options, p *layerPlan, dir string, log *logrus.Entry) (*saved, error) {
	start := time.Now()
	head := fmt.Sprintf("push: %d of %d layers are original blobs of the bases; ", len(p.diffIDs)-len(p.fresh), len(p.diffIDs))
	if o.LayerStore != nil {
		sv, err := readStore(ctx, o.LayerStore, p, dir, func(n int) {
			log.Infof(head+"reading %d new layer%s and the config from dockerd's layer store (no image stream)", n, plural(n))
		})
		if err == nil {
			sv.took = time.Since(start)
			return sv, nil
		}
		if !errors.Is(err, errStore) {
			return nil, err
		}
		log.Debugf("push: %v: streaming the image instead", err)
	}
	log.Infof(head+"streaming image %s out of the daemon for the config and %d new layer%s", logging.ShortID(p.id), len(p.fresh), plural(len(p.fresh)))
	sv, err := streamSave(ctx, o.Daemon, p.id, p.known, dir)
	if errors.Is(err, errFormat) {
		return nil, needsDaemon("%v (no manifest was written)", err)
	}
	if err != nil {
		return nil, err
	}
	sv.took = time.Since(start)
	return sv, nil
}

// readStore finds the image in the layer store and, once every file is
// there (announce says so with the number of new layers), reads it.
func readStore(ctx context.Context, ls *LayerStore, p *layerPlan, dir string, announce func(int)) (*saved, error) {
	si, err := ls.find(p.id, p.known)
	if err != nil {
		return nil, err
	}
	announce(len(si.layers))
	return si.read(ctx, dir)
}

// imageConfig is the config to push: the base's own when the image is a
// base, else the daemon's bytes from newLayers (res.Save is its time),
// whose layers must be the ones the daemon reported.
func imageConfig(p *layerPlan, sv *saved, res *Result, log *logrus.Entry) ([]byte, error) {
	if p.self != nil {
		log.Infof("push: image %s is the base %s itself: every blob is the original", logging.ShortID(p.id), p.self.repo)
		return p.self.config, nil
	}
	res.Save, res.From = sv.took, sv.from
	var raw int64
	for _, l := range sv.fresh {
		raw += l.rawSize
	}
	took := sv.took.Round(10 * time.Millisecond)
	if sv.from == FromLayerStore {
		log.Infof("push: read the config and %d new layer%s (%s uncompressed) from dockerd's layer store in %s",
			len(sv.fresh), plural(len(sv.fresh)), units.HumanSize(float64(raw)), took)
	} else {
		log.Infof("push: streamed %s from the daemon in %s; %d new layer%s, %s uncompressed", units.HumanSize(float64(sv.streamed)),
			took, len(sv.fresh), plural(len(sv.fresh)), units.HumanSize(float64(raw)))
	}
	if !slices.Equal(sv.diffIDs, p.diffIDs) {
		return nil, needsDaemon("the config's layers (from %s) differ from the daemon's image inspect (no manifest was written)", sv.from)
	}
	return sv.config, nil
}

// pushBlobsThenTags sends the blobs not sent yet (new layers, the config,
// base blobs whose digest verify had to find) to every repository, and
// only then writes the manifest under every tag to each (fanout.go).
func pushBlobsThenTags(ctx context.Context, o Options, w *writer, img *pushImage, log *logrus.Entry) error {
	cfg, err := img.ConfigLayer()
	if err != nil {
		return err
	}
	if n := len(w.dests.all); n > 1 {
		log.Infof("push: sending every blob to %d repositories on %s before writing any manifest", n, count(w.dests.registries(), "registry", "registries"))
	}
	if err := w.send(ctx, append(slices.Clone(img.layers), cfg)); err != nil {
		return err
	}
	return w.tagAll(ctx, o.Tags, img, nil)
}

// layerPlan says where each layer of the image comes from.
type layerPlan struct {
	id      string // the image ID
	diffIDs []v1.Hash
	blobs   map[v1.Hash]*baseBlob // original blobs of the bases, by diff ID
	known   map[v1.Hash]bool      // diffIDs found in blobs
	used    map[*base]bool        // bases that provide a layer
	fresh   []v1.Hash             // the other layers: the build's own
	self    *base                 // the image is this base (load, or a build that added nothing)
}

// planLayers indexes the bases and sorts the image's layers into base
// layers (a base folder's first, then blobs dockerd pulled from the
// target's registry) and the build's own; a layer of neither kind that an
// image the daemon pulled holds needs the daemon.
func planLayers(ctx context.Context, o Options, target name.Repository, log *logrus.Entry) (*layerPlan, error) {
	d, imageID, dirs := o.Daemon, o.Image, o.Bases
	ins, err := d.ImageInspect(ctx, imageID)
	if err != nil {
		return nil, fmt.Errorf("inspecting image %s: %w", imageID, err)
	}
	p := &layerPlan{id: ins.ID, blobs: map[v1.Hash]*baseBlob{}, known: map[v1.Hash]bool{}, used: map[*base]bool{}}
	for _, dir := range dirs {
		b, err := readBase(dir)
		if err != nil {
			return nil, needsDaemon("base %s: %v", dir, err)
		}
		if b.id.String() == ins.ID {
			p.self = b
		}
		for _, l := range b.layers {
			if _, ok := p.blobs[l.diffID]; !ok {
				p.blobs[l.diffID] = l
			}
		}
	}
	for _, s := range ins.RootFS.Layers {
		h, err := v1.NewHash(s)
		if err != nil {
			return nil, needsDaemon("the daemon reports layer %q: %v", s, err)
		}
		p.diffIDs = append(p.diffIDs, h)
		if l, ok := p.blobs[h]; ok {
			p.known[h], p.used[l.base] = true, true
		} else {
			p.fresh = append(p.fresh, h)
		}
	}
	if len(p.fresh) > 0 && o.LayerStore != nil {
		if err := p.addPulled(ctx, o, target, log); err != nil {
			return nil, err
		}
	}
	if len(p.fresh) > 0 {
		if err := notPulled(ctx, d, ins.ID, p.fresh); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// writer is the registry side of one push: one pusher for every request
// and repository, so each blob is handled once per repository and the
// observer sees every answer.
type writer struct {
	pusher *remote.Pusher
	obs    *observer
	target name.Repository
	dests  *destinations
	// mountable: bases in a repository of a destination's registry (forRepo
	// keeps the mount for that registry's repositories only).
	mountable map[*base]name.Reference
	jobs      int
	explain   func(error) error
}

func newWriter(ctx context.Context, o Options, target name.Repository, dests *destinations, used map[*base]bool) (*writer, error) {
	w := &writer{target: target, dests: dests, mountable: map[*base]name.Reference{}, jobs: uploadJobs(o.Jobs), explain: o.Registry.Explain}
	registries := map[string]bool{}
	for _, d := range dests.all {
		registries[d.RegistryStr()] = true
	}
	// The source credentials go to the target's registry alone: an
	// additional repository elsewhere gets its registry's
	// additional_private_registries entry, or nothing.
	repos := []name.Repository{target}
	for b := range used {
		r, err := o.Registry.Repository(b.repo)
		if err != nil || !registries[r.RegistryStr()] {
			continue
		}
		w.mountable[b] = r.Tag(orLatest(b.tag))
		if r.RegistryStr() == target.RegistryStr() && r.String() != target.String() {
			repos = append(repos, r) // pull scope for the mount
		}
	}
	var err error
	w.pusher, w.obs, err = newPusher(ctx, o.Registry, w.jobs, repos)
	return w, err
}

// uploadJobs is Options.Jobs with its default.
func uploadJobs(n int) int {
	if n <= 0 {
		return 3
	}
	return n
}

// newPusher is one go-containerregistry pusher through an observer, with
// the source credentials for the registry of repos.
func newPusher(ctx context.Context, reg *registry.Client, jobs int, repos []name.Repository) (*remote.Pusher, *observer, error) {
	obs := newObserver(reg.Transport())
	opts := append(reg.RemoteOptions(ctx, repos...), remote.WithJobs(jobs), remote.WithTransport(obs))
	p, err := remote.NewPusher(opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("push: %w", err)
	}
	return p, obs, nil
}

// layer is a base's original blob, mountable from the base's repository
// when the registry is the target's.
func (w *writer) layer(l *baseBlob, mt types.MediaType) v1.Layer {
	bl := &blob{digest: l.digest, diffID: l.diffID, size: l.size, mediaType: mt, comp: l.comp, open: l.open}
	if ref, ok := w.mountable[l.base]; ok {
		return &remote.MountableLayer{Layer: bl, Reference: ref}
	}
	return bl
}

// baseLayers are the base blobs that can go before the manifest is known:
// those whose digest the tarball names (the others wait for verify).
func (w *writer) baseLayers(p *layerPlan) []v1.Layer {
	var out []v1.Layer
	seen := map[v1.Hash]bool{}
	for _, d := range p.diffIDs {
		l, ok := p.blobs[d]
		if !ok || l.digest.Hex == "" || seen[l.digest] {
			continue
		}
		seen[l.digest] = true
		// This media type only tells go-containerregistry the blob is
		// distributable; assemble picks the manifest's.
		out = append(out, w.layer(l, docker.layer(l.comp)))
	}
	return out
}

// assemble writes the manifest in one media type family, the base's (of
// the first base layer): base layers name their original blobs, new ones
// the gzip compressed here. sizes maps every blob digest to its size.
func assemble(p *layerPlan, w *writer, config []byte, sv *saved, log *logrus.Entry) (*pushImage, map[string]int64, error) {
	fam, why, found := docker, "the format docker push writes (no layer comes from a base folder)", false
	for _, d := range p.diffIDs {
		l, ok := p.blobs[d]
		if ok && !found {
			fam, why, found = l.base.family, l.base.familyWhy, true
		}
		if ok && l.comp == compression.ZStd {
			fam, why = oci, "as its zstd-compressed layers need (a Docker manifest cannot name zstd)"
		}
	}
	log.Infof("push: writing %s image manifest, %s", fam.withArticle(), why)
	var layers []v1.Layer
	var descs []v1.Descriptor
	sizes := map[string]int64{sha256Hash(config).String(): int64(len(config))}
	for _, d := range p.diffIDs {
		if l, ok := p.blobs[d]; ok {
			mt := fam.layer(l.comp)
			layers = append(layers, w.layer(l, mt))
			descs = append(descs, v1.Descriptor{MediaType: mt, Size: l.size, Digest: l.digest})
			sizes[l.digest.String()] = l.size
			continue
		}
		f := sv.fresh[d]
		bl := &blob{digest: f.digest, diffID: d, size: f.size, mediaType: fam.layer(compression.GZip), comp: compression.GZip, open: f.open}
		layers = append(layers, bl)
		descs = append(descs, bl.descriptor())
		sizes[f.digest.String()] = f.size
	}
	var raw []byte
	if p.self != nil {
		raw = p.self.raw
	}
	img, err := newImage(config, fam, layers, descs, raw)
	if err != nil {
		return nil, nil, fmt.Errorf("push: writing the manifest: %w", err)
	}
	if p.self != nil {
		img.configFrom = w.mountable[p.self] // the base's own config
	}
	return img, sizes, nil
}

// addPulled takes out of p.fresh every layer dockerd pulled from the
// target's registry, as its distribution metadata in the layer store says
// (pulledBlob): such a layer is pushed as that very blob, found in the
// target repository or mounted from the one it came from (else streamed
// from there as it is), never compressed again under another digest. This
// is what `docker push` does with the same metadata, without streaming the
// image out of the daemon. The blob's size comes from a HEAD on its
// repository and its compression from its first bytes: a blob not there
// any more, unreadable or not gzip keeps the layer fresh. A layer pulled
// from another registry stays fresh too: no registry mounts across
// registries, and the daemon would compress it again as well.
func (p *layerPlan) addPulled(ctx context.Context, o Options, target name.Repository, log *logrus.Entry) error {
	found := make([]*baseBlob, len(p.fresh))
	bases := map[string]*base{}
	var g errgroup.Group
	g.SetLimit(max(o.Jobs, 3))
	for i, h := range p.fresh {
		if h.String() == emptyLayer {
			continue
		}
		src, ok := pulledSource(o, target, o.LayerStore.pulled(h))
		if !ok {
			continue
		}
		b := bases[src.repo]
		if b == nil {
			b = &base{dir: "pulled from " + src.repo, repo: src.repo, family: docker, fixed: true, verified: true,
				familyWhy: "the format docker push writes (base layers dockerd pulled from " + src.repo + ")"}
			bases[src.repo] = b
		}
		g.Go(func() error {
			// ctx, not an errgroup's: the blob may be read later (for a
			// repository on another registry), after Wait returned.
			l, err := remoteBlob(ctx, o, b, h, src.digest)
			if err != nil {
				log.Debugf("push: layer %s: dockerd pulled it as %s from %s, but %v: compressing it here", logging.ShortID(h.String()), logging.ShortID(src.digest.String()), src.repo, err)
				return nil
			}
			found[i] = l
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	var fresh []v1.Hash
	n, from := 0, map[string]bool{}
	for i, h := range p.fresh {
		l := found[i]
		if l == nil {
			fresh = append(fresh, h)
			continue
		}
		from[l.base.repo] = true
		if _, ok := p.blobs[h]; !ok {
			p.blobs[h] = l
		}
		p.known[h], p.used[p.blobs[h].base] = true, true
		n++
	}
	if n > 0 {
		log.Infof("push: %d layer%s came from %s, which dockerd pulled: pushing the original blob%s from there", n, plural(n), strings.Join(slices.Sorted(maps.Keys(from)), ", "), plural(n))
	}
	p.fresh = fresh
	return nil
}

// pulledSource picks, of where dockerd says a layer came from, a repository
// on the target's registry: the target itself first (the blob is there),
// else the first one (a mount).
func pulledSource(o Options, target name.Repository, srcs []pulledBlob) (pulledBlob, bool) {
	var pick pulledBlob
	ok := false
	for _, s := range srcs {
		r, err := o.Registry.Repository(s.repo)
		if err != nil || r.RegistryStr() != target.RegistryStr() {
			continue
		}
		if r.String() == target.String() {
			return s, true
		}
		if !ok {
			pick, ok = s, true
		}
	}
	return pick, ok
}

// remoteBlob is digest in b's repository as a base layer: its size from a
// HEAD, its compression from its first bytes (only gzip: what dockerd's
// own push names such a blob), its bytes read from there if the target
// needs them.
func remoteBlob(ctx context.Context, o Options, b *base, diffID, digest v1.Hash) (*baseBlob, error) {
	repo, err := o.Registry.Repository(b.repo)
	if err != nil {
		return nil, err
	}
	rl, err := remote.Layer(repo.Digest(digest.String()), o.Registry.RemoteOptions(ctx, repo)...)
	if err != nil {
		return nil, err
	}
	size, err := rl.Size()
	if err != nil {
		return nil, fmt.Errorf("the registry does not give its size: %w", o.Registry.Explain(err))
	}
	rc, err := rl.Compressed()
	if err != nil {
		return nil, fmt.Errorf("reading it: %w", o.Registry.Explain(err))
	}
	var m [2]byte
	_, err = io.ReadFull(rc, m[:])
	rc.Close()
	if err != nil || m != [2]byte{0x1f, 0x8b} {
		return nil, fmt.Errorf("it is not gzip-compressed (%v)", err)
	}
	return &baseBlob{base: b, diffID: diffID, digest: digest, size: size, comp: compression.GZip, fetch: rl.Compressed}, nil
}

// notPulled fails with ErrNeedsDaemon when a layer not in any base belongs
// to an image the daemon pulled (it has RepoDigests): the daemon knows that
// layer's compressed blob in the registry, this package does not. Loaded
// images have no RepoDigests, and every loaded image is a base.
func notPulled(ctx context.Context, d Daemon, self string, fresh []v1.Hash) error {
	want := map[string]bool{}
	for _, h := range fresh {
		if h.String() != emptyLayer {
			want[h.String()] = true
		}
	}
	list, err := d.ImageList(ctx, image.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing the daemon's images: %w", err)
	}
	for _, s := range list {
		if len(s.RepoDigests) == 0 || s.ID == self {
			continue
		}
		ins, err := d.ImageInspect(ctx, s.ID)
		if err != nil {
			return fmt.Errorf("inspecting image %s: %w", s.ID, err)
		}
		for _, l := range ins.RootFS.Layers {
			if want[l] {
				return needsDaemon("layer %s came from %s, which the daemon pulled: only the daemon knows its compressed blob", logging.ShortID(l), s.RepoDigests[0])
			}
		}
	}
	return nil
}

func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func orLatest(tag string) string {
	if tag == "" {
		return "latest"
	}
	return tag
}
