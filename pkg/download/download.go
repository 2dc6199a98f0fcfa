// Package download fetches every layer blob of an image once, in parallel,
// into a local directory, and returns an image backed by those files.
//
// The image handed in is usually lazy (remote.Image): reading its layers more
// than once would hit the registry again. After Image returns, every later
// consumer (docker-save tarball, rootfs extraction, rootfs.tar) reads local
// files instead.
package download

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/ctxio"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/concourse-docker/docker-image-resource/pkg/retry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sirupsen/logrus"
)

// Defaults for Options fields left at zero.
const (
	DefaultConcurrency      = 3
	DefaultProgressInterval = 5 * time.Second
)

// BlobRetry is the policy of one blob's download (Options.Retry fills the
// fields it leaves at zero from it): a blob whose body broke off or came
// corrupt is fetched again on its own, 1 s later, then 2 s, then 4 s. The
// requests under it have the registry transport's own retries.
var BlobRetry = retry.Policy{Attempts: 4, Initial: time.Second}

// Options controls a download.
type Options struct {
	// Dir receives one file per blob, named by BlobPath. Created if missing.
	// Keep it until the returned image is no longer used.
	Dir string
	// Concurrency bounds parallel blob downloads (source max_concurrent_downloads).
	// remote.Image allows 4 parallel blob fetches unless given remote.WithJobs.
	Concurrency int
	// Retry is the policy of each blob; fields left at zero are BlobRetry's.
	Retry retry.Policy
	// ProgressInterval between progress lines for layers still downloading;
	// negative disables them.
	ProgressInterval time.Duration
	// Log receives progress for a person; nil discards it.
	Log *logrus.Entry
}

// Stats summarises a download.
type Stats struct {
	// Bytes is the compressed size of the blobs fetched in this run (blobs
	// already present in Dir are not counted).
	Bytes int64
	// Layers is the number of distinct layer blobs the image has.
	Layers int
	// Reused is how many of them were already in Dir and verified.
	Reused int
	// Duration of the whole call.
	Duration time.Duration
}

// BlobPath is the file holding blob h inside dir. The ':' of the digest is
// replaced because tar and scp read it as a host separator.
func BlobPath(dir string, h v1.Hash) string {
	return filepath.Join(dir, h.Algorithm+"-"+h.Hex)
}

// Image downloads every distinct layer blob of img into o.Dir (each exactly
// once on success, failed blobs retried on their own) and returns an image
// with the same manifest, config and media types whose layers read the local
// files. Memory stays flat: blobs are streamed to disk.
func Image(ctx context.Context, img v1.Image, o Options) (v1.Image, Stats, error) {
	start := time.Now()
	var st Stats
	o = o.withDefaults()
	if o.Dir == "" {
		return nil, st, errors.New("download: no directory given")
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, st, fmt.Errorf("create download directory: %w", err)
	}

	rawManifest, err := img.RawManifest()
	if err != nil {
		return nil, st, fmt.Errorf("read manifest: %w", err)
	}
	mediaType, err := img.MediaType()
	if err != nil {
		return nil, st, fmt.Errorf("read manifest media type: %w", err)
	}
	// The parsed manifest and config are kept for the image's whole life:
	// parsed once, from the bytes (no copy), without what nothing reads.
	manifest, err := img.Manifest()
	if err != nil {
		return nil, st, fmt.Errorf("parse manifest: %w", err)
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return nil, st, fmt.Errorf("read config %s: %w", logging.ShortDigest(manifest.Config.Digest.String()), err)
	}
	if err := checkBlob(manifest.Config.Digest, manifest.Config.Size, rawConfig); err != nil {
		return nil, st, fmt.Errorf("config: %w", err)
	}
	cfg := new(v1.ConfigFile)
	if err := json.Unmarshal(rawConfig, cfg); err != nil {
		return nil, st, fmt.Errorf("parse config: %w", err)
	}
	// History can be most of a config and nothing reads it parsed: the
	// image tarball carries the raw bytes.
	cfg.History = nil

	// A blob may appear more than once in a manifest; fetch it once.
	var todo []v1.Descriptor
	seen := map[v1.Hash]bool{}
	for _, d := range manifest.Layers {
		if seen[d.Digest] {
			continue
		}
		seen[d.Digest] = true
		todo = append(todo, d)
	}
	st.Layers = len(todo)

	d := &downloader{o: o, img: img, inflight: map[v1.Hash]*progress{}}
	fetched, reused, err := d.run(ctx, todo)
	st.Bytes = fetched
	st.Reused = reused
	st.Duration = time.Since(start)
	if err != nil {
		return nil, st, err
	}
	o.Log.Infof("downloaded %d layers (%s) in %s%s", st.Layers-st.Reused, humanSize(st.Bytes),
		roundDuration(st.Duration), rate(st.Bytes, st.Duration))

	local, err := newLocalImage(o.Dir, rawManifest, mediaType, manifest, rawConfig, cfg)
	if err != nil {
		return nil, st, err
	}
	return local, st, nil
}

func (o Options) withDefaults() Options {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	o.Retry = o.Retry.WithDefaults(BlobRetry)
	if o.ProgressInterval == 0 {
		o.ProgressInterval = DefaultProgressInterval
	}
	o.Log = logging.OrDiscard(o.Log)
	return o
}

type downloader struct {
	o   Options
	img v1.Image

	mu       sync.Mutex
	inflight map[v1.Hash]*progress
}

type progress struct {
	size    int64
	done    atomic.Int64
	started time.Time
}

// run downloads todo with at most o.Concurrency blobs at a time and returns
// the bytes fetched and the number of blobs already present.
func (d *downloader) run(ctx context.Context, todo []v1.Descriptor) (int64, int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	stopProgress := d.startProgress(ctx)
	defer stopProgress()

	var (
		wg       sync.WaitGroup
		sem      = make(chan struct{}, d.o.Concurrency)
		mu       sync.Mutex
		firstErr error
		fetched  int64
		reused   int
	)
	for _, desc := range todo {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			n, wasThere, err := d.blob(ctx, desc)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
					cancel() // no point fetching the rest
				}
				return
			}
			fetched += n
			if wasThere {
				reused++
			}
		}()
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = fmt.Errorf("download layers: %w", context.Cause(ctx))
	}
	return fetched, reused, firstErr
}

// blob makes sure desc is in the directory, retrying failed attempts.
func (d *downloader) blob(ctx context.Context, desc v1.Descriptor) (n int64, reused bool, err error) {
	short := logging.ShortDigest(desc.Digest.String())
	dst := BlobPath(d.o.Dir, desc.Digest)
	if ok, err := verifyExisting(dst, desc); err != nil {
		return 0, false, fmt.Errorf("layer %s: %w", desc.Digest, err)
	} else if ok {
		d.o.Log.Infof("layer %s (%s) already downloaded", short, humanSize(desc.Size))
		return 0, true, nil
	}

	layer, err := d.img.LayerByDigest(desc.Digest)
	if err != nil {
		return 0, false, fmt.Errorf("layer %s: %w", desc.Digest, err)
	}

	start := time.Now()
	d.o.Log.Infof("downloading layer %s (%s)", short, humanSize(desc.Size))
	if err := d.fetch(ctx, layer, desc, dst); err != nil {
		return 0, false, err
	}
	el := time.Since(start)
	d.o.Log.Infof("downloaded layer %s (%s) in %s%s", short, humanSize(desc.Size), roundDuration(el), rate(desc.Size, el))
	return desc.Size, false, nil
}

// fetch gets the blob into dst, trying again as d.o.Retry says after
// failures that are not permanent (see retry.Permanent): a blob whose
// request the registry transport already retried to its bound is not
// fetched again, nor one the local disk has no room for.
func (d *downloader) fetch(ctx context.Context, layer v1.Layer, desc v1.Descriptor, dst string) error {
	tries := d.o.Retry.Start()
	for {
		err := d.fetchOnce(ctx, layer, desc, dst)
		if err == nil {
			return nil
		}
		lerr := &LayerError{Digest: desc.Digest, Attempt: tries.Attempt(), Attempts: d.o.Retry.Attempts, Err: err}
		if ctx.Err() != nil || retry.Permanent(err) {
			return lerr
		}
		wait, stop := tries.Next(retry.After{})
		if stop != "" {
			return lerr
		}
		d.o.Log.Warnf("layer %s: attempt %d of %d failed, retrying in %s: %v", logging.ShortDigest(desc.Digest.String()), lerr.Attempt, lerr.Attempts, wait, err)
		if retry.Sleep(ctx, wait) != nil {
			return fmt.Errorf("download layer %s: %w", desc.Digest, context.Cause(ctx))
		}
	}
}

// fetchOnce streams the blob into a temporary file, checking size and digest
// on the way, and renames it into place only when both match.
func (d *downloader) fetchOnce(ctx context.Context, layer v1.Layer, desc v1.Descriptor, dst string) (err error) {
	h, err := newHasher(desc.Digest)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(d.o.Dir, "."+filepath.Base(dst)+".*.tmp")
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	p := &progress{size: desc.Size, started: time.Now()}
	d.mu.Lock()
	d.inflight[desc.Digest] = p
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.inflight, desc.Digest)
		d.mu.Unlock()
	}()

	rc, err := openCompressed(ctx, layer)
	if err != nil {
		return fmt.Errorf("open blob: %w", err)
	}
	var once sync.Once
	closeRC := func() { once.Do(func() { rc.Close() }) }
	defer closeRC()
	// Closing the body is the only way to interrupt a blocked read.
	stop := context.AfterFunc(ctx, closeRC)
	defer stop()

	// Read one byte past the expected size so an oversized blob is noticed
	// without writing an unbounded amount.
	src := io.LimitReader(ctxio.Reader(ctx, rc), desc.Size+1)
	buf := make([]byte, 256<<10)
	n, err := io.CopyBuffer(io.MultiWriter(tmp, h, counter{&p.done}), src, buf)
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) && pe.Op == "write" {
			return fmt.Errorf("store blob after %d bytes: %w", n, err)
		}
		return fmt.Errorf("read blob after %d bytes: %w", n, err)
	}
	if n != desc.Size {
		return &mismatchError{fmt.Sprintf("size mismatch: got %d bytes, manifest says %d", n, desc.Size)}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != desc.Digest.Hex {
		return &mismatchError{fmt.Sprintf("digest mismatch: got %s:%s", desc.Digest.Algorithm, got)}
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("rename blob into place: %w", err)
	}
	return nil
}

// openCompressed calls layer.Compressed but gives up when ctx ends: a
// remote layer uses the context given to remote.Image, not ours, so the
// request itself may go on; its body is closed once it arrives.
func openCompressed(ctx context.Context, layer v1.Layer) (io.ReadCloser, error) {
	type result struct {
		rc  io.ReadCloser
		err error
	}
	ch := make(chan result, 1)
	go func() {
		rc, err := layer.Compressed()
		ch <- result{rc, err}
	}()
	select {
	case r := <-ch:
		return r.rc, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.err == nil {
				r.rc.Close()
			}
		}()
		return nil, context.Cause(ctx)
	}
}

// startProgress logs, every ProgressInterval, how far each blob that has
// been downloading for at least that long has got.
func (d *downloader) startProgress(ctx context.Context) func() {
	if d.o.ProgressInterval < 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(d.o.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			type line struct {
				h v1.Hash
				p *progress
			}
			var lines []line
			d.mu.Lock()
			for h, p := range d.inflight {
				if time.Since(p.started) >= d.o.ProgressInterval {
					lines = append(lines, line{h, p})
				}
			}
			d.mu.Unlock()
			sort.Slice(lines, func(i, j int) bool { return lines[i].h.Hex < lines[j].h.Hex })
			for _, l := range lines {
				done := l.p.done.Load()
				pct := 0.0
				if l.p.size > 0 {
					pct = 100 * float64(done) / float64(l.p.size)
				}
				d.o.Log.Infof("layer %s: %s of %s (%.0f%%)", logging.ShortDigest(l.h.String()), humanSize(done), humanSize(l.p.size), pct)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// verifyExisting reports whether dst already holds the complete blob (from
// an earlier run into the same directory).
func verifyExisting(dst string, desc v1.Descriptor) (bool, error) {
	fi, err := os.Lstat(dst)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("check existing blob: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Size() != desc.Size {
		return false, os.Remove(dst)
	}
	h, err := newHasher(desc.Digest)
	if err != nil {
		return false, err
	}
	f, err := os.Open(dst)
	if err != nil {
		return false, fmt.Errorf("check existing blob: %w", err)
	}
	defer f.Close()
	if _, err := io.Copy(h, f); err != nil {
		return false, fmt.Errorf("check existing blob: %w", err)
	}
	if hex.EncodeToString(h.Sum(nil)) != desc.Digest.Hex {
		return false, os.Remove(dst)
	}
	return true, nil
}

func checkBlob(want v1.Hash, size int64, b []byte) error {
	h, err := newHasher(want)
	if err != nil {
		return err
	}
	h.Write(b)
	if got := hex.EncodeToString(h.Sum(nil)); got != want.Hex {
		return fmt.Errorf("digest mismatch: want %s, got %s:%s", want, want.Algorithm, got)
	}
	if size != int64(len(b)) {
		return fmt.Errorf("size mismatch: want %d, got %d", size, len(b))
	}
	return nil
}

func newHasher(h v1.Hash) (hash.Hash, error) {
	if h.Algorithm != "sha256" {
		return nil, fmt.Errorf("unsupported digest algorithm %q", h.Algorithm)
	}
	return sha256.New(), nil
}

// LayerError is a layer blob that could not be downloaded.
type LayerError struct {
	Digest            v1.Hash
	Attempt, Attempts int
	Err               error
}

func (e *LayerError) Error() string {
	return fmt.Sprintf("download layer %s (attempt %d of %d): %v", e.Digest, e.Attempt, e.Attempts, e.Err)
}

func (e *LayerError) Unwrap() error { return e.Err }

type mismatchError struct{ msg string }

func (e *mismatchError) Error() string { return e.msg }

type counter struct{ n *atomic.Int64 }

func (c counter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return len(p), nil
}

func humanSize(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

func roundDuration(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}

func rate(n int64, d time.Duration) string {
	if d <= 0 || n <= 0 {
		return ""
	}
	return fmt.Sprintf(" (%s/s)", humanSize(int64(float64(n)/d.Seconds())))
}
