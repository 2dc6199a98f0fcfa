package imagefs

import (
	"bufio"
	"container/heap"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"slices"
	"sort"
)

// What the extraction and the flattening keep per tar entry goes to disk
// past these sizes, so a layer of millions of entries costs disk, not
// memory (issue 12: the get's memory must not grow with the entry count).
// Variables so that tests can make them small.
var (
	sortMem = 2 << 20 // bytes of records a sorter holds before it writes a run
	maxRuns = 16      // runs merged into one when there are this many
	setMem  = 1 << 15 // names a nameSet holds in memory (a map of 8-byte hashes)
	setRuns = 8       // a nameSet's runs merged into one past this many
)

// spillFile creates a temporary file in dir and unlinks it at once: it
// lives as long as the handle, and nothing is left behind even if the
// process is killed.
func spillFile(dir string) (*os.File, error) {
	f, err := os.CreateTemp(dir, ".spill-*")
	if err != nil {
		return nil, fmt.Errorf("create temporary file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("create temporary file: %w", err)
	}
	return f, nil
}

// sorter collects records and gives them back in order, holding at most
// sortMem bytes of them in memory: the rest are sorted runs on disk, merged
// at the end. In memory, records sit back to back in one buffer, each
// behind its length, with a 4-byte offset per record to sort: small
// records cost little more than their bytes.
type sorter struct {
	dir   string
	less  func(a, b []byte) bool
	arena []byte
	offs  []uint32
	runs  []*os.File
}

func newSorter(dir string, less func(a, b []byte) bool) *sorter {
	return &sorter{dir: dir, less: less}
}

// Add copies rec into the sorter.
func (s *sorter) Add(rec []byte) error {
	need := binary.MaxVarintLen64 + len(rec)
	if len(s.arena)+need > cap(s.arena) {
		if len(s.offs) > 0 {
			if err := s.flush(); err != nil {
				return err
			}
		}
		if cap(s.arena) < max(sortMem, need) {
			s.arena = make([]byte, 0, max(sortMem, need))
		}
	}
	s.offs = append(s.offs, uint32(len(s.arena)))
	s.arena = binary.AppendUvarint(s.arena, uint64(len(rec)))
	s.arena = append(s.arena, rec...)
	return nil
}

// at is the record at offset o of the arena, with its length prefix.
func (s *sorter) at(o uint32) (rec, whole []byte) {
	n, k := binary.Uvarint(s.arena[o:])
	end := int(o) + k + int(n)
	return s.arena[int(o)+k : end], s.arena[o:end]
}

func (s *sorter) sortMem() {
	sort.SliceStable(s.offs, func(i, j int) bool {
		a, _ := s.at(s.offs[i])
		b, _ := s.at(s.offs[j])
		return s.less(a, b)
	})
}

// flush writes the records in memory as a sorted run.
func (s *sorter) flush() error {
	s.sortMem()
	f, err := spillFile(s.dir)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 64<<10)
	for _, o := range s.offs {
		_, whole := s.at(o)
		if _, err := w.Write(whole); err != nil {
			f.Close()
			return fmt.Errorf("write temporary file: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("write temporary file: %w", err)
	}
	s.runs = append(s.runs, f)
	s.arena, s.offs = s.arena[:0], s.offs[:0]
	if len(s.runs) >= maxRuns {
		return s.mergeRuns()
	}
	return nil
}

// mergeRuns merges every run into one, so at most maxRuns are open.
func (s *sorter) mergeRuns() error {
	f, err := spillFile(s.dir)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 64<<10)
	runs := s.runs
	s.runs = nil
	err = merge(runs, s.less, func(r []byte) error { return writeRecord(w, r) })
	for _, r := range runs {
		r.Close()
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		f.Close()
		return err
	}
	s.runs = []*os.File{f}
	return nil
}

// Each calls fn with every record in order. The slice is only valid during
// the call. The sorter is empty afterwards.
func (s *sorter) Each(fn func(rec []byte) error) error {
	defer s.Close()
	if len(s.runs) == 0 {
		s.sortMem()
		for _, o := range s.offs {
			rec, _ := s.at(o)
			if err := fn(rec); err != nil {
				return err
			}
		}
		return nil
	}
	if len(s.offs) > 0 {
		if err := s.flush(); err != nil {
			return err
		}
	}
	// The arena is not needed while merging.
	s.arena, s.offs = nil, nil
	return merge(s.runs, s.less, fn)
}

// Close drops whatever the sorter holds.
func (s *sorter) Close() {
	for _, f := range s.runs {
		f.Close()
	}
	s.runs, s.arena, s.offs = nil, nil, nil
}

func writeRecord(w *bufio.Writer, r []byte) error {
	var n [binary.MaxVarintLen64]byte
	if _, err := w.Write(n[:binary.PutUvarint(n[:], uint64(len(r)))]); err != nil {
		return fmt.Errorf("write temporary file: %w", err)
	}
	if _, err := w.Write(r); err != nil {
		return fmt.Errorf("write temporary file: %w", err)
	}
	return nil
}

// runReader reads back one run.
type runReader struct {
	r   *bufio.Reader
	idx int // the run's place: equal records come in run order
	cur []byte
	buf []byte
}

func (rr *runReader) next() (bool, error) {
	n, err := binary.ReadUvarint(rr.r)
	if err == io.EOF {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read temporary file: %w", err)
	}
	if uint64(cap(rr.buf)) < n {
		rr.buf = make([]byte, n)
	}
	rr.cur = rr.buf[:n]
	if _, err := io.ReadFull(rr.r, rr.cur); err != nil {
		return false, fmt.Errorf("read temporary file: %w", err)
	}
	return true, nil
}

type runHeap struct {
	rs   []*runReader
	less func(a, b []byte) bool
}

func (h *runHeap) Len() int      { return len(h.rs) }
func (h *runHeap) Swap(i, j int) { h.rs[i], h.rs[j] = h.rs[j], h.rs[i] }
func (h *runHeap) Push(x any)    { h.rs = append(h.rs, x.(*runReader)) }
func (h *runHeap) Pop() any {
	x := h.rs[len(h.rs)-1]
	h.rs = h.rs[:len(h.rs)-1]
	return x
}

func (h *runHeap) Less(i, j int) bool {
	a, b := h.rs[i], h.rs[j]
	switch {
	case h.less(a.cur, b.cur):
		return true
	case h.less(b.cur, a.cur):
		return false
	}
	return a.idx < b.idx
}

// merge calls fn with the records of the sorted runs in order; records
// that compare equal come in the order of their runs, as a stable sort
// would give them (runs are written in the order records were added).
func merge(runs []*os.File, less func(a, b []byte) bool, fn func([]byte) error) error {
	h := &runHeap{less: less}
	for i, f := range runs {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("read temporary file: %w", err)
		}
		rr := &runReader{r: bufio.NewReaderSize(f, 64<<10), idx: i}
		ok, err := rr.next()
		if err != nil {
			return err
		}
		if ok {
			h.rs = append(h.rs, rr)
		}
	}
	heap.Init(h)
	for h.Len() > 0 {
		rr := h.rs[0]
		if err := fn(rr.cur); err != nil {
			return err
		}
		ok, err := rr.next()
		if err != nil {
			return err
		}
		if ok {
			heap.Fix(h, 0)
		} else {
			heap.Pop(h)
		}
	}
	return nil
}

// nameSet is a set of names that stays within setMem names of memory: past
// that it keeps sorted runs of hashes on disk and looks names up there
// with a binary search. Names are keyed by a 64-bit hash with a seed of
// this run's choosing, so a layer cannot make names collide; by chance two
// of a billion names collide once in 2^44 gets.
type nameSet struct {
	dir  string
	seed maphash.Seed
	mem  map[uint64]struct{}
	runs []*os.File
	lens []int64 // entries per run
}

func newNameSet(dir string) *nameSet {
	return &nameSet{dir: dir, seed: maphash.MakeSeed(), mem: map[uint64]struct{}{}}
}

func (s *nameSet) Add(name string) error {
	s.mem[maphash.String(s.seed, name)] = struct{}{}
	if len(s.mem) >= setMem {
		return s.spill()
	}
	return nil
}

func (s *nameSet) Has(name string) (bool, error) {
	h := maphash.String(s.seed, name)
	if _, ok := s.mem[h]; ok {
		return true, nil
	}
	var b [8]byte
	for i, f := range s.runs {
		lo, hi := int64(0), s.lens[i]
		for lo < hi {
			mid := (lo + hi) / 2
			if _, err := f.ReadAt(b[:], mid*8); err != nil {
				return false, fmt.Errorf("read temporary file: %w", err)
			}
			v := binary.BigEndian.Uint64(b[:])
			switch {
			case v == h:
				return true, nil
			case v < h:
				lo = mid + 1
			default:
				hi = mid
			}
		}
	}
	return false, nil
}

// Reset empties the set.
func (s *nameSet) Reset() {
	s.Close()
	s.mem = map[uint64]struct{}{}
}

func (s *nameSet) Close() {
	for _, f := range s.runs {
		f.Close()
	}
	s.runs, s.lens = nil, nil
}

// spill writes the names in memory as a sorted run.
func (s *nameSet) spill() error {
	keys := make([]uint64, 0, len(s.mem))
	for k := range s.mem {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	f, err := writeHashes(s.dir, func(emit func(uint64) error) error {
		for _, k := range keys {
			if err := emit(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.runs, s.lens = append(s.runs, f), append(s.lens, int64(len(keys)))
	s.mem = map[uint64]struct{}{}
	if len(s.runs) > setRuns {
		return s.mergeRuns()
	}
	return nil
}

// mergeRuns merges the runs into one, dropping repeats.
func (s *nameSet) mergeRuns() error {
	var n int64
	f, err := writeHashes(s.dir, func(emit func(uint64) error) error {
		rs := make([]*bufio.Reader, len(s.runs))
		heads := make([]uint64, len(s.runs))
		left := slices.Clone(s.lens)
		for i, r := range s.runs {
			if _, err := r.Seek(0, io.SeekStart); err != nil {
				return err
			}
			rs[i] = bufio.NewReaderSize(r, 32<<10)
		}
		read := func(i int) error {
			var b [8]byte
			if _, err := io.ReadFull(rs[i], b[:]); err != nil {
				return fmt.Errorf("read temporary file: %w", err)
			}
			heads[i] = binary.BigEndian.Uint64(b[:])
			left[i]--
			return nil
		}
		live := map[int]bool{}
		for i := range rs {
			if left[i] > 0 {
				if err := read(i); err != nil {
					return err
				}
				live[i] = true
			}
		}
		last, first := uint64(0), true
		for len(live) > 0 {
			min := -1
			for i := range live {
				if min < 0 || heads[i] < heads[min] {
					min = i
				}
			}
			if v := heads[min]; first || v != last {
				if err := emit(v); err != nil {
					return err
				}
				n++
				last, first = v, false
			}
			if left[min] == 0 {
				delete(live, min)
			} else if err := read(min); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.Close()
	s.runs, s.lens = []*os.File{f}, []int64{n}
	return nil
}

func writeHashes(dir string, fill func(emit func(uint64) error) error) (*os.File, error) {
	f, err := spillFile(dir)
	if err != nil {
		return nil, err
	}
	w := bufio.NewWriterSize(f, 64<<10)
	var b [8]byte
	err = fill(func(v uint64) error {
		binary.BigEndian.PutUint64(b[:], v)
		_, err := w.Write(b[:])
		return err
	})
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("write temporary file: %w", err)
	}
	return f, nil
}
