package imagefs

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// WriteRootfsTar writes the flattened filesystem of img as one tar at path
// (through a temporary file renamed at the end).
//
// It holds every entry the image's filesystem has after applying the layers
// in order, whiteouts and opaque directories included, and nothing else:
// unlike rootfs/ it keeps /dev and device nodes, since a tar can carry them
// without creating anything on this machine (what `docker export` gave, less
// the files docker adds to a container). Entries come in layer order, lowest
// first, each directory just before the first entry below it, so parents
// precede children and a hardlink follows its target; a hardlink whose
// target an upper layer replaced becomes a regular file with the content it
// linked to. Names are relative ("etc/passwd", directories end in "/"). A
// name that climbs out of the root with ".." is an error.
//
// Memory does not depend on the number of entries: a first pass writes a
// record per entry to a sorter, which spills to temporary files next to
// path; sorted by name, one sweep decides what survives; a second pass over
// the layers writes it.
func WriteRootfsTar(ctx context.Context, img v1.Image, dst string) error {
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("list layers: %w", err)
	}
	if len(layers) >= 1<<23 {
		return fmt.Errorf("%d layers: too many", len(layers))
	}
	tmpDir := filepath.Dir(dst)
	events, err := planFlatten(ctx, layers, tmpDir)
	if err != nil {
		return err
	}
	defer events.Close()
	return writeAtomic(dst, 0o644, func(w io.Writer) error {
		return writeFlat(ctx, layers, events, w, tmpDir)
	})
}

// A position is layer<<40 | index of the entry in its layer: the order in
// which the layers are applied.
func position(layer, index int) uint64 { return uint64(layer)<<40 | uint64(index) }

func layerStart(pos uint64) uint64 { return pos &^ (1<<40 - 1) }

// Kinds of name records.
const (
	recDir      byte = iota + 1 // a directory entry; payload: its header
	recOther                    // any other entry; payload: its type
	recWhiteout                 // the name is whited out
	recOpaque                   // the directory's lower contents are hidden
	recLinkRef                  // a hardlink at pos points at the name
)

// nameRecord: kind, position, name length, name, payload.
func nameRecord(kind byte, pos uint64, name string, payload []byte) []byte {
	b := make([]byte, 0, 1+8+binary.MaxVarintLen64+len(name)+len(payload))
	b = append(b, kind)
	b = binary.BigEndian.AppendUint64(b, pos)
	b = binary.AppendUvarint(b, uint64(len(name)))
	b = append(b, name...)
	return append(b, payload...)
}

func decodeNameRecord(b []byte) (kind byte, pos uint64, name string, payload []byte) {
	kind, pos = b[0], binary.BigEndian.Uint64(b[1:9])
	n, k := binary.Uvarint(b[9:])
	name = string(b[9+k : 9+k+int(n)])
	return kind, pos, name, b[9+k+int(n):]
}

// nameRecordLess orders by name with "/" before any other byte, so that a
// directory's subtree follows it at once; for one name, the highest
// position first.
func nameRecordLess(a, b []byte) bool {
	_, pa, na, _ := decodeNameRecord(a)
	_, pb, nb, _ := decodeNameRecord(b)
	if c := comparePaths(na, nb); c != 0 {
		return c < 0
	}
	if pa != pb {
		return pa > pb
	}
	return a[0] < b[0]
}

func comparePaths(a, b string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] == b[i] {
			continue
		}
		switch {
		case a[i] == '/':
			return -1
		case b[i] == '/':
			return 1
		case a[i] < b[i]:
			return -1
		default:
			return 1
		}
	}
	return len(a) - len(b)
}

// planFlatten reads the layers' headers into name records, then sweeps
// them in name order and returns the write pass's events, sorted by
// position.
func planFlatten(ctx context.Context, layers []v1.Layer, tmpDir string) (*sorter, error) {
	names := newSorter(tmpDir, nameRecordLess)
	defer names.Close()
	for i, l := range layers {
		dg, _ := l.Digest()
		if err := eachEntry(ctx, l, func(j int, hdr *tar.Header, _ io.Reader) error {
			return addNameRecords(names, position(i, j), hdr)
		}); err != nil {
			return nil, fmt.Errorf("read layer %s: %w", dg, err)
		}
	}
	sw := &sweep{events: newSorter(tmpDir, func(a, b []byte) bool { return bytes.Compare(a[:11], b[:11]) < 0 }), tmpDir: tmpDir}
	sw.stack = []*frame{{minKept: math.MaxUint64}}
	if err := names.Each(sw.record); err != nil {
		sw.events.Close()
		return nil, err
	}
	if err := sw.endGroup(); err != nil {
		sw.events.Close()
		return nil, err
	}
	for len(sw.stack) > 0 {
		if err := sw.pop(); err != nil {
			sw.events.Close()
			return nil, err
		}
	}
	return sw.events, nil
}

// eachEntry calls fn with every tar entry of l and its index, the context
// checked between entries and, by the stream, inside them.
func eachEntry(ctx context.Context, l v1.Layer, fn func(j int, hdr *tar.Header, r io.Reader) error) error {
	rc, err := openLayer(ctx, l)
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for j := 0; ; j++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if err := fn(j, hdr, tr); err != nil {
			return err
		}
	}
}

// flatEntry is what the flattening needs of a tar entry.
type flatEntry struct {
	name     string // cleaned; "" is the root
	linkname string // cleaned hardlink target
	skip     bool   // tar-format headers, aufs metadata, markers
	whiteout string // name hidden by a .wh. entry
	opaque   bool   // name is a directory made opaque by this entry
}

func toFlatEntry(hdr *tar.Header) (flatEntry, error) {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader, tar.TypeXHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
		return flatEntry{skip: true}, nil
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return flatEntry{}, err
	}
	e := flatEntry{name: name}
	switch kind, dir, target := classifyName(name); kind {
	case nameSkipped:
		e.skip = true
	case nameOpaque:
		e.skip, e.opaque, e.name = true, true, dir
	case nameWhiteout:
		e.skip, e.whiteout = true, path.Join(dir, target)
	}
	if hdr.Typeflag == tar.TypeLink && !e.skip {
		if e.linkname, err = cleanName(hdr.Linkname); err != nil {
			return e, err
		}
	}
	return e, nil
}

func addNameRecords(names *sorter, pos uint64, hdr *tar.Header) error {
	e, err := toFlatEntry(hdr)
	if err != nil {
		return err
	}
	switch {
	case e.opaque:
		return names.Add(nameRecord(recOpaque, pos, e.name, nil))
	case e.whiteout != "":
		return names.Add(nameRecord(recWhiteout, pos, e.whiteout, nil))
	case e.skip:
		return nil
	case hdr.Typeflag == tar.TypeDir:
		h, err := json.Marshal(cleanHeader(hdr, e.name))
		if err != nil {
			return err
		}
		return names.Add(nameRecord(recDir, pos, e.name, h))
	case e.name == "":
		return nil // the root as anything but a directory: ignored
	}
	typ := hdr.Typeflag
	if isSparse(hdr) {
		typ = tar.TypeReg // a regular file, written sparse
	}
	if err := names.Add(nameRecord(recOther, pos, e.name, []byte{typ})); err != nil {
		return err
	}
	if e.linkname != "" {
		return names.Add(nameRecord(recLinkRef, pos, e.linkname, nil))
	}
	return nil
}

// Kinds of events, in the order the write pass needs them at one position.
const (
	evDir   byte = iota // write a directory header (payload) before the entry
	evSpool             // keep the entry's content aside for a hardlink's copy
	evCopy              // the hardlink here, if kept, is a copy of the entry at payload
	evKeep              // write the entry
)

func event(pos uint64, depth int, kind byte, payload []byte) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 11+len(payload)), pos)
	b = binary.BigEndian.AppendUint16(b, uint16(depth))
	return append(append(b, kind), payload...)
}

// frame is a name the sweep is inside of: everything below it comes before
// the next name that is not.
type frame struct {
	name  string
	depth int
	// hide: entries below with a lower position are hidden (by a whiteout
	// of this name, a non-directory here, an opaque marker).
	hide    uint64
	dirHdr  []byte // the surviving directory header
	kept    uint64 // position of the surviving entry, if any
	hasKept bool
	minKept uint64 // lowest position of a surviving entry below
}

// sweep goes through the name records in order, one name (group) at a
// time, with a stack of the names it is below.
type sweep struct {
	events *sorter
	tmpDir string
	stack  []*frame

	// The current group.
	in      bool
	name    string
	limit   uint64 // entries of the name below it are hidden
	wl      uint64 // layer start of the highest whiteout of the name
	cur     *frame
	decided bool // the first visible entry has been seen
	pending posList
	spooled map[uint64]bool
}

// record takes the next name record, starting a new group at a new name.
func (s *sweep) record(rec []byte) error {
	kind, pos, name, payload := decodeNameRecord(rec)
	if !s.in || name != s.name {
		if err := s.endGroup(); err != nil {
			return err
		}
		if err := s.startGroup(name); err != nil {
			return err
		}
	}
	f := s.cur
	switch kind {
	case recWhiteout:
		s.wl = max(s.wl, layerStart(pos))
		f.hide = max(f.hide, layerStart(pos))
	case recOpaque:
		f.hide = max(f.hide, layerStart(pos))
	case recLinkRef:
		return s.pending.add(s.tmpDir, pos)
	case recDir, recOther:
		return s.entry(kind, pos, payload)
	}
	return nil
}

// entry takes a directory or other entry of the current name: the first
// one visible (highest position, not hidden) survives.
func (s *sweep) entry(kind byte, pos uint64, payload []byte) error {
	f := s.cur
	visible := pos >= max(s.limit, s.wl)
	winner := false
	if !s.decided && visible {
		s.decided, winner = true, true
		f.kept, f.hasKept = pos, true
		if kind == recDir {
			f.dirHdr = bytes.Clone(payload)
		} else if err := s.events.Add(event(pos, f.depth, evKeep, nil)); err != nil {
			return err
		}
	}
	if kind == recOther {
		// A non-directory hides what lower layers had below it.
		f.hide = max(f.hide, pos)
	}
	// Hardlinks made above this entry and before the next one of the
	// name link to it: a copy of it unless it is what survives.
	copies := !winner && kind == recOther && payload[0] == tar.TypeReg
	return s.settleLinks(pos, copies)
}

// settleLinks empties the pending hardlinks, which link to the entry at
// pos; with copies they become copies of it (a regular file that does not
// survive), else they stay hardlinks.
func (s *sweep) settleLinks(pos uint64, copies bool) error {
	return s.pending.each(func(link uint64) error {
		if !copies {
			return nil
		}
		if !s.spooled[pos] {
			if s.spooled == nil {
				s.spooled = map[uint64]bool{}
			}
			s.spooled[pos] = true
			if err := s.events.Add(event(pos, 0, evSpool, nil)); err != nil {
				return err
			}
		}
		return s.events.Add(event(link, 0, evCopy, binary.BigEndian.AppendUint64(nil, pos)))
	})
}

// startGroup pops the frames name is not below and starts its own.
func (s *sweep) startGroup(name string) error {
	for len(s.stack) > 1 && !below(name, s.stack[len(s.stack)-1].name) {
		if err := s.pop(); err != nil {
			return err
		}
	}
	parent := s.stack[len(s.stack)-1]
	s.in, s.name, s.wl, s.decided, s.spooled = true, name, 0, false, nil
	s.limit = parent.hide
	if name == "" {
		s.cur = parent // the root's own frame
		return nil
	}
	s.cur = &frame{name: name, depth: parent.depth + 1, hide: parent.hide, minKept: math.MaxUint64}
	s.stack = append(s.stack, s.cur)
	return nil
}

// endGroup ends the current name: hardlinks to it with nothing below them
// stay hardlinks (dangling, as they were).
func (s *sweep) endGroup() error {
	s.pending.reset()
	s.in = false
	return nil
}

func below(name, dir string) bool {
	return dir == "" || strings.HasPrefix(name, dir+"/")
}

// pop ends the innermost frame: its directory header goes before the
// first surviving entry below it, or where it is itself.
func (s *sweep) pop() error {
	f := s.stack[len(s.stack)-1]
	s.stack = s.stack[:len(s.stack)-1]
	first := f.minKept
	if f.hasKept {
		first = min(first, f.kept)
	}
	if f.hasKept && f.dirHdr != nil {
		if err := s.events.Add(event(first, f.depth, evDir, f.dirHdr)); err != nil {
			return err
		}
	}
	if len(s.stack) > 0 {
		p := s.stack[len(s.stack)-1]
		p.minKept = min(p.minKept, first)
	}
	return nil
}

// posList is a list of positions that spills to a sorter past 64k.
type posList struct {
	mem  []uint64
	disk *sorter
}

func (l *posList) add(dir string, p uint64) error {
	if len(l.mem) < 1<<16 {
		l.mem = append(l.mem, p)
		return nil
	}
	if l.disk == nil {
		l.disk = newSorter(dir, func(a, b []byte) bool { return false })
	}
	return l.disk.Add(binary.BigEndian.AppendUint64(nil, p))
}

// each calls fn for every position and empties the list.
func (l *posList) each(fn func(uint64) error) error {
	defer l.reset()
	for _, p := range l.mem {
		if err := fn(p); err != nil {
			return err
		}
	}
	if l.disk != nil {
		return l.disk.Each(func(b []byte) error { return fn(binary.BigEndian.Uint64(b)) })
	}
	return nil
}

func (l *posList) reset() {
	l.mem = l.mem[:0]
	if l.disk != nil {
		l.disk.Close()
		l.disk = nil
	}
}

// writeFlat writes the entries the events name, reading the layers once
// more in order.
func writeFlat(ctx context.Context, layers []v1.Layer, events *sorter, w io.Writer, tmpDir string) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	tw := tar.NewWriter(bw)
	c := &layerCursor{ctx: ctx, layers: layers, layer: -1}
	defer c.close()
	sp := &spool{dir: tmpDir}
	defer sp.close()
	buf := make([]byte, 256<<10)
	var copyFrom uint64
	copyAt := uint64(math.MaxUint64)
	err := events.Each(func(ev []byte) error {
		pos, kind := binary.BigEndian.Uint64(ev), ev[10]
		hdr, r, e, err := c.seek(pos)
		if err != nil {
			return err
		}
		switch kind {
		case evDir:
			var h tar.Header
			if err := json.Unmarshal(ev[11:], &h); err != nil {
				return err
			}
			return tw.WriteHeader(&h)
		case evSpool:
			return sp.add(pos, hdr, e.name, r, buf)
		case evCopy:
			copyAt, copyFrom = pos, binary.BigEndian.Uint64(ev[11:])
			return nil
		}
		if copyAt == pos {
			return sp.writeCopy(tw, bw, copyFrom, e.name, buf)
		}
		out := cleanHeader(hdr, e.name)
		if hdr.Typeflag == tar.TypeLink {
			out.Linkname = e.linkname
		}
		if isSparse(hdr) {
			if err := checkSparse(e.name, hdr); err != nil {
				return err
			}
			if err := writeSparseTar(tw, bw, out, r, tmpDir, buf); err != nil {
				return fmt.Errorf("write %s: %w", e.name, err)
			}
			return nil
		}
		if err := tw.WriteHeader(out); err != nil {
			return fmt.Errorf("write %s: %w", e.name, err)
		}
		if out.Typeflag == tar.TypeReg {
			if _, err := io.CopyBuffer(tw, r, buf); err != nil {
				return fmt.Errorf("write %s: %w", e.name, err)
			}
		}
		return nil
	})
	if err != nil {
		if c.layer >= 0 && c.layer < len(layers) {
			dg, _ := layers[c.layer].Digest()
			return fmt.Errorf("flatten layer %s: %w", dg, err)
		}
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

// layerCursor reads the layers' entries in order, as far as asked.
type layerCursor struct {
	ctx    context.Context
	layers []v1.Layer
	layer  int
	index  int
	rc     io.ReadCloser
	tr     *tar.Reader
	hdr    *tar.Header
	entry  flatEntry
}

// seek moves to the entry at pos (or stays there) and returns it. Layers
// without anything to write are not read at all.
func (c *layerCursor) seek(pos uint64) (*tar.Header, io.Reader, flatEntry, error) {
	layer, index := int(pos>>40), int(pos&(1<<40-1))
	if c.layer == layer && c.index == index && c.hdr != nil {
		return c.hdr, c.tr, c.entry, nil
	}
	if layer < c.layer || (layer == c.layer && index < c.index) {
		return nil, nil, flatEntry{}, errors.New("rootfs.tar events out of order")
	}
	if layer != c.layer {
		if err := c.open(layer); err != nil {
			return nil, nil, flatEntry{}, err
		}
	}
	for c.index < index {
		if err := c.ctx.Err(); err != nil {
			return nil, nil, flatEntry{}, err
		}
		hdr, err := c.tr.Next()
		if err == io.EOF {
			return nil, nil, flatEntry{}, errors.New("layer changed between passes")
		}
		if err != nil {
			return nil, nil, flatEntry{}, fmt.Errorf("read tar: %w", err)
		}
		c.index++
		c.hdr = hdr
	}
	e, err := toFlatEntry(c.hdr)
	if err != nil {
		return nil, nil, flatEntry{}, err
	}
	c.entry = e
	return c.hdr, c.tr, c.entry, nil
}

func (c *layerCursor) open(i int) error {
	if c.rc != nil {
		c.rc.Close()
	}
	rc, err := openLayer(c.ctx, c.layers[i])
	if err != nil {
		return err
	}
	c.layer, c.index, c.rc, c.tr, c.hdr = i, -1, rc, tar.NewReader(rc), nil
	return nil
}

func (c *layerCursor) close() {
	if c.rc != nil {
		c.rc.Close()
	}
}

// cleanHeader copies hdr with a normalised name and lets the tar writer
// choose the format.
func cleanHeader(hdr *tar.Header, name string) *tar.Header {
	h := *hdr
	h.Name = name
	if name == "" {
		h.Name = "./"
	} else if h.Typeflag == tar.TypeDir {
		h.Name += "/"
	}
	h.Format = tar.FormatUnknown
	return &h
}

// spool keeps the content of replaced hardlink targets in one temporary
// file, with an index of (position, offset, length) records in position
// order, which is the order they are added in.
type spool struct {
	dir        string
	data, idx  *os.File
	dataW      *bufio.Writer
	idxW       *bufio.Writer
	off, count int64
}

func (s *spool) add(pos uint64, orig *tar.Header, name string, r io.Reader, buf []byte) error {
	hdr := cleanHeader(orig, name)
	sparse := isSparse(orig)
	if sparse {
		if err := checkSparse(name, orig); err != nil {
			return err
		}
		// Marked for writeCopy, which writes the copy sparse too.
		hdr.Typeflag = tar.TypeGNUSparse
	}
	if s.data == nil {
		var err error
		if s.data, err = spillFile(s.dir); err != nil {
			return err
		}
		if s.idx, err = spillFile(s.dir); err != nil {
			return err
		}
		s.dataW, s.idxW = bufio.NewWriterSize(s.data, 64<<10), bufio.NewWriterSize(s.idx, 4<<10)
	}
	h, err := json.Marshal(hdr)
	if err != nil {
		return err
	}
	start := s.off
	b := binary.AppendUvarint(nil, uint64(len(h)))
	if _, err := s.dataW.Write(append(b, h...)); err != nil {
		return fmt.Errorf("keep content of %s: %w", hdr.Name, err)
	}
	var n int64
	if sparse {
		// Its holes stay holes in the spool.
		if err := s.dataW.Flush(); err != nil {
			return err
		}
		base := s.off + int64(len(b)+len(h))
		if err := dataRuns(r, hdr.Size, buf, func(off int64, d []byte) error {
			_, err := s.data.WriteAt(d, base+off)
			return err
		}); err != nil {
			return fmt.Errorf("keep content of %s: %w", hdr.Name, err)
		}
		// The record ends at its size even if it ends in a hole.
		if err := s.data.Truncate(base + hdr.Size); err != nil {
			return err
		}
		if _, err := s.data.Seek(base+hdr.Size, io.SeekStart); err != nil {
			return err
		}
		n = hdr.Size
	} else if n, err = io.CopyBuffer(s.dataW, r, buf); err != nil {
		return fmt.Errorf("keep content of %s: %w", hdr.Name, err)
	}
	s.off += int64(len(b)+len(h)) + n
	rec := binary.BigEndian.AppendUint64(nil, pos)
	rec = binary.BigEndian.AppendUint64(rec, uint64(start))
	rec = binary.BigEndian.AppendUint64(rec, uint64(s.off-start))
	if _, err := s.idxW.Write(rec); err != nil {
		return fmt.Errorf("keep content of %s: %w", hdr.Name, err)
	}
	s.count++
	return nil
}

// writeCopy writes the content kept for pos as a regular file named name,
// with the metadata of the file it was.
func (s *spool) writeCopy(tw *tar.Writer, w io.Writer, pos uint64, name string, buf []byte) error {
	if s.data == nil {
		return fmt.Errorf("hardlink %s: the content it links to was not kept", name)
	}
	if err := s.dataW.Flush(); err != nil {
		return err
	}
	if err := s.idxW.Flush(); err != nil {
		return err
	}
	var rec [24]byte
	lo, hi := int64(0), s.count
	for lo < hi {
		mid := (lo + hi) / 2
		if _, err := s.idx.ReadAt(rec[:], mid*24); err != nil {
			return err
		}
		if p := binary.BigEndian.Uint64(rec[:]); p < pos {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == s.count {
		return fmt.Errorf("hardlink %s: the content it links to was not kept", name)
	}
	if _, err := s.idx.ReadAt(rec[:], lo*24); err != nil || binary.BigEndian.Uint64(rec[:]) != pos {
		return fmt.Errorf("hardlink %s: the content it links to was not kept", name)
	}
	off, n := int64(binary.BigEndian.Uint64(rec[8:])), int64(binary.BigEndian.Uint64(rec[16:]))
	br := bufio.NewReader(io.NewSectionReader(s.data, off, n))
	hl, err := binary.ReadUvarint(br)
	if err != nil {
		return err
	}
	hj := make([]byte, hl)
	if _, err := io.ReadFull(br, hj); err != nil {
		return err
	}
	var h tar.Header
	if err := json.Unmarshal(hj, &h); err != nil {
		return err
	}
	sparse := h.Typeflag == tar.TypeGNUSparse
	h.Name = name
	h.Typeflag = tar.TypeReg
	h.Size = n - int64(binary.PutUvarint(make([]byte, binary.MaxVarintLen64), hl)) - int64(hl)
	if sparse {
		// Its data runs from the spool's own holes: no 16 GiB of zeros
		// read back.
		base := off + n - h.Size
		// SEEK_DATA moves the file's offset, where the next record goes.
		defer s.data.Seek(s.off, io.SeekStart)
		return writeSparseRuns(tw, w, &h, s.dir, buf, func(data func(int64, []byte) error) error {
			return fileDataRuns(s.data, base, h.Size, buf, data)
		})
	}
	if err := tw.WriteHeader(&h); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := io.CopyBuffer(tw, br, buf); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

func (s *spool) close() {
	if s.data != nil {
		s.data.Close()
		s.idx.Close()
	}
}
