// Package baseimage reads the folders users hand to load_base, load_bases,
// cache_from and load: this resource's own get with save: true, and the
// outputs of registry-image-resource (format: oci and oci-layout) and of
// oci-build-task (image.tar as a docker-save or an OCI-layout tar, or an
// OCI layout folder). The format is told from the contents, never from file
// names alone. Nothing here talks to a daemon: pkg/engine loads what Detect
// found, pkg/push reuses its blobs.
package baseimage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Kind is how the image is stored.
type Kind int

const (
	// DockerSave is a docker-save tarball (manifest.json, configs, layers).
	DockerSave Kind = iota
	// OCILayoutDir is an OCI image layout folder.
	OCILayoutDir
	// OCILayoutTar is an OCI image layout in an uncompressed tarball.
	OCILayoutTar
)

func (k Kind) String() string {
	switch k {
	case OCILayoutDir:
		return "OCI layout folder"
	case OCILayoutTar:
		return "OCI layout tarball"
	}
	return "docker-save tarball"
}

// Files this resource's get with save: true writes.
const (
	ImageFile      = "image"
	ImageIDFile    = "image-id"
	RepositoryFile = "repository"
	TagFile        = "tag"
	DigestFile     = "digest"
)

// Accepted lists the folder layouts Detect knows, for error messages.
const Accepted = `accepted folder layouts:
  - a get of this resource with save: true: image (docker-save tarball), image-id, repository, tag
  - registry-image-resource format: oci: image.tar (docker-save tarball), repository, tag, digest
  - registry-image-resource format: oci-layout: oci/ (OCI image layout), repository, tag
  - oci-build-task output: image.tar (docker-save or OCI-layout tarball) and digest, or image/ (OCI image layout)
  - an OCI image layout itself: oci-layout, index.json, blobs/`

// Folder is a recognised base image folder.
type Folder struct {
	// Dir is the folder as given.
	Dir string
	// Origin says which tool's layout it is, for logs.
	Origin string
	Kind   Kind
	// Path is the docker-save tarball, the layout folder or the layout
	// tarball.
	Path string
	// Repository and Tag are the name FROM uses: from the folder's files,
	// or from an entry's object form. Empty when nothing names it.
	Repository, Tag string
	// ImageID is the image-id file's content (this resource's own folders):
	// the load is checked against it.
	ImageID string
	// ManifestDigest is the digest file's content when it names a manifest
	// (or index) digest; empty when the folder has none or it names the
	// config (oci-build-task's docker-save image.tar).
	ManifestDigest string
	// Image is the chosen image of an OCI layout (the build platform's for
	// an index); nil for docker-save tarballs.
	Image *LayoutImage
	// Save is a plain docker-save tarball's image, read in place; nil for
	// layouts and gzip-compressed tarballs.
	Save *Image
}

// ID is the image's config digest (the image ID docker load gives) when the
// folder tells it without a daemon: a layout's or a plain docker-save
// tarball's config, else the image-id or digest file; "" for a
// gzip-compressed tarball that names none.
func (f *Folder) ID() string {
	switch {
	case f.Image != nil:
		return f.Image.ID.String()
	case f.Save != nil:
		return f.Save.ID()
	}
	return f.ImageID
}

// Named reports whether the folder (or its entry) says which name FROM uses.
func (f *Folder) Named() bool { return f.Repository != "" }

// Ref is "repository:tag" (tag latest when unset), or "" when unnamed.
func (f *Folder) Ref() string {
	if f.Repository == "" {
		return ""
	}
	tag := f.Tag
	if tag == "" {
		tag = "latest"
	}
	return f.Repository + ":" + tag
}

// Name sets the name FROM uses (an entry's object form); an empty
// repository keeps the folder's own.
func (f *Folder) Name(repository, tag string) {
	if repository == "" {
		return
	}
	f.Repository, f.Tag = repository, tag
	if f.Tag == "" {
		f.Tag = "latest"
	}
}

// Detect recognises dir's layout from its contents. For an OCI layout it
// also picks the image for platform (the build platform: linux and the
// machine's architecture), so a missing platform fails here. Errors say what
// the folder holds and which layouts are accepted.
func Detect(dir string, platform v1.Platform) (*Folder, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("%s does not exist", dir)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a folder", dir)
	}
	f := &Folder{Dir: dir}
	// repository and tag name the image wherever they exist (this resource
	// and registry-image-resource write them).
	f.Repository = readSmall(filepath.Join(dir, RepositoryFile))
	if f.Repository != "" {
		f.Tag = readSmall(filepath.Join(dir, TagFile))
		if f.Tag == "" {
			f.Tag = "latest"
		}
	}
	if err := f.identify(readSmall(filepath.Join(dir, DigestFile))); err != nil {
		return nil, err
	}
	if f.Kind != DockerSave {
		img, err := OpenLayout(f.Path, f.Kind, platform)
		if err != nil {
			return nil, fmt.Errorf("%s (%s, %s): %w", f.Path, f.Origin, f.Kind, err)
		}
		f.Image = img
		return f, nil
	}
	if err := f.readSave(); err != nil {
		return nil, err
	}
	return f, nil
}

// folderFiles looks at the files of a folder.
type folderFiles string

func (d folderFiles) stat(name string) os.FileInfo {
	fi, err := os.Stat(filepath.Join(string(d), name))
	if err != nil {
		return nil
	}
	return fi
}

func (d folderFiles) isFile(name string) bool {
	fi := d.stat(name)
	return fi != nil && fi.Mode().IsRegular()
}

func (d folderFiles) isDir(name string) bool {
	fi := d.stat(name)
	return fi != nil && fi.IsDir()
}

// identify tells which layout f.Dir is, from the files it holds, and sets
// its Origin, Kind and Path; digest is the digest file's content, whose
// meaning depends on the layout.
func (f *Folder) identify(digest string) error {
	dir := folderFiles(f.Dir)
	switch {
	case dir.isFile(ImageFile) || dir.stat(ImageIDFile) != nil:
		return f.ownSave(digest)
	case dir.isDir("oci"):
		f.Origin = "registry-image-resource format: oci-layout"
		f.Kind, f.Path, f.ManifestDigest = OCILayoutDir, filepath.Join(f.Dir, "oci"), digest
		if !isLayoutDir(f.Path) {
			return notKnown(f.Dir, "oci/ is not an OCI image layout (no oci-layout and index.json in it)")
		}
		return nil
	case dir.isFile("image.tar"):
		return f.imageTar(digest)
	case dir.isDir("image") && isLayoutDir(filepath.Join(f.Dir, "image")):
		f.Origin = "oci-build-task image/ (OCI layout)"
		f.Kind, f.Path, f.ManifestDigest = OCILayoutDir, filepath.Join(f.Dir, "image"), digest
		return nil
	case isLayoutDir(f.Dir):
		f.Origin = "OCI image layout"
		f.Kind, f.Path = OCILayoutDir, f.Dir
		return nil
	}
	return notKnown(f.Dir, "")
}

// ownSave is this resource's own folder (a get with save: true): every
// file is required, as before.
func (f *Folder) ownSave(digest string) error {
	dir := folderFiles(f.Dir)
	f.Origin = "get with save: true"
	for _, name := range []string{ImageFile, ImageIDFile, RepositoryFile, TagFile} {
		if !dir.isFile(name) {
			return fmt.Errorf("%s has no %q file — did the get have params: {save: true}?", f.Dir, name)
		}
	}
	f.ImageID = readSmall(filepath.Join(f.Dir, ImageIDFile))
	if f.ImageID == "" {
		return fmt.Errorf("%s: file %q is empty", f.Dir, ImageIDFile)
	}
	if !strings.HasPrefix(f.ImageID, "sha256:") {
		f.ImageID = "sha256:" + f.ImageID
	}
	if f.Repository == "" {
		return fmt.Errorf("%s: file %q is empty", f.Dir, RepositoryFile)
	}
	f.Kind, f.Path, f.ManifestDigest = DockerSave, filepath.Join(f.Dir, ImageFile), digest
	if k, err := sniffTar(f.Path); err != nil {
		return fmt.Errorf("%s: %w", f.Path, err)
	} else if k != DockerSave {
		return fmt.Errorf("%s is an %s, not the docker-save tarball a get with save: true writes", f.Path, k)
	}
	return nil
}

// imageTar is an image.tar: what the tarball holds and whether the folder
// names the image tell registry-image-resource's from oci-build-task's,
// and so what digest means.
func (f *Folder) imageTar(digest string) error {
	f.Path = filepath.Join(f.Dir, "image.tar")
	k, err := sniffTar(f.Path)
	if err != nil {
		return fmt.Errorf("%s: %w", f.Path, err)
	}
	f.Kind = k
	switch {
	case k == OCILayoutTar:
		// oci-build-task with OUTPUT_OCI: digest is the manifest's.
		f.Origin, f.ManifestDigest = "oci-build-task image.tar (OCI layout)", digest
	case f.Repository != "":
		// registry-image-resource format: oci; digest is the manifest's.
		f.Origin, f.ManifestDigest = "registry-image-resource format: oci", digest
	default:
		// oci-build-task: digest is the config digest, i.e. the image ID,
		// which the load checks.
		f.Origin = "oci-build-task image.tar"
		if strings.HasPrefix(digest, "sha256:") {
			f.ImageID = digest
		}
	}
	return nil
}

// readSave reads a plain docker-save tarball in place (headers,
// manifest.json, config): one image, and the ID the folder names, checked
// before any daemon starts. A gzip-compressed one is left to docker load.
func (f *Folder) readSave() error {
	img, err := ReadSave(f.Path)
	if errors.Is(err, errCompressed) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s (%s): %w", f.Path, f.Origin, err)
	}
	f.Save = &img
	if id := img.ID(); f.ImageID != "" && id != f.ImageID {
		src := ImageIDFile
		if filepath.Base(f.Path) != ImageFile {
			src = DigestFile
		}
		return fmt.Errorf("%s holds image %s, but %s says %s: the folder was changed or mixed after it was written; fetch it again (a get with save: true, or the tool that made it)", f.Path, id, src, f.ImageID)
	}
	return nil
}

func isLayoutDir(dir string) bool {
	for _, n := range []string{"oci-layout", "index.json"} {
		if fi, err := os.Stat(filepath.Join(dir, n)); err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// notKnown lists what the folder holds and what would have been accepted.
func notKnown(dir, why string) error {
	var names []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		n := e.Name()
		if e.IsDir() {
			n += "/"
		}
		names = append(names, n)
	}
	sort.Strings(names)
	found := "nothing (it is empty)"
	if len(names) > 20 {
		names = append(names[:20], fmt.Sprintf("... (%d more)", len(names)-20))
	}
	if len(names) > 0 {
		found = strings.Join(names, ", ")
	}
	msg := fmt.Sprintf("%s is not a base image folder this resource knows: it holds %s", dir, found)
	if why != "" {
		msg += " (" + why + ")"
	}
	// A common slip: the folder above the one meant (a task's whole output).
	for _, e := range entries {
		if e.IsDir() && looksLikeBase(filepath.Join(dir, e.Name())) {
			msg += fmt.Sprintf("; did you mean %s?", filepath.Join(dir, e.Name()))
			break
		}
	}
	return errors.New(msg + "\n" + Accepted)
}

// looksLikeBase is a quick look for the files Detect starts from.
func looksLikeBase(dir string) bool {
	for _, n := range []string{ImageFile, ImageIDFile, "image.tar", "oci/index.json", "image/index.json", "index.json"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			return true
		}
	}
	return false
}

// readSmall is a small file's trimmed content, "" when it is missing.
func readSmall(path string) string {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() > 4096 {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
