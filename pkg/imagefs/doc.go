// Package imagefs writes the get's files from an image held on disk (no
// daemon): rootfs/ (ExtractRootfs), rootfs.tar (WriteRootfsTar), the
// docker-save tarball `image` (WriteSaveTarball), metadata.json
// (ReadMetadata) and docker_inspect.json (InspectJSON).
//
// # Containment
//
// Layers come from the registry and may be hostile: names with "..",
// absolute symlinks, symlinks planted in one layer and written through in
// the next, hardlinks to files outside, whiteouts of paths outside. Nothing
// a layer names is written or read outside the destination (rootfs/ inside
// the get's DEST); the only other files are this package's own temporaries
// next to it (the temporary tree, unlinked spill files). These layers of
// defence each hold on their own for what they cover:
//
//   - Names (paths.go, cleanName): every entry name and hardlink target is
//     cleaned to a path relative to the image root; one that climbs out
//     with ".." is an error, a leading "/" counts from the root, and names
//     longer than PATH_MAX are refused. classifyName is the one place that
//     decides what a whiteout or opaque marker names.
//   - Symlinks (paths.go, resolver): a path is resolved one component at a
//     time as if the root were "/" (what docker's chrooted layer apply
//     does): an absolute target restarts at the root, ".." stops there,
//     more than 40 links is ELOOP. The result is a symlink-free directory
//     inside the tree; the last component of an entry is never followed.
//   - The kernel (extract.go, os.Root): ExtractRootfs opens its temporary
//     tree with os.OpenRoot, and every lookup, removal and directory
//     creation goes through that os.Root, so even a resolver bug cannot
//     reach outside it. Entries are created with *at calls on a single
//     name in a directory opened through the root with O_NOFOLLOW (dirFD):
//     open with O_EXCL|O_NOFOLLOW, symlinkat, linkat without following,
//     chown and utimes with AT_SYMLINK_NOFOLLOW. finish, which applies
//     directory modes at the end, reopens each directory component by
//     component with O_NOFOLLOW (dirStack) and only chmods what is still a
//     directory.
//   - Hardlinks (extract.go, hardlink): the target is resolved like any
//     entry, must already exist inside the tree and must not be a
//     directory; the link is made to the target itself, never to what a
//     symlink there points at.
//   - Whiteouts and opaque markers (extract.go, whiteout, opaque): the
//     directory is resolved inside the tree and only names in it are
//     removed, through the os.Root; a whiteout of the top-level dev is
//     ignored.
//   - Where the work happens (extract.go, ExtractRootfs): extraction goes
//     into a temporary sibling of DEST, renamed into place at the end and
//     removed on failure, so a failed get leaves no half-written rootfs/.
//
// rootfs.tar (rootfstar.go) creates no file but the tar itself (atomic.go:
// a temporary sibling renamed into place) and unlinked temporary files
// (spill.go, spillFile) next to it. Every entry name and hardlink target in
// it is clean and relative (toFlatEntry, through cleanName), so the tar
// holds nothing that climbs out of the folder it is unpacked into. The
// sweep over the recorded names, in name order, decides what survives
// (whiteouts, opaque directories, a non-directory hiding what lower layers
// had below it) and makes a hardlink whose target an upper layer replaced
// a copy of the content it linked to. Device nodes and /dev are kept
// there: a tar carries them without creating anything on this machine.
//
// ReadMetadata reads rootfs/etc/passwd through an os.Root and the same
// resolver (metadata.go, resolvePath), so a passwd symlinked to the host's
// /etc/passwd reads the image's or nothing.
//
// The fuzz targets (fuzz_test.go) and the TestExtractEscapes tests check
// these properties: after any input, successful or not, nothing but the
// destination (on success) is left next to it, a bait folder beside it
// stays as it was, and rootfs.tar reads back with clean relative names.
package imagefs
