package resource

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/pkg/push"
	"github.com/concourse-docker/docker-image-resource/pkg/retry"
	"github.com/docker/go-units"
)

// pushImage pushes imageID under every tag of the plan and returns the
// first tag's manifest digest and metadata for the response. Images on
// bases from gets with save: true go straight to the registry, reusing the
// bases' original blobs (pkg/push); anything else, or an image pkg/push
// cannot reuse the blobs of, goes through the daemon d.
func pushImage(ctx context.Context, env Env, s *session, src *protocol.Source, d *daemon.Daemon, plan *putPlan, imageID string) (string, []protocol.MetadataField, error) {
	cli := d.Client()
	why := ""
	switch plan.source {
	case sourceBuild, sourceLoad:
		reg, err := registryClient(env, src, s.log)
		if err != nil {
			return "", nil, err
		}
		// pkg/push reuses the blobs of every folder the daemon loaded.
		var bases []string
		for _, f := range slices.Concat(plan.baseFolders, plan.cacheFolders) {
			bases = append(bases, f.Dir)
		}
		if plan.source == sourceLoad {
			bases = append(bases, plan.path)
		}
		res, err := push.Push(ctx, push.Options{
			Daemon: cli, Registry: reg, Image: imageID, Repository: plan.repository, Tags: plan.tags,
			Bases: bases, Jobs: src.Uploads(), TempDir: scratchDir(), LayerStore: ownLayerStore(d), Log: s.log,
		})
		if err == nil {
			uploaded := fmt.Sprintf("%s (%s, %s)", units.HumanSize(float64(res.Uploaded.Bytes)), count(res.Uploaded.Blobs, "blob"), count(res.Manifests, "manifest"))
			reused := res.Reused()
			s.log.Infof("push: straight to the registry in %s: uploaded %s, reused %s: %d already in %s, %d mounted from a base's repository",
				res.Took.Round(10*time.Millisecond), uploaded, reused, res.Existing.Blobs, plan.repository, res.Mounted.Blobs)
			return res.Digest.String(), protocol.Metadata("push", "registry", "uploaded", uploaded, "reused", reused.String()), nil
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
	results, err := daemonPush(ctx, s, func() ([]engine.PushResult, error) {
		return engine.Push(ctx, cli, imageID, plan.repository, plan.tags, plan.auth, s.log)
	})
	if err != nil {
		return "", nil, err
	}
	for _, r := range results {
		if r.Tag == plan.tags[0] {
			return r.Digest, protocol.Metadata("push", "daemon"), nil
		}
	}
	return "", nil, fmt.Errorf("push %s:%s: the daemon reported no digest", plan.repository, plan.tags[0])
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
