package engine

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"
)

// loadedIDPrefix starts the line dockerd writes for each unnamed image a
// load made ("Loaded image ID: sha256:..."): the one place the Engine API
// says which image a load created.
const loadedIDPrefix = "Loaded image ID: "

// loadContainerd loads the folder's image into a daemon on the containerd
// image store: the same docker-save stream, then the image found by the ID
// the load reports, checked to hold the folder's layers, and tagged.
func (l *folderLoad) loadContainerd(b Base, img *baseimage.Image, config []byte, cfgName string) (Base, error) {
	configID := b.ID // the config's digest; the daemon's ID differs
	res, err := l.send(img, config, cfgName, configID != b.FolderID)
	if err != nil {
		return Base{}, fmt.Errorf("load base %s from %s: %w", l.what, l.f.Path, err)
	}
	var ids []string
	for _, line := range res.Output {
		if id, ok := strings.CutPrefix(strings.TrimSpace(line), loadedIDPrefix); ok {
			ids = append(ids, id)
		}
	}
	if len(ids) != 1 {
		return Base{}, fmt.Errorf("load base %s: the daemon reported %d loaded images (%q), want 1", l.what, len(ids), res.Output)
	}
	b.ID = ids[0]
	if err := l.checkLayers(b.ID, config); err != nil {
		return Base{}, err
	}
	if b.Repository == "" {
		l.log.Infof("loaded base image %s without a name (the folder names no repository and tag)", logging.ShortID(b.ID))
		return b, nil
	}
	if err := Tag(l.ctx, l.cli, b.ID, b.Repository, b.Tag); err != nil {
		return Base{}, fmt.Errorf("load base %s: %w", l.what, err)
	}
	l.log.Infof("loaded base image %s (%s, config %s)", b.Ref(), logging.ShortID(b.ID), logging.ShortID(configID))
	return b, nil
}

// checkLayers fails unless image id in the daemon has the layers config
// names, in order: the containerd store's ID is no config digest to
// compare.
func (l *folderLoad) checkLayers(id string, config []byte) error {
	var cfg struct {
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(config, &cfg); err != nil {
		return fmt.Errorf("load base %s: its config: %w", l.what, err)
	}
	ins, err := l.cli.ImageInspect(l.ctx, id)
	if err != nil {
		return fmt.Errorf("load base %s: image %s not in the daemon after loading: %w", l.what, id, err)
	}
	if !slices.Equal(ins.RootFS.Layers, cfg.RootFS.DiffIDs) {
		return fmt.Errorf("load base %s: the daemon's image %s has layers %v, not the folder's %v", l.what, id, ins.RootFS.Layers, cfg.RootFS.DiffIDs)
	}
	return nil
}
