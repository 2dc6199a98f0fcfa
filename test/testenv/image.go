package testenv

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"

	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// HostBusybox is copied into every BusyboxImage.
const HostBusybox = "/bin/busybox"

// DefaultPath is the PATH of a BusyboxImage without Env.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// DefaultCreated is the created time of images and the mtime of their files,
// fixed so equal options give equal digests.
var DefaultCreated = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// BusyboxLinks are the applets linked to /bin/busybox in a BusyboxImage.
var BusyboxLinks = []string{"sh", "ls", "cat", "id", "test", "echo", "env", "true", "false", "wc", "grep", "mkdir", "touch", "rm"}

// ImageOptions configures BusyboxImage.
type ImageOptions struct {
	Env      []string // default: DefaultPath only
	User     string
	Labels   map[string]string
	NoPasswd bool // leave out /etc/passwd and /etc/group
	// RandomLayers adds one layer per entry, holding /data/random-N of that
	// many incompressible bytes.
	RandomLayers []int64
	// RandomSeed varies the random layers' content (same seed, same bytes).
	RandomSeed uint64
	Platform   *v1.Platform // default linux/amd64
	// MediaType is "docker" (default) or "oci"; zstd compression implies oci.
	MediaType string
	// Compression is "gzip" (default), "zstd" or "none".
	Compression string
	Created     time.Time // default DefaultCreated
}

// File is one tar entry of LayerFromFiles, written exactly as given.
type File struct {
	Name string
	Type byte // tar.TypeReg when 0
	// Mode is the permission and special bits. 0 means the type's usual
	// default (0644 files, 0755 dirs, 0777 symlinks); ModeZero writes 0.
	Mode               int64
	Uid, Gid           int
	Linkname           string
	Content            []byte // only for regular files
	Devmajor, Devminor int64
	PAXRecords         map[string]string // e.g. "SCHILY.xattr.user.x"
	ModTime            time.Time         // default DefaultCreated
}

// ModeZero as File.Mode writes a mode of 0.
const ModeZero int64 = -1

type layerFormat struct {
	comp      compression.Compression
	layerMT   types.MediaType
	manifest  types.MediaType
	config    types.MediaType
	indexMT   types.MediaType
	ociFamily bool
}

func formatFor(t testing.TB, mediaType, comp string) layerFormat {
	t.Helper()
	if comp == "" {
		comp = "gzip"
	}
	if mediaType == "" {
		mediaType = "docker"
		if comp == "zstd" {
			mediaType = "oci" // docker media types cannot carry zstd
		}
	}
	var f layerFormat
	switch mediaType {
	case "docker":
		f = layerFormat{manifest: types.DockerManifestSchema2, config: types.DockerConfigJSON, indexMT: types.DockerManifestList}
	case "oci":
		f = layerFormat{manifest: types.OCIManifestSchema1, config: types.OCIConfigJSON, indexMT: types.OCIImageIndex, ociFamily: true}
	default:
		t.Fatalf("testenv: unknown media type family %q (want docker or oci)", mediaType)
	}
	switch comp {
	case "gzip":
		f.comp = compression.GZip
		f.layerMT = types.DockerLayer
		if f.ociFamily {
			f.layerMT = types.OCILayer
		}
	case "zstd":
		if !f.ociFamily {
			t.Fatalf("testenv: zstd layers need oci media types, not %q", mediaType)
		}
		f.comp = compression.ZStd
		f.layerMT = types.OCILayerZStd
	case "none":
		f.comp = compression.None
		f.layerMT = types.DockerUncompressedLayer
		if f.ociFamily {
			f.layerMT = types.OCIUncompressedLayer
		}
	default:
		t.Fatalf("testenv: unknown compression %q (want gzip, zstd or none)", comp)
	}
	return f
}

// newLayer compresses the tar stream from open as f says.
func newLayer(t testing.TB, f layerFormat, open func() (io.ReadCloser, error)) v1.Layer {
	t.Helper()
	if f.comp == compression.None {
		rc, err := open()
		if err != nil {
			t.Fatalf("testenv: opening layer: %v", err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatalf("testenv: reading layer: %v", err)
		}
		return static.NewLayer(b, f.layerMT)
	}
	l, err := tarball.LayerFromOpener(open,
		tarball.WithCompression(f.comp),
		tarball.WithMediaType(f.layerMT),
		tarball.WithCompressedCaching)
	if err != nil {
		t.Fatalf("testenv: making %s layer: %v", f.comp, err)
	}
	return l
}

func bytesOpener(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// LayerFromFiles writes files as tar entries, unchanged and in order (no
// path cleaning, so whiteouts, hostile paths and odd types are possible).
// compression is "gzip" (default, docker media type), "zstd" (OCI zstd) or
// "none" (docker uncompressed). AppendLayers adjusts the media type family.
func LayerFromFiles(t testing.TB, files []File, compression string) v1.Layer {
	t.Helper()
	mt := "docker"
	if compression == "zstd" {
		mt = "oci"
	}
	return newLayer(t, formatFor(t, mt, compression), bytesOpener(tarFiles(t, files)))
}

func tarFiles(t testing.TB, files []File) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{
			Name:       f.Name,
			Typeflag:   f.Type,
			Mode:       f.Mode,
			Uid:        f.Uid,
			Gid:        f.Gid,
			Linkname:   f.Linkname,
			Devmajor:   f.Devmajor,
			Devminor:   f.Devminor,
			PAXRecords: f.PAXRecords,
			ModTime:    f.ModTime,
		}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.ModTime.IsZero() {
			h.ModTime = DefaultCreated
		}
		switch {
		case f.Mode == ModeZero:
			h.Mode = 0
		case f.Mode == 0 && h.Typeflag == tar.TypeDir:
			h.Mode = 0o755
		case f.Mode == 0 && h.Typeflag == tar.TypeSymlink:
			h.Mode = 0o777
		case f.Mode == 0:
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(f.Content))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("testenv: tar header for %q: %v", f.Name, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Content); err != nil {
				t.Fatalf("testenv: tar content of %q: %v", f.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("testenv: closing tar: %v", err)
	}
	return buf.Bytes()
}

// AppendLayers appends layers to base. Layer media types are moved to the
// base manifest's family (docker/oci); zstd layers keep theirs.
func AppendLayers(t testing.TB, base v1.Image, layers ...v1.Layer) v1.Image {
	t.Helper()
	bmt, err := base.MediaType()
	if err != nil {
		t.Fatalf("testenv: base media type: %v", err)
	}
	oci := bmt == types.OCIManifestSchema1
	adds := make([]mutate.Addendum, 0, len(layers))
	for i, l := range layers {
		lmt, err := l.MediaType()
		if err != nil {
			t.Fatalf("testenv: layer %d media type: %v", i, err)
		}
		adds = append(adds, mutate.Addendum{
			Layer:     l,
			MediaType: familyLayerMT(lmt, oci),
			History:   v1.History{Created: v1.Time{Time: DefaultCreated}, CreatedBy: fmt.Sprintf("testenv: appended layer %d", i)},
		})
	}
	img, err := mutate.Append(base, adds...)
	if err != nil {
		t.Fatalf("testenv: appending layers: %v", err)
	}
	return img
}

func familyLayerMT(mt types.MediaType, oci bool) types.MediaType {
	switch mt {
	case types.DockerLayer, types.OCILayer:
		if oci {
			return types.OCILayer
		}
		return types.DockerLayer
	case types.DockerUncompressedLayer, types.OCIUncompressedLayer:
		if oci {
			return types.OCIUncompressedLayer
		}
		return types.DockerUncompressedLayer
	}
	return mt
}

// BusyboxImage builds a small runnable image without a daemon: busybox and
// applet links, /etc/passwd with root and app (1000:1000), /root, /home/app,
// /tmp, then one layer per RandomLayers entry.
func BusyboxImage(t testing.TB, o ImageOptions) v1.Image {
	t.Helper()
	f := formatFor(t, o.MediaType, o.Compression)
	created := o.Created
	if created.IsZero() {
		created = DefaultCreated
	}
	plat := v1.Platform{OS: "linux", Architecture: "amd64"}
	if o.Platform != nil {
		plat = *o.Platform
	}
	env := o.Env
	if env == nil {
		env = []string{DefaultPath}
	}

	bb, err := os.ReadFile(HostBusybox)
	if err != nil {
		t.Fatalf("testenv: reading %s (apt-get install busybox-static): %v", HostBusybox, err)
	}
	files := []File{
		{Name: "bin/", Type: tar.TypeDir, ModTime: created},
		{Name: "bin/busybox", Mode: 0o755, Content: bb, ModTime: created},
	}
	for _, l := range BusyboxLinks {
		files = append(files, File{Name: "bin/" + l, Type: tar.TypeSymlink, Linkname: "busybox", ModTime: created})
	}
	files = append(files,
		File{Name: "etc/", Type: tar.TypeDir, ModTime: created},
		File{Name: "root/", Type: tar.TypeDir, Mode: 0o700, ModTime: created},
		File{Name: "home/", Type: tar.TypeDir, ModTime: created},
		File{Name: "home/app/", Type: tar.TypeDir, Uid: 1000, Gid: 1000, ModTime: created},
		File{Name: "tmp/", Type: tar.TypeDir, Mode: 0o1777, ModTime: created},
	)
	if !o.NoPasswd {
		files = append(files,
			File{Name: "etc/passwd", Content: []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"), ModTime: created},
			File{Name: "etc/group", Content: []byte("root:x:0:\napp:x:1000:\n"), ModTime: created},
		)
	}

	cf := &v1.ConfigFile{
		Architecture: plat.Architecture,
		OS:           plat.OS,
		Variant:      plat.Variant,
		OSVersion:    plat.OSVersion,
		Created:      v1.Time{Time: created},
		Config: v1.Config{
			Env:    env,
			User:   o.User,
			Labels: o.Labels,
			Cmd:    []string{"sh"},
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, f.manifest), f.config)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatalf("testenv: setting config: %v", err)
	}
	adds := []mutate.Addendum{{
		Layer:   newLayer(t, f, bytesOpener(tarFiles(t, files))),
		History: v1.History{Created: v1.Time{Time: created}, CreatedBy: "testenv: busybox base"},
	}}
	for i, size := range o.RandomLayers {
		adds = append(adds, mutate.Addendum{
			Layer:   newLayer(t, f, randomLayerOpener(i, size, o.RandomSeed, created)),
			History: v1.History{Created: v1.Time{Time: created}, CreatedBy: fmt.Sprintf("testenv: random layer %d (%d bytes)", i, size)},
		})
	}
	out, err := mutate.Append(img, adds...)
	if err != nil {
		t.Fatalf("testenv: appending layers: %v", err)
	}
	return out
}

// randomLayerOpener streams a tar with /data/random-i of size bytes from a
// seeded ChaCha8, so big layers are never held uncompressed in memory.
func randomLayerOpener(i int, size int64, seed uint64, mtime time.Time) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() {
			var s [32]byte
			binary.LittleEndian.PutUint64(s[0:], seed)
			binary.LittleEndian.PutUint64(s[8:], uint64(i))
			binary.LittleEndian.PutUint64(s[16:], uint64(size))
			rng := rand.NewChaCha8(s)
			tw := tar.NewWriter(pw)
			err := tw.WriteHeader(&tar.Header{Name: "data/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime})
			if err == nil {
				err = tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("data/random-%d", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: mtime})
			}
			if err == nil {
				_, err = io.CopyN(tw, rng, size)
			}
			if err == nil {
				err = tw.Close()
			}
			pw.CloseWithError(err)
		}()
		return pr, nil
	}
}

// PlatformString is "os/arch[/variant]".
func PlatformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// MultiPlatformIndex makes an index with one BusyboxImage per platform, each
// labelled platform=<os/arch[/variant]>. Every image carries the host's
// busybox binary: it is only data for non-native platforms.
func MultiPlatformIndex(t testing.TB, platforms []v1.Platform, o ImageOptions) v1.ImageIndex {
	t.Helper()
	f := formatFor(t, o.MediaType, o.Compression)
	idx := mutate.IndexMediaType(empty.Index, f.indexMT)
	var adds []mutate.IndexAddendum
	for _, p := range platforms {
		p := p
		po := o
		po.Platform = &p
		po.Labels = map[string]string{}
		for k, v := range o.Labels {
			po.Labels[k] = v
		}
		po.Labels["platform"] = PlatformString(p)
		img := BusyboxImage(t, po)
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	return mutate.AppendManifests(idx, adds...)
}
