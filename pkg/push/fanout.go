package push

// Fan-out: one image to several repositories (params.additional_repositories).
// Every blob goes to every repository before any manifest is written, so a
// repository that refuses a blob (credentials, quota, a dead registry)
// leaves no new tag anywhere. Blobs travel once per registry: the first
// repository of each registry (its lead) gets them as a single push would
// (found, mounted from a base's repository, or uploaded), and every other
// repository on that registry mounts them from the lead. The manifest is one
// byte string written everywhere, so the digest is the same in every
// repository.

import (
	"context"
	"fmt"
	"strings"

	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/errgroup"
)

// destinations are the repositories a push writes to, the primary (the
// source's repository) first.
type destinations struct {
	all   []name.Repository
	given []string // as the user wrote each, for messages
	// groups holds all by registry, in the order of first appearance; the
	// first repository of each group is its lead.
	groups [][]name.Repository
	// primaryDone: the primary holds every blob and its tags already (the
	// daemon pushed it; Copy sends the image on from there).
	primaryDone bool
}

func newDestinations(reg *registry.Client, given string, additional []string) (*destinations, error) {
	primary, err := reg.Repository(given)
	if err != nil {
		return nil, err
	}
	d := &destinations{all: []name.Repository{primary}, given: []string{given}}
	for _, a := range additional {
		r, err := reg.Repository(a)
		if err != nil {
			return nil, fmt.Errorf("additional repository %s: %w", a, err)
		}
		d.all = append(d.all, r)
		d.given = append(d.given, a)
	}
	group := map[string]int{}
	for _, r := range d.all {
		i, ok := group[r.RegistryStr()]
		if !ok {
			i = len(d.groups)
			group[r.RegistryStr()] = i
			d.groups = append(d.groups, nil)
		}
		d.groups[i] = append(d.groups[i], r)
	}
	return d, nil
}

// name is how messages call r: as the user wrote it.
func (d *destinations) name(r name.Repository) string {
	for i, a := range d.all {
		if a.String() == r.String() {
			return d.given[i]
		}
	}
	return r.String()
}

func (d *destinations) registries() int { return len(d.groups) }

// forRepo is l as repo should receive it: a mount from a repository of
// another registry means nothing there (no registry mounts across
// registries), and one from repo itself is a blob it has.
func forRepo(l v1.Layer, repo name.Repository) v1.Layer {
	ml, ok := l.(*remote.MountableLayer)
	if !ok {
		return l
	}
	from := ml.Reference.Context()
	if from.RegistryStr() != repo.RegistryStr() || from.String() == repo.String() {
		return ml.Layer
	}
	return l
}

func unwrap(l v1.Layer) v1.Layer {
	if ml, ok := l.(*remote.MountableLayer); ok {
		return ml.Layer
	}
	return l
}

// send sends every layer (blobs of any kind: layers and the config) to
// every destination, jobs at a time: per registry, to its lead, then
// mounted from there into the others. A blob a repository already has is
// only checked (HEAD); go-containerregistry's pusher remembers what it
// sent, so sending a blob again is free.
func (w *writer) send(ctx context.Context, layers []v1.Layer) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(w.jobs)
	for _, grp := range w.dests.groups {
		for _, l := range layers {
			g.Go(func() error { return w.sendOne(gctx, grp, l) })
		}
	}
	return g.Wait()
}

func (w *writer) sendOne(ctx context.Context, grp []name.Repository, l v1.Layer) error {
	d, err := l.Digest()
	if err != nil {
		return err
	}
	for i, repo := range grp {
		if i == 0 && w.dests.primaryDone && repo.String() == w.dests.all[0].String() {
			continue
		}
		ll := forRepo(l, repo)
		if i > 0 {
			// The lead has it by now: a mount, not a second upload.
			ll = &remote.MountableLayer{Layer: unwrap(l), Reference: grp[0].Digest(d.String())}
		}
		if err := w.pusher.Upload(ctx, repo, ll); err != nil {
			return fmt.Errorf("push blob %s to %s: %w%s", d, w.dests.name(repo), w.explain(err), w.nothingTagged())
		}
	}
	return nil
}

// nothingTagged is what a failed blob leaves, for its error.
func (w *writer) nothingTagged() string {
	if len(w.dests.all) == 1 {
		return ""
	}
	if w.dests.primaryDone {
		return fmt.Sprintf(" (before any manifest was written to an additional repository: only %s holds the new tags)", w.dests.given[0])
	}
	return " (before any manifest was written: no repository holds the new tags)"
}

// tagAll writes the manifest under every tag to every destination, the
// primary first, one at a time, once every blob is everywhere (send). done
// lists the references that hold the image already (the daemon's pushes),
// for the error.
func (w *writer) tagAll(ctx context.Context, tags []string, img remote.Taggable, done []string) error {
	written := done
	for i, repo := range w.dests.all {
		if i == 0 && w.dests.primaryDone {
			continue
		}
		for j, t := range tags {
			if err := w.pusher.Put(ctx, repo.Tag(t), img); err != nil {
				return &ManifestError{Ref: w.dests.given[i] + ":" + t, Written: written, NotWritten: w.refsFrom(tags, i, j+1), Err: w.explain(err)}
			}
			written = append(written, w.dests.given[i]+":"+t)
		}
	}
	return nil
}

// refsFrom are the references after tags[j] of destination i.
func (w *writer) refsFrom(tags []string, i, j int) []string {
	var out []string
	for ; i < len(w.dests.all); i, j = i+1, 0 {
		for _, t := range tags[j:] {
			out = append(out, w.dests.given[i]+":"+t)
		}
	}
	return out
}

// ManifestError is a manifest write that failed after every blob had
// reached every repository: the references in Written hold the new image,
// Ref and NotWritten do not.
type ManifestError struct {
	Ref                 string // repository:tag, as the user wrote the repository
	Written, NotWritten []string
	Err                 error
}

func (e *ManifestError) Error() string {
	msg := fmt.Sprintf("push %s: %v", e.Ref, e.Err)
	if len(e.Written) == 0 {
		return msg + "; no tag was written anywhere"
	}
	msg += "; the new image is tagged in " + strings.Join(e.Written, ", ")
	if len(e.NotWritten) > 0 {
		msg += "; not tagged: " + strings.Join(e.NotWritten, ", ")
	}
	return msg
}

func (e *ManifestError) Unwrap() error { return e.Err }

// RepositoryStats is what one destination got.
type RepositoryStats struct {
	Repository                  string // as the user wrote it
	Uploaded, Existing, Mounted BlobStats
	Manifests                   int
}

// report fills res's counts from what the registries answered, sizes
// mapping every blob digest to its size: the sums and each repository's.
func (w *writer) report(res *Result, sizes map[string]int64) {
	res.Uploaded, res.Existing, res.Mounted = w.obs.tally(sizes)
	res.Uploaded.Bytes, res.Manifests = w.obs.sent.Load(), w.obs.manifests
	res.Repositories = w.stats(sizes)
}

// stats tallies each destination's blobs (digest → size) and manifests.
func (w *writer) stats(sizes map[string]int64) []RepositoryStats {
	var out []RepositoryStats
	for i, r := range w.dests.all {
		s := RepositoryStats{Repository: w.dests.given[i]}
		key := r.RegistryStr() + "/" + r.RepositoryStr()
		s.Uploaded, s.Existing, s.Mounted = w.obs.tallyRepo(key, sizes)
		s.Manifests = w.obs.manifestsOf(key)
		out = append(out, s)
	}
	return out
}

// Reused are the blobs that did not travel to this repository.
func (s RepositoryStats) Reused() BlobStats { return s.Existing.plus(s.Mounted) }
