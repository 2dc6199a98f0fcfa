package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/docker/docker/client"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"github.com/sirupsen/logrus"
)

// RepoRoot finds the repository (the folder with go.mod) at or above dir.
func RepoRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod at or above %s", dir)
		}
	}
}

// ContextKey hashes what a build of repo's Dockerfile reads: the Dockerfile,
// .dockerignore and every file .dockerignore lets into the context (path,
// mode and content; mtimes do not matter).
func ContextKey(repo string) (string, error) {
	var excludes []string
	if b, err := os.ReadFile(filepath.Join(repo, ".dockerignore")); err == nil {
		if excludes, err = ignorefile.ReadAll(bytes.NewReader(b)); err != nil {
			return "", fmt.Errorf("reading .dockerignore: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	pm, err := patternmatcher.New(excludes)
	if err != nil {
		return "", fmt.Errorf("parsing .dockerignore: %w", err)
	}
	var lines []string
	err = filepath.WalkDir(repo, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(repo, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		skip, err := pm.MatchesOrParentMatches(rel)
		if err != nil {
			return err
		}
		if rel == "Dockerfile" || rel == ".dockerignore" {
			skip = false // the daemon always gets these
		}
		if skip {
			if d.IsDir() && !exceptionBelow(pm, rel) {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case fi.Mode().IsRegular():
			h, err := hashFile(p)
			if err != nil {
				return err
			}
			lines = append(lines, fmt.Sprintf("f %s %o %s", rel, fi.Mode().Perm(), h))
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			lines = append(lines, fmt.Sprintf("l %s %s", rel, target))
		case fi.IsDir():
			lines = append(lines, fmt.Sprintf("d %s %o", rel, fi.Mode().Perm()))
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hashing the build context %s: %w", repo, err)
	}
	sort.Strings(lines)
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(sum[:]), nil
}

// exceptionBelow reports whether a "!" pattern may bring back something
// inside the excluded folder rel, which then has to be walked.
func exceptionBelow(pm *patternmatcher.PatternMatcher, rel string) bool {
	for _, p := range pm.Patterns() {
		if p.Exclusion() && strings.HasPrefix(p.String()+"/", rel+"/") {
			return true
		}
	}
	return false
}

// ImageKey names a build of the image from local bases: it changes when the
// minbase, the builder inputs, the build context or the version change.
func ImageKey(ctx context.Context, repo, minbaseTar string, in BuilderInputs, version string) (string, error) {
	mb, err := hashFile(minbaseTar)
	if err != nil {
		return "", err
	}
	bk, err := in.Key()
	if err != nil {
		return "", err
	}
	ck, err := ContextKey(repo)
	if err != nil {
		return "", err
	}
	return hashStrings("image-v1", mb, bk, ck, version), nil
}

// BuildOptions configures Build.
type BuildOptions struct {
	Repo      string // the repository: build context and Dockerfile
	Tag       string // name of the built image
	Version   string // stamped into the binaries and the labels
	BuildArgs map[string]string
	// NetworkMode of RUN steps: "host" on an isolated daemon (no bridge),
	// "" for the daemon's default.
	NetworkMode string
}

// Build builds repo's Dockerfile with the classic builder (the context tar
// honours .dockerignore) and returns the image ID.
func Build(ctx context.Context, cli engine.Client, o BuildOptions, log *logrus.Entry) (string, error) {
	log = logging.OrDiscard(log)
	args := map[string]string{"VERSION": o.Version}
	for k, v := range o.BuildArgs {
		args[k] = v
	}
	t0 := time.Now()
	res, err := engine.Build(ctx, cli, engine.BuildOptions{
		ContextDir: o.Repo, Tags: []string{o.Tag}, BuildArgs: args, NetworkMode: o.NetworkMode,
	}, log)
	if err != nil {
		return "", err
	}
	log.Infof("built %s (%s) in %s", o.Tag, logging.ShortID(res.ID), time.Since(t0).Round(time.Second))
	return res.ID, nil
}

// Saver is the part of the Engine API client Save needs.
type Saver interface {
	ImageSave(ctx context.Context, images []string, opts ...client.ImageSaveOption) (io.ReadCloser, error)
}

// Save writes ref as a docker-save tarball at path, atomically.
func Save(ctx context.Context, cli Saver, ref, path string) error {
	rc, err := cli.ImageSave(ctx, []string{ref})
	if err != nil {
		return fmt.Errorf("saving %s: %w", ref, err)
	}
	defer rc.Close()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".save-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, rc); err != nil {
		tmp.Close()
		return fmt.Errorf("saving %s: %w", ref, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
