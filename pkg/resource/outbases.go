package resource

import (
	"context"
	"fmt"
	"os"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/concourse-docker/docker-image-resource/pkg/usercheck"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/name"
)

// loadBases loads the load_base, load_bases and cache_from folders into the
// daemon and returns the references cache_from uses (the name, or the image
// ID of an unnamed folder). The daemon gets only the names the folders give
// (pkg/engine leaves a tarball's own tags out); afterwards every such name
// must point at its folder's image, checked by ID, or the put fails.
//
// Under BuildKit a base whose config names no os/architecture is loaded
// with the build platform, so that FROM takes it instead of going to the
// registry (engine.LoadOptions); cache_from folders are loaded the same way,
// so a folder given as both gets one image. Folders seeded says dockerd has
// already (written into its layer store before it started) are only
// checked and tagged.
func loadBases(ctx context.Context, s *session, cli engine.Client, srcDir string, plan *putPlan, seeded func(*baseimage.Folder) bool) ([]loadedBase, []string, error) {
	var loaded []loadedBase
	var claims []nameClaim
	var cacheFrom []string
	load := func(param string, f *baseimage.Folder) (engine.Base, error) {
		o := loadOptions(plan)
		o.Seeded = seeded(f)
		b, whole, err := loadAllPlatforms(ctx, s, cli, plan, param, f)
		if err != nil {
			return b, err
		}
		if !whole {
			b, err = engine.LoadFolder(ctx, cli, f, o, s.log)
		}
		if err != nil {
			return b, fmt.Errorf("%s %s: %w", param, rel(srcDir, f.Dir), err)
		}
		warnUnnamed(s, param, rel(srcDir, f.Dir), f, b)
		loaded = append(loaded, loadedBase{Base: b, param: plan.folderParam[f]})
		if b.Repository != "" {
			claims = append(claims, nameClaim{ref: b.Ref(), param: plan.folderParam[f], id: b.ID})
		}
		return b, nil
	}
	for _, f := range plan.baseFolders {
		if _, err := load("load_base", f); err != nil {
			return nil, nil, err
		}
	}
	for _, f := range plan.cacheFolders {
		b, err := load("cache_from", f)
		if err != nil {
			return nil, nil, err
		}
		cacheFrom = append(cacheFrom, b.Ref())
	}
	if err := checkNameClaims(claims); err != nil {
		return nil, nil, err
	}
	for _, c := range claims {
		ins, err := cli.ImageInspect(ctx, c.ref)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %s is not in the daemon after loading: %w", c.param, c.ref, err)
		}
		if ins.ID != c.id {
			return nil, nil, fmt.Errorf("%s: %s points at image %s after loading, not at the folder's %s", c.param, c.ref, ins.ID, c.id)
		}
	}
	return loaded, cacheFrom, nil
}

// loadOptions are the base folders' LoadOptions: under BuildKit the build
// platform for configs that name none.
func loadOptions(plan *putPlan) engine.LoadOptions {
	o := engine.LoadOptions{ContainerdStore: plan.solves()}
	if plan.buildsWithBuildKit() {
		p := baseimage.HostPlatform()
		o.Platform = &p
	}
	return o
}

// loadedBase is a base in the daemon and the entry that loaded it.
type loadedBase struct {
	engine.Base
	param string // e.g. "params.load_base (base)"
}

// checkBaseUsers fails a BuildKit build before it starts when a RUN step
// the build needs would run as a user BuildKit cannot look up in a loaded
// base: one without /etc/group (or /etc/passwd), where the classic builder
// runs the step (pkg/usercheck).
func checkBaseUsers(ctx context.Context, cli *client.Client, srcDir string, plan *putPlan, loaded []loadedBase) error {
	if !plan.buildsWithBuildKit() || len(loaded) == 0 {
		return nil
	}
	df, err := os.ReadFile(plan.dockerfile)
	if err != nil {
		return fmt.Errorf("build: reading %s: %w", rel(srcDir, plan.dockerfile), err)
	}
	byRef := map[string]*usercheck.Base{}
	for _, b := range loaded {
		key := usercheck.RefKey(b.Ref())
		if b.Repository == "" || key == "" || byRef[key] != nil {
			continue
		}
		ins, err := cli.ImageInspect(ctx, b.ID)
		if err != nil {
			return fmt.Errorf("%s: inspecting the loaded image %s: %w", b.param, logging.ShortID(b.ID), err)
		}
		ub := &usercheck.Base{Ref: b.Ref(), Param: b.param}
		if c := ins.Config; c != nil {
			ub.User, ub.Env, ub.WorkingDir, ub.OnBuild = c.User, c.Env, c.WorkingDir, len(c.OnBuild) > 0
		}
		ub.Files = userFiles(ctx, cli, b.ID)
		byRef[key] = ub
	}
	err = usercheck.Check(usercheck.Options{Dockerfile: df, BuildArgs: plan.buildArgs, Target: plan.target,
		Base: func(ref string) *usercheck.Base { return byRef[usercheck.RefKey(ref)] }})
	if err != nil {
		return fmt.Errorf("build: %s %w", rel(srcDir, plan.dockerfile), err)
	}
	return nil
}

// userFiles reads a loaded image's /etc/passwd and /etc/group when
// usercheck asks for them.
func userFiles(ctx context.Context, cli *client.Client, id string) func() (usercheck.Files, error) {
	return func() (usercheck.Files, error) {
		m, err := engine.ReadImageFiles(ctx, cli, id, "/etc/passwd", "/etc/group")
		if err != nil {
			return usercheck.Files{}, err
		}
		var f usercheck.Files
		for p, dst := range map[string]*[]byte{"/etc/passwd": &f.Passwd, "/etc/group": &f.Group} {
			if file, ok := m[p]; ok {
				*dst = file.Content
				if !file.Regular {
					f.Unknown = true
				} else if *dst == nil {
					*dst = []byte{}
				}
			}
		}
		return f, nil
	}
}

// nameClaim is a name a base folder gives its image.
type nameClaim struct {
	ref   string // repository:tag as the folder or entry gives it
	param string // e.g. "params.load_base (base)"
	id    string
}

// checkNameClaims fails when two folders give one name (as the daemon
// normalises it) to different images: a FROM can use only one of them.
func checkNameClaims(claims []nameClaim) error {
	first := map[string]nameClaim{}
	for _, c := range claims {
		key := c.ref
		if t, err := name.NewTag(c.ref, name.WeakValidation); err == nil {
			key = t.Name() // busybox and docker.io/library/busybox:latest are one name
		}
		prev, ok := first[key]
		if !ok {
			first[key] = c
			continue
		}
		if prev.id != c.id {
			return fmt.Errorf("%s and %s both name their image %s, but hold different images (%s and %s): a FROM can use only one of them. "+
				"Name one of them differently with the object form {path: ..., repository: ..., tag: ...}, or leave it out",
				prev.param, c.param, c.ref, logging.ShortID(prev.id), logging.ShortID(c.id))
		}
	}
	return nil
}
