package layerstore

import (
	"path/filepath"
	"strings"
)

// Where dockerd's classic image store keeps what, for one storage driver.
// Both this package (which writes it) and pkg/push (which reads the new
// layers back for the push) go through these, so the layout is said once.

// ChainID is the layer store's key for a layer: the bottom layer's is its
// diff ID (parent ""), each next one sha256("<parent chain ID> <diff ID>").
func ChainID(parent, diffID string) string {
	if parent == "" {
		return diffID
	}
	return digestOf([]byte(parent + " " + diffID))
}

// MetaDir is the image store's folder for driver: <root>/image/<driver>.
func MetaDir(root, driver string) string { return filepath.Join(root, "image", driver) }

// LayerDBDir is the layerdb folder of a committed layer (its diff,
// cache-id, parent, size and tar-split.json.gz).
func LayerDBDir(root, driver, chainID string) string {
	return filepath.Join(MetaDir(root, driver), "layerdb", "sha256", strings.TrimPrefix(chainID, "sha256:"))
}

// ConfigFile is where an image's config is kept, under its ID.
func ConfigFile(root, driver, imageID string) string {
	return filepath.Join(MetaDir(root, driver), "imagedb", "content", "sha256", strings.TrimPrefix(imageID, "sha256:"))
}

// LayerFiles is the folder of a layer's own files for its cache ID:
// overlay2/<cache ID>/diff, or vfs/dir/<cache ID>.
func LayerFiles(root, driver, cacheID string) string {
	if driver == "vfs" {
		return filepath.Join(root, "vfs", "dir", cacheID)
	}
	return filepath.Join(root, driver, cacheID, "diff")
}
