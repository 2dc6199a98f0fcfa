package resource

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/pkg/push"
	"github.com/concourse-docker/docker-image-resource/pkg/retry"
	"github.com/docker/go-units"
)

// pushImage pushes imageID under every tag of the plan, to the source's
// repository and every additional one, and returns the first tag's
// manifest digest (the same everywhere) and metadata for the response.
// Images on bases from gets with save: true go straight to the registry,
// reusing the bases' original blobs (pkg/push), every blob to every
// repository before any manifest; anything else, or an image pkg/push
// cannot reuse the blobs of, goes through the daemon d to the source's
// repository and on from there (push.Copy).
func pushImage(ctx context.Context, env Env, s *session, src *protocol.Source, d *daemon.Daemon, plan *putPlan, made product) (string, []protocol.MetadataField, error) {
	if made.layout != "" {
		return pushLayout(ctx, env, s, src, plan, made.layout)
	}
	imageID := made.id
	cli := d.Client()
	why := ""
	switch plan.source {
	case sourceBuild, sourceLoad:
		reg, err := registryClient(env, plan.pushSource(src), s.log)
		if err != nil {
			return "", nil, err
		}
		// pkg/push reuses the blobs of every folder the daemon loaded.
		bases := plan.baseDirs()
		if plan.source == sourceLoad {
			bases = append(bases, plan.path)
		}
		res, err := push.Push(ctx, push.Options{
			Daemon: cli, Registry: reg, Image: imageID, Repository: plan.repository, Additional: plan.additional, Tags: plan.tags,
			Bases: bases, Jobs: src.Uploads(), TempDir: scratchDir(), LayerStore: ownLayerStore(d), Log: s.log,
		})
		if err == nil {
			return res.Digest.String(), straightPushed(s, plan, res), nil
		}
		var nd *push.NeedsDaemonError
		if !errors.As(err, &nd) {
			return "", nil, err
		}
		why = nd.Reason
	default:
		why = fmt.Sprintf("params.%s: the original compressed blobs of its layers are unknown", plan.source)
	}
	s.log.Infof("push: through the daemon: %s", why)
	if len(plan.additional) > 0 {
		s.log.Infof("push: the daemon pushes %s first, under every tag; then every blob goes on to each additional repository (%d) before any of them gets a manifest",
			plan.repository, len(plan.additional))
	}
	results, err := daemonPush(ctx, s, func() ([]engine.PushResult, error) {
		return engine.Push(ctx, cli, imageID, plan.repository, plan.tags, plan.auth, s.log)
	})
	if err != nil {
		if len(plan.additional) > 0 {
			err = fmt.Errorf("%w (no additional repository got a tag)", err)
		}
		return "", nil, err
	}
	digest := ""
	for _, r := range results {
		if r.Tag == plan.tags[0] {
			digest = r.Digest
		}
	}
	if digest == "" {
		return "", nil, fmt.Errorf("push %s:%s: the daemon reported no digest", plan.repository, plan.tags[0])
	}
	if err := copyOn(ctx, env, s, src, plan, digest); err != nil {
		return "", nil, err
	}
	return digest, append(protocol.Metadata("push", "daemon"), plan.repositoriesMeta()...), nil
}

// straightPushed logs what a push straight to the registry did and
// returns its metadata.
func straightPushed(s *session, plan *putPlan, res *push.Result) []protocol.MetadataField {
	uploaded := fmt.Sprintf("%s (%s, %s)", units.HumanSize(float64(res.Uploaded.Bytes)), count(res.Uploaded.Blobs, "blob"), count(res.Manifests, "manifest"))
	reused := res.Reused()
	if len(plan.additional) == 0 {
		s.log.Infof("push: straight to the registry in %s: uploaded %s, reused %s: %d already in %s, %d mounted from a base's repository",
			res.Took.Round(10*time.Millisecond), uploaded, reused, res.Existing.Blobs, plan.repository, res.Mounted.Blobs)
	} else {
		s.log.Infof("push: straight to the registries in %s: uploaded %s, reused %s", res.Took.Round(10*time.Millisecond), uploaded, reused)
		logRepositories(s, res.Repositories)
	}
	meta := protocol.Metadata("push", "registry", "uploaded", uploaded, "reused", reused.String())
	return append(meta, plan.repositoriesMeta()...)
}

// pushLayout pushes the OCI layout a solved build wrote, its manifest
// bytes unchanged, with the bases' blobs mounted where the registry has
// them.
func pushLayout(ctx context.Context, env Env, s *session, src *protocol.Source, plan *putPlan, dir string) (string, []protocol.MetadataField, error) {
	reg, err := registryClient(env, plan.pushSource(src), s.log)
	if err != nil {
		return "", nil, err
	}
	res, err := push.PushLayout(ctx, push.LayoutOptions{
		Registry: reg, Dir: dir, Repository: plan.repository, Additional: plan.additional, Tags: plan.tags,
		Bases: plan.baseDirs(), Jobs: src.Uploads(), Log: s.log,
	})
	if err != nil {
		return "", nil, err
	}
	return res.Digest.String(), straightPushed(s, plan, res), nil
}

// baseDirs are the folders of every base the daemon loaded, whose blobs
// pkg/push reuses.
func (p *putPlan) baseDirs() []string {
	var dirs []string
	for _, f := range slices.Concat(p.baseFolders, p.cacheFolders) {
		dirs = append(dirs, f.Dir)
	}
	return dirs
}

// copyOn sends what the daemon pushed to the source's repository on to the
// additional repositories. The source's repository holds the new tags
// already: a failure here says so.
func copyOn(ctx context.Context, env Env, s *session, src *protocol.Source, plan *putPlan, digest string) error {
	if len(plan.additional) == 0 {
		return nil
	}
	reg, err := registryClient(env, plan.pushSource(src), s.log)
	if err != nil {
		return err
	}
	res, err := push.Copy(ctx, push.CopyOptions{Registry: reg, Repository: plan.repository, Digest: digest, Tags: plan.tags,
		Additional: plan.additional, Jobs: src.Uploads(), Log: s.log})
	if err != nil {
		// Either error says which repositories hold the new tags.
		return fmt.Errorf("the daemon pushed %s under every tag; sending it on to params.additional_repositories: %w", plan.repository, err)
	}
	s.log.Infof("push: sent on from %s in %s: uploaded %s (%s), reused %s", plan.repository, res.Took.Round(10*time.Millisecond),
		units.HumanSize(float64(res.Uploaded.Bytes)), count(res.Uploaded.Blobs, "blob"), res.Reused())
	logRepositories(s, res.Repositories[1:])
	return nil
}

// logRepositories says what each repository of a fan-out got.
func logRepositories(s *session, repos []push.RepositoryStats) {
	for _, r := range repos {
		s.log.Infof("push: %s: %s uploaded, %s already there, %s mounted, %s",
			r.Repository, count(r.Uploaded.Blobs, "blob"), count(r.Existing.Blobs, "blob"), count(r.Mounted.Blobs, "blob"), count(r.Manifests, "manifest"))
	}
}

// repositoriesMeta lists every repository pushed to, the source's first,
// when there are several.
func (p *putPlan) repositoriesMeta() []protocol.MetadataField {
	if len(p.additional) == 0 {
		return nil
	}
	return protocol.Metadata("repositories", strings.Join(append([]string{p.repository}, p.additional...), " "))
}

// ownLayerStore is d's layer store on disk, where pkg/push reads the config
// and the new layers instead of streaming the whole image out of d. Reading
// dockerd's private files is safe only because the put started d and owns
// its data root: nothing else writes there, and a committed layer never
// changes. pkg/push decides whether the store can be read (storage driver,
// image store) and falls back to the save stream.
func ownLayerStore(d *daemon.Daemon) *push.LayerStore {
	return &push.LayerStore{Root: d.DataRoot(), Driver: d.StorageDriver()}
}

// daemonRateLimitRetry is the policy of pushing through the daemon again
// after the registry rate-limited it: 5, 10 and 20 s later. dockerd retries
// an upload after 5xx answers and network errors itself, but fails at once
// on a 429 and ignores Retry-After. Layers already pushed are skipped the
// next time.
var daemonRateLimitRetry = retry.Policy{Attempts: 4, Initial: 5 * time.Second}

func daemonPush(ctx context.Context, s *session, push func() ([]engine.PushResult, error)) ([]engine.PushResult, error) {
	tries := daemonRateLimitRetry.Start()
	for {
		results, err := push()
		if err == nil || ctx.Err() != nil || !retry.IsRateLimit(err) {
			return results, err
		}
		wait, stop := tries.Next(retry.After{})
		if stop != "" {
			return results, err
		}
		s.log.Warnf("push: the registry rate-limited the daemon (%v); pushing again in %s (attempt %d of %d)", err, wait, tries.Attempt(), daemonRateLimitRetry.Attempts)
		if retry.Sleep(ctx, wait) != nil {
			return nil, err
		}
	}
}

// scratchDir is where new layers are compressed: /scratch (a Concourse
// volume on the worker's disk, as pkg/daemon uses for its data root) when
// it exists, else the system's temp folder.
func scratchDir() string {
	if fi, err := os.Stat("/scratch"); err == nil && fi.IsDir() {
		return "/scratch"
	}
	return ""
}

func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
