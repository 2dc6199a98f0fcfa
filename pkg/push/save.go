package push

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/ctxio"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/gzip"
)

// smallEntry: save-stream entries up to this size are kept in memory
// (configs, manifest.json, small layers); larger ones go to a temp file.
const smallEntry = 1 << 20

// gzipLevel matches docker push (compress/gzip's default); klauspost's
// implementation is about twice as fast at the same level.
const gzipLevel = gzip.DefaultCompression

// saved is the built image as the daemon gave it (its save stream or its
// layer store): the config's exact bytes and, compressed, every layer no
// base holds.
type saved struct {
	config  []byte
	diffIDs []v1.Hash
	fresh   map[v1.Hash]*freshLayer
	from    Source
	// streamed counts the bytes read (the save stream, or the new layers'
	// tars); took is the time to read them.
	streamed int64
	took     time.Duration
}

// freshLayer is a layer the build produced, compressed once with gzip into
// a temp file.
type freshLayer struct {
	diffID  v1.Hash
	digest  v1.Hash
	size    int64 // compressed
	rawSize int64
	path    string
}

func (l *freshLayer) open() (io.ReadCloser, error) { return os.Open(l.path) }

// saveEntry is one regular file of the save stream.
type saveEntry struct {
	hash v1.Hash
	size int64
	data []byte // small entries
	path string // large entries no base holds (uncompressed)

	// Compression, started as soon as a large entry has streamed.
	once  sync.Once
	done  chan struct{}
	fresh *freshLayer
	err   error
}

// streamSave reads `docker save` of imageID once. Every file is hashed as it
// streams (a layer.tar's sha256 is its diff ID, whatever the daemon named
// it); files whose hash is a base layer are dropped, the others compressed
// in parallel while the stream goes on. Entries are found through
// manifest.json, so both the classic layout (<id>/layer.tar) and the OCI one
// of Docker 25+ (blobs/sha256/<hex>) work.
func streamSave(ctx context.Context, d Daemon, imageID string, known map[v1.Hash]bool, dir string) (*saved, error) {
	rc, err := d.ImageSave(ctx, []string{imageID})
	if err != nil {
		return nil, fmt.Errorf("docker save %s: %w", imageID, err)
	}
	defer rc.Close()
	counted := &countingReader{r: ctxio.Reader(ctx, rc)}

	entries := map[string]*saveEntry{}
	defer func() {
		// Uncompressed copies go once compression is done with them.
		for _, e := range entries {
			if e.path != "" {
				os.Remove(e.path)
			}
		}
	}()
	c := newCompressor(ctx, dir)
	defer c.wait() // runs first: no goroutine may still read or write in dir
	if err := readSaveStream(tar.NewReader(bufio.NewReaderSize(counted, 1<<20)), entries, known, dir, c); err != nil {
		return nil, err
	}
	s := &saved{fresh: map[v1.Hash]*freshLayer{}, from: FromSaveStream, streamed: counted.n}

	m, err := pickManifest(entries, imageID)
	if err != nil {
		return nil, err
	}
	if err := s.readConfig(entries, m); err != nil {
		return nil, err
	}
	need, err := s.freshLayers(entries, m, known, c)
	if err != nil {
		return nil, err
	}
	for _, e := range need {
		<-e.done
		if e.err != nil {
			return nil, fmt.Errorf("compressing layer %s: %w", e.hash, e.err)
		}
		s.fresh[e.hash] = e.fresh
	}
	return s, nil
}

// readSaveStream reads every regular file of the stream into entries, by
// cleaned name; files with the same content share one entry. A large file
// no base holds starts compressing at once.
func readSaveStream(tr *tar.Reader, entries map[string]*saveEntry, known map[v1.Hash]bool, dir string, c *compressor) error {
	byHash := map[v1.Hash]*saveEntry{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading docker save stream: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		e, err := readSaveEntry(tr, h, known, dir)
		if err != nil {
			return fmt.Errorf("reading docker save stream: %s: %w", h.Name, err)
		}
		if first, ok := byHash[e.hash]; ok {
			if e.path != "" {
				os.Remove(e.path)
			}
			e = first
		} else {
			byHash[e.hash] = e
			if e.path != "" {
				c.start(e) // large and no base's: almost surely a new layer
			}
		}
		entries[baseimage.CleanName(h.Name)] = e
	}
}

// readConfig keeps the config's exact bytes and its layers' diff IDs.
func (s *saved) readConfig(entries map[string]*saveEntry, m *saveManifest) error {
	ce := entries[baseimage.CleanName(m.Config)]
	if ce == nil {
		return fmt.Errorf("docker save stream: config %s is missing", m.Config)
	}
	var err error
	if s.config, err = ce.bytes(); err != nil {
		return fmt.Errorf("docker save stream: config: %w", err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(s.config))
	if err != nil {
		return fmt.Errorf("docker save stream: parsing config: %w", err)
	}
	s.diffIDs = cfg.RootFS.DiffIDs
	return nil
}

// freshLayers checks the layers manifest.json names hash to the config's
// diff IDs, and starts compressing those no base holds, which it returns.
func (s *saved) freshLayers(entries map[string]*saveEntry, m *saveManifest, known map[v1.Hash]bool, c *compressor) ([]*saveEntry, error) {
	if len(s.diffIDs) != len(m.Layers) {
		return nil, formatError(fmt.Sprintf("the config names %d layers, manifest.json %d", len(s.diffIDs), len(m.Layers)))
	}
	var need []*saveEntry
	for i, name := range m.Layers {
		e := entries[baseimage.CleanName(name)]
		if e == nil {
			return nil, formatError("layer " + name + " named in manifest.json is not in the stream")
		}
		if e.hash != s.diffIDs[i] {
			// A daemon whose save holds compressed layers (the containerd
			// image store) or anything else this code does not understand.
			return nil, formatError(fmt.Sprintf("layer %s hashes to %s, but the config says %s", name, e.hash, s.diffIDs[i]))
		}
		if !known[e.hash] {
			c.start(e)
			need = append(need, e)
		}
	}
	return need, nil
}

// errFormat marks a save stream this code cannot use; the daemon can still
// push the image.
var errFormat = errors.New("unexpected docker save stream")

func formatError(msg string) error { return fmt.Errorf("%w: %s", errFormat, msg) }

func pickManifest(entries map[string]*saveEntry, imageID string) (*saveManifest, error) {
	me := entries["manifest.json"]
	if me == nil || me.data == nil {
		return nil, formatError("no manifest.json")
	}
	var ms []saveManifest
	if err := json.Unmarshal(me.data, &ms); err != nil {
		return nil, formatError("parsing manifest.json: " + err.Error())
	}
	for i := range ms {
		if ce := entries[baseimage.CleanName(ms[i].Config)]; ce != nil && ce.hash.String() == imageID {
			return &ms[i], nil
		}
	}
	if len(ms) == 1 {
		return &ms[0], nil // an image store whose IDs are not config digests
	}
	return nil, formatError(fmt.Sprintf("manifest.json lists %d images, none with config %s", len(ms), imageID))
}

func readSaveEntry(r io.Reader, h *tar.Header, known map[v1.Hash]bool, dir string) (*saveEntry, error) {
	e := &saveEntry{size: h.Size, done: make(chan struct{})}
	hs := sha256.New()
	if h.Size <= smallEntry {
		b, err := io.ReadAll(io.TeeReader(r, hs))
		if err != nil {
			return nil, err
		}
		e.data, e.hash = b, sum(hs)
		return e, nil
	}
	f, err := os.CreateTemp(dir, "layer-*.tar")
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	_, err = io.Copy(io.MultiWriter(hs, bw), r)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, err
	}
	e.hash = sum(hs)
	if known[e.hash] {
		// A base layer: its original blob is pushed instead.
		os.Remove(f.Name())
		return e, nil
	}
	e.path = f.Name()
	return e, nil
}

func (e *saveEntry) bytes() ([]byte, error) {
	if e.data != nil {
		return e.data, nil
	}
	if e.path == "" {
		return nil, errors.New("its bytes were not kept")
	}
	return os.ReadFile(e.path)
}

func (e *saveEntry) reader() (io.ReadCloser, error) {
	if e.data != nil {
		return io.NopCloser(bytes.NewReader(e.data)), nil
	}
	return os.Open(e.path)
}

// compressor gzips entries, as many at a time as there are CPUs.
type compressor struct {
	ctx context.Context
	dir string
	sem chan struct{}
	wg  sync.WaitGroup
}

func newCompressor(ctx context.Context, dir string) *compressor {
	return &compressor{ctx: ctx, dir: dir, sem: make(chan struct{}, runtime.NumCPU())}
}

func (c *compressor) start(e *saveEntry) {
	e.once.Do(func() {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer close(e.done)
			select {
			case c.sem <- struct{}{}:
			case <-c.ctx.Done():
				e.err = c.ctx.Err()
				return
			}
			defer func() { <-c.sem }()
			e.fresh, e.err = compress(c.ctx, e, c.dir)
		}()
	})
}

func (c *compressor) wait() { c.wg.Wait() }

func compress(ctx context.Context, e *saveEntry, dir string) (*freshLayer, error) {
	src, err := e.reader()
	if err != nil {
		return nil, err
	}
	defer src.Close()
	l, err := gzipFile(dir, func(w io.Writer) error {
		_, err := io.Copy(w, ctxio.Reader(ctx, src))
		return err
	})
	if err != nil {
		return nil, err
	}
	l.diffID, l.rawSize = e.hash, e.size
	return l, nil
}

// gzipFile compresses what fill writes into a new file in dir, hashing the
// compressed bytes as they go: a freshLayer with path, digest and size set.
// The file is removed when fill or the write fails.
func gzipFile(dir string, fill func(io.Writer) error) (*freshLayer, error) {
	f, err := os.CreateTemp(dir, "layer-*.tar.gz")
	if err != nil {
		return nil, err
	}
	hs := sha256.New()
	bw := bufio.NewWriterSize(f, 1<<20)
	cw := &countingWriter{w: io.MultiWriter(hs, bw)}
	zw, err := gzip.NewWriterLevel(cw, gzipLevel)
	if err == nil {
		err = fill(zw)
	}
	if err == nil {
		err = zw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, err
	}
	return &freshLayer{digest: sum(hs), size: cw.n, path: f.Name()}, nil
}

func sum(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
