package resource

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"fmt"
	"io"
	"os"
)

// checkRootfsTarball makes sure import_file is a tarball before the daemon
// starts: dockerd's answer to anything else is "Error processing tar
// file(exit status 1): unexpected EOF", naming neither the param nor the
// file. Like docker import, it takes plain, gzip, bzip2, xz and zstd
// tarballs (xz and zstd are recognised by their magic only).
func checkRootfsTarball(field, display, path string) error {
	bad := func(why string) error {
		return fmt.Errorf("%s: %s is not a tarball (%s): it must be a root filesystem as a tar file, plain or compressed with gzip, bzip2, xz or zstd, as docker import takes", field, display, why)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	defer f.Close()
	br := bufio.NewReader(f)
	magic, _ := br.Peek(6)
	if len(magic) == 0 {
		return bad("the file is empty")
	}
	var r io.Reader = br
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return bad("broken gzip: " + err.Error())
		}
		defer zr.Close()
		r = zr
	case bytes.HasPrefix(magic, []byte("BZh")):
		r = bzip2.NewReader(br)
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}), bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return nil
	}
	if _, err := tar.NewReader(r).Next(); err != nil && err != io.EOF {
		return bad(err.Error())
	}
	return nil
}
