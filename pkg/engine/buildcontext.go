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
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("build context %s: %w", dir, err)
	}
	if fi, err := os.Stat(realDir); err != nil {
		return nil, fmt.Errorf("build context %s: %w", dir, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("build context %s is not a directory", dir)
	}
	if realDir, err = filepath.Abs(realDir); err != nil {
		return nil, fmt.Errorf("build context %s: %w", dir, err)
	}
	if dockerfile == "" {
		dockerfile = filepath.Join(dir, "Dockerfile")
	}
	realDF, err := filepath.EvalSymlinks(dockerfile)
	if err != nil {
		return nil, fmt.Errorf("dockerfile %s: %w", dockerfile, err)
	}
	if realDF, err = filepath.Abs(realDF); err != nil {
		return nil, fmt.Errorf("dockerfile %s: %w", dockerfile, err)
	}
	dfInfo, err := os.Stat(realDF)
	if err != nil {
		return nil, fmt.Errorf("dockerfile %s: %w", dockerfile, err)
	}
	if !dfInfo.Mode().IsRegular() {
		return nil, fmt.Errorf("dockerfile %s is not a file", dockerfile)
	}

	c := &buildContext{dir: realDir}
	var excludes []string
	ignoreContent, err := os.ReadFile(filepath.Join(realDir, dockerignore))
	switch {
	case err == nil:
		if excludes, err = ignorefile.ReadAll(bytes.NewReader(ignoreContent)); err != nil {
			return nil, fmt.Errorf("reading %s: %w", filepath.Join(dir, dockerignore), err)
		}
	case errors.Is(err, os.ErrNotExist):
		ignoreContent = nil
	default:
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(dir, dockerignore), err)
	}

	rel, err := filepath.Rel(realDir, realDF)
	if err == nil && filepath.IsLocal(rel) {
		c.dockerfile = filepath.ToSlash(rel)
	} else {
		if c.external, err = os.ReadFile(realDF); err != nil {
			return nil, fmt.Errorf("reading dockerfile %s: %w", dockerfile, err)
		}
		c.externalMode, c.externalInfo = dfInfo.Mode().Perm(), dfInfo
		var rnd [10]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, fmt.Errorf("naming the dockerfile in the context: %w", err)
		}
		// Random like the docker CLI's: no clash with a file of the context.
		c.dockerfile = ".dockerfile." + hex.EncodeToString(rnd[:])
		ig := ignoreContent
		if ig == nil {
			ig = []byte(dockerignore + "\n") // so the daemon removes ours too
		}
		c.ignore = append(bytes.TrimRight(ig, "\n"), []byte("\n"+c.dockerfile+"\n")...)
	}

	// The daemon must get the Dockerfile and .dockerignore even when ignored.
	pm, err := patternmatcher.New(excludes)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", filepath.Join(dir, dockerignore), err)
	}
	for _, keep := range []string{dockerignore, c.dockerfile} {
		if m, _ := pm.MatchesOrParentMatches(keep); m {
			excludes = append(excludes, "!"+keep)
		}
	}
	if c.pm, err = patternmatcher.New(excludes); err != nil {
		return nil, fmt.Errorf("parsing %s: %w", filepath.Join(dir, dockerignore), err)
	}
	return c, nil
}

// write writes the context as an uncompressed tar to w, every entry owned by
// root like the docker CLI sends it. Unreadable files fail it.
func (c *buildContext) write(ctx context.Context, w io.Writer) error {
	tw := tar.NewWriter(w)
	var parents []string
	var parentInfo []patternmatcher.MatchInfo
	sawIgnore := false
	err := filepath.WalkDir(c.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(c.dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		// Match with the results of the enclosing directories, as the CLI
		// does, so a "!" exception inside an excluded folder works.
		for len(parents) > 0 && !strings.HasPrefix(rel, parents[len(parents)-1]+string(filepath.Separator)) {
			parents, parentInfo = parents[:len(parents)-1], parentInfo[:len(parentInfo)-1]
		}
		var pinfo patternmatcher.MatchInfo
		if len(parentInfo) > 0 {
			pinfo = parentInfo[len(parentInfo)-1]
		}
		skip, info, err := c.pm.MatchesUsingParentResults(rel, pinfo)
		if err != nil {
			return fmt.Errorf("matching %s against %s: %w", rel, dockerignore, err)
		}
		if d.IsDir() {
			parents, parentInfo = append(parents, rel), append(parentInfo, info)
		}
		if skip {
			if !d.IsDir() || c.exceptionBelow(rel) {
				return nil
			}
			return filepath.SkipDir
		}
		if rel == dockerignore && c.ignore != nil {
			sawIgnore = true
			fi, err := d.Info()
			if err != nil {
				return err
			}
			return writeBytes(tw, dockerignore, fi.Mode().Perm(), fi, c.ignore)
		}
		return c.add(tw, p, rel, d)
	})
	if err != nil {
		return fmt.Errorf("build context %s: %w", c.dir, err)
	}
	if c.external != nil {
		if !sawIgnore {
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
