package imagefs

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// tinySpill makes the sorters and name sets spill after a few records, so
// small tests go through their disk paths.
func tinySpill(t *testing.T) {
	t.Helper()
	old := [4]int{sortMem, maxRuns, setMem, setRuns}
	sortMem, maxRuns, setMem, setRuns = 256, 3, 8, 2
	t.Cleanup(func() { sortMem, maxRuns, setMem, setRuns = old[0], old[1], old[2], old[3] })
}

func TestSorterSpills(t *testing.T) {
	tinySpill(t)
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	var want [][]byte
	s := newSorter(dir, func(a, b []byte) bool { return a[0] < b[0] })
	for i := range 5000 {
		// Many equal keys: the order they were added in must hold.
		rec := []byte(fmt.Sprintf("%c%06d%s", 'a'+rng.IntN(20), i, strings.Repeat("x", rng.IntN(40))))
		want = append(want, rec)
		if err := s.Add(rec); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.runs) == 0 {
		t.Fatal("nothing spilled")
	}
	slices.SortStableFunc(want, func(a, b []byte) int { return int(a[0]) - int(b[0]) })
	var got [][]byte
	if err := s.Each(func(r []byte) error { got = append(got, bytes.Clone(r)); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d records back, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("record %d: %q, want %q", i, got[i], want[i])
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("temporary files left: %v", ents)
	}
}

func TestNameSetSpills(t *testing.T) {
	tinySpill(t)
	dir := t.TempDir()
	s := newNameSet(dir)
	defer s.Close()
	for i := range 3000 {
		if err := s.Add(fmt.Sprintf("dir/name-%d", i)); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 { // repeats
			s.Add(fmt.Sprintf("dir/name-%d", i/2))
		}
	}
	if len(s.runs) == 0 || len(s.runs) > setRuns+1 {
		t.Fatalf("%d runs", len(s.runs))
	}
	for i := range 3000 {
		if ok, err := s.Has(fmt.Sprintf("dir/name-%d", i)); err != nil || !ok {
			t.Fatalf("name-%d: %v %v", i, ok, err)
		}
		if ok, err := s.Has(fmt.Sprintf("dir/other-%d", i)); err != nil || ok {
			t.Fatalf("other-%d: %v %v", i, ok, err)
		}
	}
	s.Reset()
	if ok, _ := s.Has("dir/name-1"); ok {
		t.Error("a reset set still has a name")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("temporary files left: %v", ents)
	}
}

// TestExtractSpilling: with every structure spilling to disk after a few
// entries, extraction gives the same tree, modes and times as in memory.
func TestExtractSpilling(t *testing.T) {
	var lower, upper []ent
	for i := range 40 {
		lower = append(lower, dir(fmt.Sprintf("d%d/", i), 0o700+int64(i%8)), file(fmt.Sprintf("d%d/f", i), "x", 0o644))
	}
	lower = append(lower, dir("o/", 0o755), file("o/old1", "1", 0o644), file("o/old2", "2", 0o644), dir("o/sub/", 0o755))
	for i := range 40 {
		switch i % 4 {
		case 0:
			upper = append(upper, whiteout(fmt.Sprintf(".wh.d%d", i)))
		case 1:
			upper = append(upper, file(fmt.Sprintf("d%d/g", i), "y", 0o644), whiteout(fmt.Sprintf("d%d/.wh.g", i)))
		case 2:
			upper = append(upper, file(fmt.Sprintf("d%d", i), "now a file", 0o644))
		case 3:
			upper = append(upper, dir(fmt.Sprintf("d%d/", i), 0o711), whiteout(fmt.Sprintf("d%d/.wh..wh..opq", i)), file(fmt.Sprintf("d%d/new", i), "n", 0o644))
		}
	}
	upper = append(upper, dir("o/", 0o750), file("o/mine", "m", 0o644), whiteout("o/.wh..wh..opq"))
	img := imageOfEntries(t, lower, upper)
	snapshot := func(root string) []string {
		var out []string
		for _, l := range tree(t, root) {
			name := strings.Fields(l)[0]
			fi := lstat(t, filepath.Join(root, name))
			out = append(out, fmt.Sprintf("%s %v %v", name, fi.Mode(), fi.ModTime().UTC()))
		}
		return out
	}
	want := snapshot(extract(t, img))
	tinySpill(t)
	got := snapshot(extract(t, img))
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("spilling:\n%s\nin memory:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !slices.Contains(want, "o/mine -rw-r--r-- "+testTime.String()) || slices.ContainsFunc(want, func(s string) bool { return strings.HasPrefix(s, "o/old") }) {
		t.Errorf("the opaque folder: %v", want)
	}
}

// TestRootfsTarSpilling: with the sorters spilling after a few records,
// rootfs.tar holds the same entries in the same order.
func TestRootfsTarSpilling(t *testing.T) {
	var lower, upper []ent
	for i := range 30 {
		lower = append(lower, dir(fmt.Sprintf("d%d/", i), 0o755), file(fmt.Sprintf("d%d/f", i), fmt.Sprint(i), 0o644))
		upper = append(upper, hardlink(fmt.Sprintf("l%d", i), fmt.Sprintf("d%d/f", i)))
		if i%3 == 0 {
			upper = append(upper, whiteout(fmt.Sprintf(".wh.d%d", i)))
		}
	}
	img := imageOfEntries(t, lower, upper, []ent{dir("d1/", 0o700), file("d2/f", "replaced", 0o644)})
	render := func() string {
		var out []string
		for _, e := range writeRootfsTar(t, img) {
			out = append(out, fmt.Sprintf("%s %c %o %s %q", e.hdr.Name, e.hdr.Typeflag, e.hdr.Mode, e.hdr.Linkname, e.body))
		}
		return strings.Join(out, "\n")
	}
	want := render()
	tinySpill(t)
	if got := render(); got != want {
		t.Errorf("spilling:\n%s\nin memory:\n%s", got, want)
	}
	// l0's target was whited out, l2's replaced: copies of what they
	// linked to; l1's is still there.
	for _, w := range []string{"l0 0 644  \"0\"", "l2 0 644  \"2\"", "l1 1 644 d1/f", "d1/ 5 700", "d2/f 0 644  \"replaced\""} {
		if !strings.Contains(want, w) {
			t.Errorf("rootfs.tar lacks %q:\n%s", w, want)
		}
	}
	if strings.Contains(want, "d0/") {
		t.Errorf("rootfs.tar has the whited-out d0:\n%s", want)
	}
}
