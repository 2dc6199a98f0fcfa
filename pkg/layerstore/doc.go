// Package layerstore writes base images straight into a fresh dockerd data
// root, as `docker load` would leave them there, before dockerd first
// starts on it: dockerd then finds the images when it starts, and a put's
// bases cost only their extraction. docker load pays for a copy of the
// whole tarball into <data-root>/tmp and then registers the layers one
// after another; here every layer is extracted at once (a worker per CPU).
//
// What is written is dockerd's classic image store with the overlay2
// storage driver (the containerd image store, which Docker 29 defaults
// fresh data roots to, is pinned off by pkg/daemon):
//
//	overlay2/<cache ID>/diff/         the layer's files (overlay whiteouts)
//	overlay2/<cache ID>/link          its short name, 26 characters
//	overlay2/<cache ID>/lower         l/<parent's link>:l/<...> (not for the bottom layer)
//	overlay2/<cache ID>/work/         only with a parent
//	overlay2/<cache ID>/committed     in every layer that has a child
//	overlay2/l/<link>                 -> ../<cache ID>/diff
//	image/overlay2/layerdb/sha256/<chain ID>/{diff,size,cache-id,parent,tar-split.json.gz}
//	image/overlay2/imagedb/content/sha256/<config digest hex>
//
// Each layer's uncompressed stream is hashed (its diff ID, which must be
// the config's diff_ids entry) and recorded as tar-split metadata with
// github.com/vbatts/tar-split, the library and format dockerd itself uses
// (asm.NewInputTarStream into storage.NewJSONPacker, gzip-compressed, no
// file payloads): from it and the diff directory dockerd rebuilds the
// layer's exact tar for docker save and push. The files are unpacked by
// pkg/imagefs's ExtractDiff, whose containment keeps every write inside
// the layer's diff directory whatever the tar says.
//
// Nothing partial is left for dockerd: a failure removes everything
// written, so the data root is empty again (the caller then starts dockerd
// and loads the images as before). Image names are not written: the
// caller tags the images through the API once dockerd is up.
package layerstore
