package layerstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/docker/client"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/gzip"
	"golang.org/x/sys/unix"
)

// dockerLoad loads img with docker load into a dockerd on a fresh data
// root and stops it; the data root is dockerd's ground truth.
func dockerLoad(t *testing.T, img v1.Image) string {
	t.Helper()
	root := dataRoot(t, "loaded")
	d := startDaemon(t, root, nil)
	loadTarball(t, d.Client(), img, "layerstore-test/rich:1")
	stopDaemon(t, d)
	return root
}

func loadTarball(t *testing.T, cli *client.Client, img v1.Image, tag string) {
	t.Helper()
	ref, err := name.NewTag(tag)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tarball.Write(ref, img, &buf); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.ImageLoad(context.Background(), &buf, client.ImageLoadWithQuiet(true))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := testenv.ReadJSONStream(resp.Body); err != nil {
		t.Fatal(err)
	}
}

// TestMatchesDockerLoad compares what Write writes with what docker load
// leaves in a data root, file by file: the layerdb entries, the overlay2
// folders (link, lower, work, committed, the l/ links) and every file of
// every diff folder (type, mode, owner, size, device, link target,
// content, extended attributes, mtime), and the image config.
func TestMatchesDockerLoad(t *testing.T) {
	requireDockerd(t)
	img := rich(t)
	want := dockerLoad(t, img)
	got := dataRoot(t, "seeded")
	if err := writeStore(t, got, imageOf(t, "rich", img)); err != nil {
		t.Fatal(err)
	}
	a, b := readStore(t, want), readStore(t, got)
	if len(a.layers) != 3 || len(b.layers) != len(a.layers) {
		t.Fatalf("docker load wrote %d layers, Write %d (want 3 each)", len(a.layers), len(b.layers))
	}
	links := map[string]string{} // docker load's link name -> Write's
	for chain, la := range a.layers {
		lb, ok := b.layers[chain]
		if !ok {
			t.Errorf("layer %s: not written", chain)
			continue
		}
		links[la.link] = lb.link
	}
	for chain, la := range a.layers {
		lb := b.layers[chain]
		if lb == nil {
			continue
		}
		for _, f := range []string{"diff", "size", "parent"} {
			if la.meta[f] != lb.meta[f] {
				t.Errorf("layer %s: layerdb %s is %q, docker load wrote %q", chain, f, lb.meta[f], la.meta[f])
			}
		}
		compareStrings(t, "layer "+chain+": layerdb files", la.metaModes, lb.metaModes)
		if la.tarSplit != lb.tarSplit {
			i := 0
			for i < len(la.tarSplit) && i < len(lb.tarSplit) && la.tarSplit[i] == lb.tarSplit[i] {
				i++
			}
			lo := max(i-200, 0)
			t.Errorf("layer %s: tar-split differs from docker load's at byte %d:\n got %.400s\nwant %.400s", chain, i, lb.tarSplit[lo:], la.tarSplit[lo:])
		}
		compareStrings(t, "layer "+chain+": overlay2 folder", la.dirModes, lb.dirModes)
		if len(lb.link) != 26 {
			t.Errorf("layer %s: link %q is not 26 characters", chain, lb.link)
		}
		var mapped []string
		for _, l := range strings.Split(la.lower, ":") {
			if l != "" {
				mapped = append(mapped, "l/"+links[strings.TrimPrefix(l, "l/")])
			}
		}
		if strings.Join(mapped, ":") != lb.lower {
			t.Errorf("layer %s: lower is %q, want %q (docker load's %q)", chain, lb.lower, strings.Join(mapped, ":"), la.lower)
		}
		compareStrings(t, "layer "+chain+": diff folder", la.files, lb.files)
	}
	compareStrings(t, "image configs", a.configs, b.configs)
	compareStrings(t, "top folders", a.tops, b.tops)
	for l, target := range b.symlinks {
		if want := "../" + b.cacheOf[l] + "/diff"; target != want {
			t.Errorf("overlay2/l/%s -> %s, want %s", l, target, want)
		}
	}
	if len(b.symlinks) != len(b.layers) {
		t.Errorf("overlay2/l holds %d links for %d layers", len(b.symlinks), len(b.layers))
	}
	t.Logf("docker load also wrote (dockerd makes these at start): %s", strings.Join(a.extra, ", "))
}

// store is what readStore found in a data root.
type store struct {
	layers   map[string]*storeLayer // by chain ID
	configs  []string
	tops     []string          // the store's own folders and their modes
	symlinks map[string]string // overlay2/l
	cacheOf  map[string]string // link -> cache ID
	extra    []string
}

type storeLayer struct {
	meta      map[string]string
	metaModes []string
	tarSplit  string
	link      string
	lower     string
	dirModes  []string // the overlay2 folder's entries (not diff/'s)
	files     []string // diff/, one line per entry
}

func readStore(t *testing.T, root string) *store {
	t.Helper()
	s := &store{layers: map[string]*storeLayer{}, symlinks: map[string]string{}, cacheOf: map[string]string{}}
	meta := filepath.Join(root, "image", "overlay2")
	chains, err := os.ReadDir(filepath.Join(meta, "layerdb", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range chains {
		dir := filepath.Join(meta, "layerdb", "sha256", c.Name())
		l := &storeLayer{meta: map[string]string{}}
		l.metaModes = append(l.metaModes, ". "+modeOf(t, dir))
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			l.metaModes = append(l.metaModes, e.Name()+" "+modeOf(t, p))
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if e.Name() == "tar-split.json.gz" {
				l.tarSplit = trimEmptySegments(gunzip(t, b))
				continue
			}
			l.meta[e.Name()] = string(b)
		}
		cache := l.meta["cache-id"]
		od := filepath.Join(root, "overlay2", cache)
		link, _ := os.ReadFile(filepath.Join(od, "link"))
		lower, _ := os.ReadFile(filepath.Join(od, "lower"))
		l.link, l.lower = string(link), string(lower)
		s.cacheOf[l.link] = cache
		oents, _ := os.ReadDir(od)
		for _, e := range oents {
			l.dirModes = append(l.dirModes, e.Name()+" "+modeOf(t, filepath.Join(od, e.Name())))
		}
		l.files = walkDiff(t, filepath.Join(od, "diff"))
		s.layers["sha256:"+c.Name()] = l
	}
	cfgDir := filepath.Join(meta, "imagedb", "content", "sha256")
	cfgs, _ := os.ReadDir(cfgDir)
	for _, c := range cfgs {
		b, _ := os.ReadFile(filepath.Join(cfgDir, c.Name()))
		s.configs = append(s.configs, fmt.Sprintf("%s %s %x", c.Name(), modeOf(t, filepath.Join(cfgDir, c.Name())), sha256.Sum256(b)))
	}
	for _, d := range []string{"overlay2", "overlay2/l", "image", "image/overlay2", "image/overlay2/layerdb", "image/overlay2/layerdb/sha256",
		"image/overlay2/imagedb", "image/overlay2/imagedb/content", "image/overlay2/imagedb/content/sha256"} {
		s.tops = append(s.tops, d+" "+modeOf(t, filepath.Join(root, d)))
	}
	ls, _ := os.ReadDir(filepath.Join(root, "overlay2", "l"))
	for _, e := range ls {
		target, _ := os.Readlink(filepath.Join(root, "overlay2", "l", e.Name()))
		s.symlinks[e.Name()] = target
	}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(root, p)
		if err != nil || strings.HasPrefix(rel, "overlay2/") || strings.HasPrefix(rel, "image/overlay2/layerdb/sha256") || strings.HasPrefix(rel, "image/overlay2/imagedb/content") {
			return nil
		}
		s.extra = append(s.extra, rel+" "+modeOf(t, p))
		return nil
	})
	return s
}

func modeOf(t *testing.T, p string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%o %d:%d", st.Mode, st.Uid, st.Gid)
}

// implicitDirs are the folders of rich's layers that no tar entry names
// (parents of implicit/parent/file).
var implicitDirs = map[string]bool{"implicit": true, "implicit/parent": true}

// walkDiff describes every entry of a diff folder, sorted by path.
func walkDiff(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		line := fmt.Sprintf("%s mode=%o owner=%d:%d nlink=%d rdev=%d", rel, st.Mode, st.Uid, st.Gid, st.Nlink, st.Rdev)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(b)
			line += fmt.Sprintf(" size=%d sha=%s mtime=%d.%09d", st.Size, hex.EncodeToString(s[:8]), st.Mtim.Sec, st.Mtim.Nsec)
		case unix.S_IFLNK:
			target, _ := os.Readlink(p)
			line += fmt.Sprintf(" -> %s mtime=%d.%09d", target, st.Mtim.Sec, st.Mtim.Nsec)
		case unix.S_IFDIR:
			// A parent the tar does not name is made when it is
			// written: its mtime is the clock's, which differs between
			// docker load and Write once a second passes between them.
			if rel != "." && !implicitDirs[rel] {
				line += fmt.Sprintf(" mtime=%d", st.Mtim.Sec)
			}
		}
		line += " xattrs=" + xattrs(p)
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func xattrs(p string) string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return ""
	}
	names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
	sort.Strings(names)
	var kv []string
	for _, k := range names {
		v := make([]byte, 256)
		m, err := unix.Lgetxattr(p, k, v)
		if err != nil && err != syscall.ENODATA {
			kv = append(kv, k+"=?")
			continue
		}
		kv = append(kv, k+"="+string(v[:max(m, 0)]))
	}
	return strings.Join(kv, ",")
}

func gunzip(t *testing.T, b []byte) string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// compareStrings reports the lines one side has and the other lacks.
func compareStrings(t *testing.T, what string, want, got []string) {
	t.Helper()
	w := map[string]bool{}
	for _, s := range want {
		w[s] = true
	}
	g := map[string]bool{}
	for _, s := range got {
		g[s] = true
	}
	for _, s := range want {
		if !g[s] {
			t.Errorf("%s: docker load has %q, Write does not", what, s)
		}
	}
	for _, s := range got {
		if !w[s] {
			t.Errorf("%s: Write has %q, docker load does not", what, s)
		}
	}
}

// trimEmptySegments drops the empty segment tar-split before 0.12 adds at
// the end of every stream (dockerd 20.10's): it stands for no bytes.
func trimEmptySegments(ts string) string {
	lines := strings.Split(strings.TrimSuffix(ts, "\n"), "\n")
	for len(lines) > 0 && strings.HasPrefix(lines[len(lines)-1], `{"type":2,"payload":"",`) {
		lines = lines[:len(lines)-1]
	}
	return strings.Join(lines, "\n")
}
