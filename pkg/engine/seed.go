package engine

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/layerstore"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	units "github.com/docker/go-units"
	"github.com/sirupsen/logrus"
)

// Seeding is the one decision "write into dockerd's layer store or docker
// load" for a put's base folders. Folders it holds are written straight
// into the fresh data root before dockerd starts (Write, pkg/layerstore:
// every layer extracted at once, where docker load copies the tarball and
// registers the layers one after another); LoadFolder then only checks and
// tags them (LoadOptions.Seeded). Every other folder, and every folder when
// the seed was not taken, is loaded with docker load as before.
type Seeding struct {
	log     *logrus.Entry
	images  []layerstore.Image
	folders map[*baseimage.Folder]bool
	wrote   bool
}

// PlanSeeding picks the folders whose image can be written into the layer
// store: a docker-save tarball read in place (not gzip-compressed as a
// whole, no foreign layers) or an OCI layout, whose layers are gzip, zstd
// or plain tars and whose image is the one the folder names. o is what
// LoadFolder will be given (the config written is the one it would load).
// It returns nil when none can be, saying why at debug level.
func PlanSeeding(folders []*baseimage.Folder, o LoadOptions, log *logrus.Entry) *Seeding {
	s := &Seeding{log: logging.OrDiscard(log), folders: map[*baseimage.Folder]bool{}}
	ids := map[string]bool{}
	for _, f := range folders {
		img, why := seedImage(f, o)
		if why != "" {
			s.log.Debugf("load: base %s is loaded with docker load, not written into dockerd's layer store: %s", f.Dir, why)
			continue
		}
		s.folders[f] = true
		if id := digestOf(img.Config); !ids[id] {
			ids[id] = true
			s.images = append(s.images, img)
		}
	}
	if len(s.images) == 0 {
		return nil
	}
	return s
}

// seedImage is the image to write for f, or why it cannot be written.
func seedImage(f *baseimage.Folder, o LoadOptions) (layerstore.Image, string) {
	var raw []byte
	var blobs []baseimage.Blob
	switch {
	case f.Image != nil:
		raw, blobs = f.Image.RawConfig, f.Image.Layers
	case f.Save == nil:
		return layerstore.Image{}, "the docker-save tarball is compressed as a whole"
	case f.Save.Foreign:
		return layerstore.Image{}, "the image has foreign layers"
	default:
		raw, blobs = f.Save.RawConfig, f.Save.Layers
	}
	if f.ImageID != "" && digestOf(raw) != f.ImageID {
		return layerstore.Image{}, "the folder's image is not the one it names" // LoadFolder says so
	}
	config := raw
	if o.Platform != nil {
		filled, changed, err := baseimage.FillPlatform(raw, *o.Platform)
		if err != nil {
			return layerstore.Image{}, err.Error()
		}
		if changed {
			config = filled
		}
	}
	for i, b := range blobs {
		if kind := blobKind(b); kind != "" {
			return layerstore.Image{}, fmt.Sprintf("layer %d is %s", i+1, kind)
		}
	}
	name := f.Ref()
	if name == "" {
		name = logging.ShortID(digestOf(config))
	}
	return layerstore.Image{Name: name, Config: config, Layers: layerstore.BlobLayers(blobs)}, ""
}

// blobKind is "" for a gzip, zstd or plain tar blob, else what it is.
func blobKind(b baseimage.Blob) string {
	f, err := os.Open(b.File)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	head := make([]byte, min(b.Size, 512))
	n, _ := f.ReadAt(head, b.Offset)
	head = head[:n]
	switch {
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b, baseimage.IsZstd(head):
		return ""
	case len(head) >= 262 && string(head[257:262]) == "ustar":
		return ""
	case len(head) == 0:
		return "empty"
	}
	return "neither gzip, zstd nor a plain tar"
}

// Holds reports whether f's image was written by Write.
func (s *Seeding) Holds(f *baseimage.Folder) bool { return s != nil && s.wrote && s.folders[f] }

// Write writes the images into root, the fresh data root of a dockerd not
// yet started (the daemon.Seed's Write).
func (s *Seeding) Write(ctx context.Context, root string) error {
	t0 := time.Now()
	n := 0
	for _, img := range s.images {
		n += len(img.Layers)
	}
	workers := min(runtime.GOMAXPROCS(0), n)
	for _, img := range s.images {
		var size int64
		for _, l := range img.Layers {
			size += l.Size
		}
		s.log.Infof("load: writing base %s (%d layers, %s) straight into dockerd's layer store, %d at a time",
			img.Name, len(img.Layers), units.HumanSize(float64(size)), workers)
	}
	if err := layerstore.Write(ctx, root, s.images, layerstore.Options{Workers: workers, Log: s.log}); err != nil {
		return err
	}
	s.wrote = true
	s.log.Infof("load: wrote %d layers into dockerd's layer store in %s, every diff ID checked", n, time.Since(t0).Round(time.Millisecond))
	return nil
}
