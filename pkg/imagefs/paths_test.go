package imagefs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"golang.org/x/sys/unix"
)

// chain is a directory "target" and n symlinks l1 -> target, l2 -> l1, ...
func chain(n int) []ent {
	ents := []ent{dir("target/", 0o755), symlink("l1", "target")}
	for i := 2; i <= n; i++ {
		ents = append(ents, symlink(fmt.Sprintf("l%d", i), fmt.Sprintf("l%d", i-1)))
	}
	return ents
}

// throughChain adds m files, each in its own new directory, reached
// through the end of an n-link chain: every one a path the resolver has
// not seen.
func throughChain(n, m int) []ent {
	ents := chain(n)
	for i := range m {
		ents = append(ents, file(fmt.Sprintf("l%d/d%d/f", n, i), "x", 0o644))
	}
	return ents
}

// TestExtractSymlinkLimit: a path may pass 40 symlinks, as Linux allows
// (MAXSYMLINKS), not 41; nested links count too.
func TestExtractSymlinkLimit(t *testing.T) {
	t.Run("40 links", func(t *testing.T) {
		root := extract(t, imageOfEntries(t, throughChain(40, 3)))
		for i := range 3 {
			if got := readString(t, filepath.Join(root, "target", fmt.Sprintf("d%d", i), "f")); got != "x" {
				t.Errorf("target/d%d/f = %q", i, got)
			}
		}
		if fi := lstat(t, filepath.Join(root, "l40")); fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("l40 is %s, want a symlink", fi.Mode())
		}
	})
	for _, c := range []struct {
		name string
		ents []ent
	}{
		{"41 links", throughChain(41, 1)},
		// 20 links to a folder holding a link that needs 21 more.
		{"40 links and one nested", append(chain(40), symlink("target/up", "/l20"), file("l20/up/f", "x", 0o644))},
	} {
		t.Run(c.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "rootfs")
			err := ExtractRootfs(context.Background(), imageOfEntries(t, c.ents), dest, ExtractOptions{})
			t.Logf("error: %v", err)
			if !errors.Is(err, unix.ELOOP) {
				t.Fatalf("want ELOOP, got %v", err)
			}
			mustNotExist(t, dest)
		})
	}
}

// TestExtractSymlinkCacheFollowsChanges: a remembered symlink resolution
// is dropped when the tree changes under it.
func TestExtractSymlinkCacheFollowsChanges(t *testing.T) {
	root := extract(t, imageOfEntries(t,
		[]ent{dir("a/", 0o755), dir("b/", 0o755), symlink("l", "a"), file("l/one", "1", 0o644)},
		// The next layer points l elsewhere: the next file goes to b.
		[]ent{symlink("l", "b"), file("l/two", "2", 0o644)},
		[]ent{whiteout(".wh.b"), file("l/three", "3", 0o644)},
	))
	if got := readString(t, filepath.Join(root, "a", "one")); got != "1" {
		t.Errorf("a/one = %q", got)
	}
	mustNotExist(t, filepath.Join(root, "a", "two"))
	// b was whited out, then created again by following l.
	mustNotExist(t, filepath.Join(root, "b", "two"))
	if got := readString(t, filepath.Join(root, "b", "three")); got != "3" {
		t.Errorf("b/three = %q", got)
	}
}

// BenchmarkExtractSymlinkChain measures the CPU per entry reached through
// the end of a symlink chain, each entry under a directory it reaches for
// the first time, which used to walk the whole chain again. The links sit
// 32 folders deep, so each lookup of one walks 32 folders (os.Root walks a
// path a component at a time), and the entries are whiteouts of names that
// do not exist, so the walk is all they cost.
//
//	go test -run '^$' -bench BenchmarkExtractSymlinkChain -benchtime 1x ./pkg/imagefs/
func BenchmarkExtractSymlinkChain(b *testing.B) {
	deep := strings.Repeat("p/", 32)
	for _, n := range []int{40, 255} {
		b.Run(fmt.Sprintf("%d links", n), func(b *testing.B) {
			if n > maxSymlinks {
				b.Skipf("refused: more than %d links", maxSymlinks)
			}
			const m = 500
			lower := []ent{dir("target/", 0o755), symlink(deep+"l1", "/target")}
			for i := 2; i <= n; i++ {
				lower = append(lower, symlink(fmt.Sprintf("%sl%d", deep, i), fmt.Sprintf("l%d", i-1)))
			}
			var upper []ent
			for i := range m {
				lower = append(lower, dir(fmt.Sprintf("target/d%d/", i), 0o755))
				upper = append(upper, whiteout(fmt.Sprintf("%sl%d/d%d/.wh.none", deep, n, i)))
			}
			img := imageOfEntries(b, lower, upper)
			for range b.N {
				dest := filepath.Join(b.TempDir(), "rootfs")
				x, err := newExtractor(b.TempDir(), b.TempDir(), false, logging.Discard())
				if err != nil {
					b.Fatal(err)
				}
				layers, _ := img.Layers()
				if _, err := x.applyLayer(context.Background(), layers[0]); err != nil {
					b.Fatal(err)
				}
				x.res.forget()
				var before, after unix.Rusage
				unix.Getrusage(unix.RUSAGE_SELF, &before)
				start := time.Now()
				if _, err := x.applyLayer(context.Background(), layers[1]); err != nil {
					b.Fatal(err)
				}
				wall := time.Since(start)
				unix.Getrusage(unix.RUSAGE_SELF, &after)
				x.close()
				cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
				b.ReportMetric(float64(cpu.Microseconds())/m, "µs-CPU/entry")
				b.ReportMetric(float64(wall.Microseconds())/m, "µs-wall/entry")
				os.RemoveAll(dest)
			}
		})
	}
}
