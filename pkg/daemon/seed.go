package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Seed fills a fresh data root before dockerd first starts on it (see
// pkg/layerstore): dockerd then finds what was written as its own. It runs
// only when the data root is empty and on a filesystem where dockerd would
// pick Driver itself; dockerd is then started with --storage-driver Driver.
// Should Write fail, or dockerd refuse the driver, the data root is emptied
// and dockerd started as without a seed: Seeded says which happened.
type Seed struct {
	// Driver is the storage driver Write writes for ("overlay2").
	Driver string
	// Write fills dataRoot, which is empty. It runs while containerd starts.
	Write func(ctx context.Context, dataRoot string) error
}

// Seeded reports whether the seed is in dockerd's data root.
func (d *Daemon) Seeded() bool { return d.seeded }

// SeedTook is how long the seed's Write took (zero without one): a caller
// counts it as its own phase, not the daemon's start.
func (d *Daemon) SeedTook() time.Duration { return d.seedTook }

// seedable says why a seed cannot go into the data root, "" when it can:
// only a fresh data root is written to (nothing of dockerd's is touched),
// and only on a filesystem where dockerd's default driver is overlay2, so
// the seed never changes the driver dockerd would have used.
func seedable(root, driver string) string {
	if driver != "overlay2" {
		return fmt.Sprintf("only overlay2 is written, not %s", driver)
	}
	f, err := os.Open(root)
	if err != nil {
		return err.Error()
	}
	names, err := f.Readdirnames(1)
	f.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return err.Error()
	}
	if len(names) > 0 {
		return fmt.Sprintf("the data root %s is not fresh (it holds %s)", root, names[0])
	}
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return fmt.Sprintf("statfs %s: %v", root, err)
	}
	switch st.Type {
	case unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC, unix.TMPFS_MAGIC:
		return ""
	}
	return fmt.Sprintf("the data root %s is on a filesystem (magic %#x) where dockerd may not use overlay2", root, st.Type)
}

// startSeed starts the seed's Write when the data root takes it; the
// returned wait gives whether it succeeded. Without a seed, wait is false.
func (d *Daemon) startSeed(ctx context.Context) (wait func() bool) {
	s := d.opts.Seed
	if s == nil {
		return func() bool { return false }
	}
	if why := seedable(d.data.path, s.Driver); why != "" {
		d.log.Debugf("not writing into dockerd's data root before it starts: %s", why)
		return func() bool { return false }
	}
	done := make(chan error, 1)
	t0 := time.Now()
	go func() { done <- s.Write(ctx, d.data.path) }()
	var once sync.Once
	var ok bool
	return func() bool {
		once.Do(func() {
			err := <-done
			d.seedTook = time.Since(t0)
			if err != nil {
				d.log.Infof("load: could not write into dockerd's data root (%v); loading the usual way", err)
				d.clearDataRoot()
				return
			}
			ok = true
		})
		return ok
	}
}

// clearDataRoot empties the data root of a seed dockerd did not take.
func (d *Daemon) clearDataRoot() {
	ents, err := os.ReadDir(d.data.path)
	if err != nil {
		d.log.Warnf("emptying data root %s: %v", d.data.path, err)
		return
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(d.data.path, e.Name())); err != nil {
			d.log.Warnf("emptying data root %s: %v", d.data.path, err)
		}
	}
}
