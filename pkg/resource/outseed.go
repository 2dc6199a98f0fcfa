package resource

import (
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/pkg/layerstore"
)

// The put's bases go straight into the fresh data root before dockerd
// starts, where they can (engine.Seeding decides, folder by folder): the
// daemon gets the seed as an option (it runs it while containerd starts,
// with dockerd then started with --storage-driver overlay2, and empties the
// data root and starts dockerd as usual should either fail), and
// loadBases then only checks and tags what dockerd took. This is the
// daemon-option way and not "start dockerd, write, restart it": a restart
// would cost a second dockerd start, most of what the seed saves.

// planSeed is the seeding of the put's load_base, load_bases and
// cache_from folders; nil when none can be written.
func planSeed(env Env, s *session, plan *putPlan) *engine.Seeding {
	folders := append(append([]*baseimage.Folder{}, plan.baseFolders...), plan.cacheFolders...)
	if len(folders) == 0 {
		return nil
	}
	if plan.solves() {
		// The seed writes the classic layer store; the control API's
		// builds run on the containerd one.
		return nil
	}
	if env.Hooks.DockerLoad {
		s.log.Debug("load: the test hook DockerLoad is set: the bases go through docker load")
		return nil
	}
	return engine.PlanSeeding(folders, loadOptions(plan), s.log)
}

// daemonSeed is seed as the daemon's option.
func daemonSeed(seed *engine.Seeding) *daemon.Seed {
	if seed == nil {
		return nil
	}
	return &daemon.Seed{Driver: layerstore.Driver, Write: seed.Write}
}

// seedTook is how long writing the bases took, counted as "load" (making
// the bases available), not as the daemon's start.
func seedTook(d *daemon.Daemon) time.Duration {
	if d == nil {
		return 0
	}
	return d.SeedTook()
}

// seededBy says which folders' images dockerd has from the seed: none
// unless it took the seed.
func seededBy(seed *engine.Seeding, d *daemon.Daemon) func(*baseimage.Folder) bool {
	return func(f *baseimage.Folder) bool { return d != nil && d.Seeded() && seed.Holds(f) }
}
