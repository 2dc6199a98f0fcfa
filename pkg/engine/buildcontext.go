package engine

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

const dockerignore = ".dockerignore"

// buildContext is a context folder to send as a tar, with .dockerignore
// applied on our side: the daemon applies it to a tar context only to remove
// the Dockerfile and .dockerignore after reading them.
type buildContext struct {
	dir string
	// dockerfile is the Dockerfile's name inside the tar.
	dockerfile string
	// external is the content of a Dockerfile from outside dir, added as
	// dockerfile; nil when the Dockerfile is inside dir.
	external     []byte
	externalMode fs.FileMode
	externalInfo fs.FileInfo
	// ignore replaces .dockerignore's content when non-nil (it then also
	// names the external Dockerfile, so a COPY . never sees it).
	ignore []byte
	pm     *patternmatcher.PatternMatcher
}

// newBuildContext prepares dir for sending. dockerfile is a path (absolute or
// relative to the working directory); empty means dir/Dockerfile.
func newBuildContext(dir, dockerfile string) (*buildContext, error) {
	realDir, err := contextDir(dir)
	if err != nil {
		return nil, err
	}
	if dockerfile == "" {
		dockerfile = filepath.Join(dir, "Dockerfile")
	}
	realDF, dfInfo, err := dockerfileOf(dockerfile)
	if err != nil {
		return nil, err
	}
	ignoreContent, excludes, err := readDockerignore(realDir, dir)
	if err != nil {
		return nil, err
	}
	c := &buildContext{dir: realDir}
	rel, err := filepath.Rel(realDir, realDF)
	if err == nil && filepath.IsLocal(rel) {
		c.dockerfile = filepath.ToSlash(rel)
	} else if err := c.addExternal(realDF, dockerfile, dfInfo, ignoreContent); err != nil {
		return nil, err
	}
	if c.pm, err = keepingDockerfile(excludes, c.dockerfile); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", filepath.Join(dir, dockerignore), err)
	}
	return c, nil
}

// contextDir is dir's absolute path with symlinks resolved; it must be a
// directory.
func contextDir(dir string) (string, error) {
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("build context %s: %w", dir, err)
	}
	if fi, err := os.Stat(realDir); err != nil {
		return "", fmt.Errorf("build context %s: %w", dir, err)
	} else if !fi.IsDir() {
		return "", fmt.Errorf("build context %s is not a directory", dir)
	}
	if realDir, err = filepath.Abs(realDir); err != nil {
		return "", fmt.Errorf("build context %s: %w", dir, err)
	}
	return realDir, nil
}

// dockerfileOf is the Dockerfile's absolute path with symlinks resolved,
// and its info; it must be a regular file.
func dockerfileOf(dockerfile string) (string, fs.FileInfo, error) {
	realDF, err := filepath.EvalSymlinks(dockerfile)
	if err != nil {
		return "", nil, fmt.Errorf("dockerfile %s: %w", dockerfile, err)
	}
	if realDF, err = filepath.Abs(realDF); err != nil {
		return "", nil, fmt.Errorf("dockerfile %s: %w", dockerfile, err)
	}
	dfInfo, err := os.Stat(realDF)
	if err != nil {
		return "", nil, fmt.Errorf("dockerfile %s: %w", dockerfile, err)
	}
	if !dfInfo.Mode().IsRegular() {
		return "", nil, fmt.Errorf("dockerfile %s is not a file", dockerfile)
	}
	return realDF, dfInfo, nil
}

// readDockerignore reads realDir's .dockerignore: its content (nil when
// there is none) and its patterns. dir is the context as given, for errors.
func readDockerignore(realDir, dir string) (content []byte, excludes []string, err error) {
	content, err = os.ReadFile(filepath.Join(realDir, dockerignore))
	switch {
	case err == nil:
		if excludes, err = ignorefile.ReadAll(bytes.NewReader(content)); err != nil {
			return nil, nil, fmt.Errorf("reading %s: %w", filepath.Join(dir, dockerignore), err)
		}
		return content, excludes, nil
	case errors.Is(err, os.ErrNotExist):
		return nil, nil, nil
	default:
		return nil, nil, fmt.Errorf("reading %s: %w", filepath.Join(dir, dockerignore), err)
	}
}

// addExternal adds a Dockerfile from outside the context under a random
// name, and a .dockerignore (the context's, or one of its own) that names
// it, so a COPY . never sees it and the daemon removes it after reading.
func (c *buildContext) addExternal(realDF, dockerfile string, dfInfo fs.FileInfo, ignoreContent []byte) error {
	var err error
	if c.external, err = os.ReadFile(realDF); err != nil {
		return fmt.Errorf("reading dockerfile %s: %w", dockerfile, err)
	}
	c.externalMode, c.externalInfo = dfInfo.Mode().Perm(), dfInfo
	var rnd [10]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return fmt.Errorf("naming the dockerfile in the context: %w", err)
	}
	// Random like the docker CLI's: no clash with a file of the context.
	c.dockerfile = ".dockerfile." + hex.EncodeToString(rnd[:])
	ig := ignoreContent
	if ig == nil {
		ig = []byte(dockerignore + "\n") // so the daemon removes ours too
	}
	c.ignore = append(bytes.TrimRight(ig, "\n"), []byte("\n"+c.dockerfile+"\n")...)
	return nil
}

// keepingDockerfile is the matcher of excludes that never excludes
// .dockerignore or the Dockerfile: the daemon must get both even when
// ignored.
func keepingDockerfile(excludes []string, dockerfile string) (*patternmatcher.PatternMatcher, error) {
	pm, err := patternmatcher.New(excludes)
	if err != nil {
		return nil, err
	}
	for _, keep := range []string{dockerignore, dockerfile} {
		if m, _ := pm.MatchesOrParentMatches(keep); m {
			excludes = append(excludes, "!"+keep)
		}
	}
	return patternmatcher.New(excludes)
}

// write writes the context as an uncompressed tar to w, every entry owned by
// root like the docker CLI sends it. Unreadable files fail it.
func (c *buildContext) write(ctx context.Context, w io.Writer) error {
	tw := tar.NewWriter(w)
	cw := &contextWalk{c: c, tw: tw, ctx: ctx}
	if err := filepath.WalkDir(c.dir, cw.visit); err != nil {
		return fmt.Errorf("build context %s: %w", c.dir, err)
	}
	if c.external != nil {
		if !cw.sawIgnore {
			if err := writeBytes(tw, dockerignore, 0o644, c.externalInfo, c.ignore); err != nil {
				return fmt.Errorf("build context: adding %s: %w", dockerignore, err)
			}
		}
		if err := writeBytes(tw, c.dockerfile, c.externalMode, c.externalInfo, c.external); err != nil {
			return fmt.Errorf("build context: adding the dockerfile: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("build context %s: %w", c.dir, err)
	}
	return nil
}

// contextWalk is write's walk of the context folder: it matches each path
// with the results of its enclosing directories, as the CLI does, so a "!"
// exception inside an excluded folder works.
type contextWalk struct {
	c          *buildContext
	tw         *tar.Writer
	ctx        context.Context
	parents    []string
	parentInfo []patternmatcher.MatchInfo
	sawIgnore  bool // the context's .dockerignore was written (replaced)
}

func (cw *contextWalk) visit(p string, d fs.DirEntry, err error) error {
	if err != nil {
		return err
	}
	if err := cw.ctx.Err(); err != nil {
		return err
	}
	c := cw.c
	rel, err := filepath.Rel(c.dir, p)
	if err != nil {
		return err
	}
	if rel == "." {
		return nil
	}
	skip, err := cw.excluded(rel, d.IsDir())
	if err != nil {
		return err
	}
	if skip {
		if !d.IsDir() || c.exceptionBelow(rel) {
			return nil
		}
		return filepath.SkipDir
	}
	if rel == dockerignore && c.ignore != nil {
		cw.sawIgnore = true
		fi, err := d.Info()
		if err != nil {
			return err
		}
		return writeBytes(cw.tw, dockerignore, fi.Mode().Perm(), fi, c.ignore)
	}
	return c.add(cw.tw, p, rel, d)
}

// excluded matches rel against .dockerignore with its parent's result, and
// remembers a directory's result for what is below it.
func (cw *contextWalk) excluded(rel string, isDir bool) (bool, error) {
	for len(cw.parents) > 0 && !strings.HasPrefix(rel, cw.parents[len(cw.parents)-1]+string(filepath.Separator)) {
		cw.parents, cw.parentInfo = cw.parents[:len(cw.parents)-1], cw.parentInfo[:len(cw.parentInfo)-1]
	}
	var pinfo patternmatcher.MatchInfo
	if len(cw.parentInfo) > 0 {
		pinfo = cw.parentInfo[len(cw.parentInfo)-1]
	}
	skip, info, err := cw.c.pm.MatchesUsingParentResults(rel, pinfo)
	if err != nil {
		return false, fmt.Errorf("matching %s against %s: %w", rel, dockerignore, err)
	}
	if isDir {
		cw.parents, cw.parentInfo = append(cw.parents, rel), append(cw.parentInfo, info)
	}
	return skip, nil
}

// exceptionBelow reports whether a "!" pattern may re-include something
// inside the excluded directory rel, which then has to be walked.
func (c *buildContext) exceptionBelow(rel string) bool {
	if !c.pm.Exclusions() {
		return false
	}
	prefix := rel + string(filepath.Separator)
	for _, pat := range c.pm.Patterns() {
		if pat.Exclusion() && strings.HasPrefix(pat.String()+string(filepath.Separator), prefix) {
			return true
		}
	}
	return false
}

func (c *buildContext) add(tw *tar.Writer, p, rel string, d fs.DirEntry) error {
	fi, err := d.Info()
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket != 0 {
		return nil // cannot be archived; the CLI skips them too
	}
	link := ""
	if fi.Mode()&os.ModeSymlink != 0 {
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	}
	h, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	h.Name = filepath.ToSlash(rel)
	if fi.IsDir() {
		h.Name += "/"
	}
	normalizeHeader(h)
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.CopyN(tw, f, h.Size); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	return nil
}

func writeBytes(tw *tar.Writer, name string, mode fs.FileMode, info fs.FileInfo, b []byte) error {
	h := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: int64(mode), Size: int64(len(b))}
	if info != nil {
		h.ModTime = info.ModTime()
	}
	normalizeHeader(h)
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err := tw.Write(b)
	return err
}

// normalizeHeader makes entries root-owned without host user names, and
// drops access and change times, which only break the build cache.
func normalizeHeader(h *tar.Header) {
	h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
	h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
}
