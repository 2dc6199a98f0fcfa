package imagefs

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// MaxSparseSize is the largest size a sparse tar entry may expand to. Its
// holes cost no disk in rootfs/ or rootfs.tar, but the tar reader hands
// them over as zeros, so each pass over the entry costs CPU in proportion
// to its size (about 1 s per 20 GiB here); a layer claiming an exabyte
// would keep the get busy for years.
const MaxSparseSize int64 = 256 << 30

// maxSparseSize is MaxSparseSize; the fuzz targets lower it, to stay fast.
var maxSparseSize = MaxSparseSize

func sizeText(n int64) string {
	if n >= 1<<30 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

// holeBlock is the granularity of holes: a block of zeros this big,
// aligned in the file, is not written.
const holeBlock = 4096

var zeroBlock = make([]byte, holeBlock)

// isSparse reports whether hdr is a sparse entry, old GNU ('S') or PAX
// (GNU.sparse records of format 0.0, 0.1 or 1.0).
func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for _, k := range []string{"GNU.sparse.major", "GNU.sparse.map", "GNU.sparse.numblocks", "GNU.sparse.realsize"} {
		if hdr.PAXRecords[k] != "" {
			return true
		}
	}
	return false
}

// SparseTooLargeError is a sparse entry that expands past MaxSparseSize.
type SparseTooLargeError struct {
	Name string
	Size int64
}

func (e *SparseTooLargeError) Error() string {
	return fmt.Sprintf("sparse file %s expands to %d bytes, more than the %s this resource writes: refused", shortName(e.Name), e.Size, sizeText(maxSparseSize))
}

func checkSparse(name string, hdr *tar.Header) error {
	if hdr.Size > maxSparseSize {
		return &SparseTooLargeError{Name: name, Size: hdr.Size}
	}
	return nil
}

// dataRuns reads size bytes from r and calls data for every run of blocks
// that are not all zeros, with its offset; runs of zero blocks are skipped.
// buf's length is the read size; it must be a multiple of holeBlock.
func dataRuns(r io.Reader, size int64, buf []byte, data func(off int64, b []byte) error) error {
	var off int64
	for off < size {
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), size-off)])
		if err != nil {
			return err
		}
		b := buf[:n]
		for start := 0; start < len(b); {
			end := min(start+holeBlock, len(b))
			if bytes.Equal(b[start:end], zeroBlock[:end-start]) {
				start = end
				continue
			}
			// A run of blocks with data.
			runEnd := end
			for runEnd < len(b) {
				e := min(runEnd+holeBlock, len(b))
				if bytes.Equal(b[runEnd:e], zeroBlock[:e-runEnd]) {
					break
				}
				runEnd = e
			}
			if err := data(off+int64(start), b[start:runEnd]); err != nil {
				return err
			}
			start = runEnd
		}
		off += int64(n)
	}
	return nil
}

// writeSparse writes the sparse entry's content to f, leaving its zero
// blocks as holes: a 16 GiB file of a few data blocks allocates those.
func writeSparse(f *os.File, r io.Reader, size int64, buf []byte) error {
	if err := dataRuns(r, size, buf, func(off int64, b []byte) error {
		_, err := f.WriteAt(b, off)
		return err
	}); err != nil {
		return err
	}
	return f.Truncate(size)
}

// fileDataRuns calls data for the data runs of f between base and
// base+size, offsets relative to base, as dataRuns would find them, but
// reading only the regions SEEK_DATA and SEEK_HOLE say hold data (widened
// to holeBlock boundaries relative to base), not the holes.
func fileDataRuns(f *os.File, base, size int64, buf []byte, data func(off int64, b []byte) error) error {
	fd := int(f.Fd())
	for pos := int64(0); pos < size; {
		start, err := unix.Seek(fd, base+pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) || (err == nil && start >= base+size) {
			return nil // only a hole is left
		}
		if err != nil {
			return err
		}
		stop, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		a := (start - base) &^ (holeBlock - 1)
		b := min((stop-base+holeBlock-1)&^(holeBlock-1), size)
		if err := dataRuns(io.NewSectionReader(f, base+a, b-a), b-a, buf, func(off int64, d []byte) error {
			return data(a+off, d)
		}); err != nil {
			return err
		}
		pos = b
	}
	return nil
}

// sparseEntry is a sparse file's content kept aside while its map is made:
// the data runs in one temporary file, the map (offset and length lines,
// as PAX 1.0 wants them) in another.
type sparseEntry struct {
	data, mapf *os.File
	dataW      *bufio.Writer
	mapW       *bufio.Writer
	entries    int64
	dataLen    int64
	mapLen     int64
	lastOff    int64
	lastLen    int64
}

// writeSparseTar writes h (its Size the expanded size) with the content of
// r as a PAX 1.0 sparse entry (GNU.sparse.major=1, minor=0), which GNU
// tar, bsdtar and Go's tar reader read back as a sparse file: Go's tar
// writer cannot write sparse entries. tw is flushed first, and the entry's
// blocks go straight to w, tw's destination.
func writeSparseTar(tw *tar.Writer, w io.Writer, h *tar.Header, r io.Reader, tmpDir string, buf []byte) error {
	return writeSparseRuns(tw, w, h, tmpDir, buf, func(data func(int64, []byte) error) error {
		return dataRuns(r, h.Size, buf, data)
	})
}

// writeSparseRuns is writeSparseTar with the data runs coming from runs.
// Every run but the last must be a multiple of 512 bytes long: GNU tar
// reads each run's data in whole 512-byte blocks (a run of 3810 bytes put
// the next one's data out of place); dataRuns gives runs of whole 4 KiB
// blocks but at the file's end.
func writeSparseRuns(tw *tar.Writer, w io.Writer, h *tar.Header, tmpDir string, buf []byte, runs func(data func(int64, []byte) error) error) error {
	s := &sparseEntry{}
	defer s.close()
	var err error
	if s.data, err = spillFile(tmpDir); err != nil {
		return err
	}
	if s.mapf, err = spillFile(tmpDir); err != nil {
		return err
	}
	s.dataW, s.mapW = bufio.NewWriterSize(s.data, 256<<10), bufio.NewWriterSize(s.mapf, 64<<10)
	if err := runs(s.add); err != nil {
		return err
	}
	end := int64(0)
	if s.lastLen > 0 {
		end = s.lastOff + s.lastLen
		s.flushRun()
	}
	// A file that ends in a hole ends its map with an empty run at its
	// size, as GNU tar writes it.
	if end < h.Size || s.entries == 0 {
		s.lastOff, s.lastLen = h.Size, 0
		s.flushRun()
	}
	if err := s.dataW.Flush(); err != nil {
		return err
	}
	if err := s.mapW.Flush(); err != nil {
		return err
	}
	count := strconv.FormatInt(s.entries, 10) + "\n"
	mapBytes := int64(len(count)) + s.mapLen
	mapPadded := (mapBytes + 511) &^ 511
	physical := mapPadded + s.dataLen

	if err := tw.Flush(); err != nil {
		return err
	}
	if err := writeSparseHeaders(w, h, physical); err != nil {
		return err
	}
	if _, err := io.WriteString(w, count); err != nil {
		return err
	}
	if _, err := s.mapf.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.CopyBuffer(w, s.mapf, buf); err != nil {
		return err
	}
	if _, err := w.Write(make([]byte, mapPadded-mapBytes)); err != nil {
		return err
	}
	if _, err := s.data.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := io.CopyBuffer(w, s.data, buf); err != nil {
		return err
	}
	_, err = w.Write(make([]byte, (512-physical%512)%512))
	return err
}

func (s *sparseEntry) add(off int64, b []byte) error {
	if s.lastLen > 0 && off == s.lastOff+s.lastLen {
		s.lastLen += int64(len(b))
	} else {
		if s.lastLen > 0 {
			s.flushRun()
		}
		s.lastOff, s.lastLen = off, int64(len(b))
	}
	if _, err := s.dataW.Write(b); err != nil {
		return fmt.Errorf("keep sparse data: %w", err)
	}
	s.dataLen += int64(len(b))
	return nil
}

func (s *sparseEntry) flushRun() {
	line := strconv.FormatInt(s.lastOff, 10) + "\n" + strconv.FormatInt(s.lastLen, 10) + "\n"
	s.mapW.WriteString(line) // errors come out of Flush
	s.mapLen += int64(len(line))
	s.entries++
	s.lastLen = 0
}

func (s *sparseEntry) close() {
	for _, f := range []*os.File{s.data, s.mapf} {
		if f != nil {
			f.Close()
		}
	}
}

// writeSparseHeaders writes the PAX extended header and the ustar header
// of a PAX 1.0 sparse entry whose data section is physical bytes.
func writeSparseHeaders(w io.Writer, h *tar.Header, physical int64) error {
	recs := map[string]string{
		"GNU.sparse.major":    "1",
		"GNU.sparse.minor":    "0",
		"GNU.sparse.name":     h.Name,
		"GNU.sparse.realsize": strconv.FormatInt(h.Size, 10),
		"mtime":               strconv.FormatInt(h.ModTime.Unix(), 10),
		"uid":                 strconv.Itoa(h.Uid),
		"gid":                 strconv.Itoa(h.Gid),
		"size":                strconv.FormatInt(physical, 10),
	}
	if h.Uname != "" {
		recs["uname"] = h.Uname
	}
	if h.Gname != "" {
		recs["gname"] = h.Gname
	}
	for k, v := range h.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			recs[k] = v
		}
	}
	keys := make([]string, 0, len(recs))
	for k := range recs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var pax bytes.Buffer
	for _, k := range keys {
		pax.WriteString(paxRecord(k, recs[k]))
	}
	dir, base := path.Split(h.Name)
	xh := ustarBlock(path.Join(dir, "PaxHeaders.0", base), 0o644, 0, 0, int64(pax.Len()), h.ModTime.Unix(), tar.TypeXHeader, "", "")
	if _, err := w.Write(xh); err != nil {
		return err
	}
	if _, err := w.Write(pax.Bytes()); err != nil {
		return err
	}
	if _, err := w.Write(make([]byte, (512-pax.Len()%512)%512)); err != nil {
		return err
	}
	fh := ustarBlock(path.Join(dir, "GNUSparseFile.0", base), h.Mode&0o7777, h.Uid, h.Gid, physical, h.ModTime.Unix(), tar.TypeReg, h.Uname, h.Gname)
	_, err := w.Write(fh)
	return err
}

// paxRecord is "<length> key=value\n", the length counting itself.
func paxRecord(k, v string) string {
	size := len(k) + len(v) + 3
	for {
		rec := strconv.Itoa(size) + " " + k + "=" + v + "\n"
		if len(rec) == size {
			return rec
		}
		size = len(rec)
	}
}

// ustarBlock is one ustar header block. Fields that do not fit (a long
// name, ids or a size beyond octal) are cut or zero: the PAX records
// before it carry them.
func ustarBlock(name string, mode int64, uid, gid int, size, mtime int64, typ byte, uname, gname string) []byte {
	b := make([]byte, 512)
	copy(b[0:100], cut(name, 100))
	octal(b[100:108], mode)
	octal(b[108:116], int64(uid))
	octal(b[116:124], int64(gid))
	octal(b[124:136], size)
	octal(b[136:148], mtime)
	b[156] = typ
	copy(b[257:263], "ustar\x00")
	copy(b[263:265], "00")
	copy(b[265:297], cut(uname, 32))
	copy(b[297:329], cut(gname, 32))
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func cut(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// octal writes v as octal digits and a NUL into f, or zeros when v does not
// fit (or is negative).
func octal(f []byte, v int64) {
	s := strconv.FormatInt(v, 8)
	if v < 0 || len(s) > len(f)-1 {
		s = "0"
	}
	copy(f, strings.Repeat("0", len(f)-1-len(s))+s)
	f[len(f)-1] = 0
}
