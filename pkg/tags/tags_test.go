package tags

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/Masterminds/semver/v3"
)

func constraint(t *testing.T, c string) *semver.Constraints {
	t.Helper()
	cs, err := semver.NewConstraint(c)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func candidateTags(cs []Candidate) string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Tag)
	}
	return strings.Join(out, " ")
}

func TestCandidates(t *testing.T) {
	all := []string{"latest", "1.0.0", "1.2", "1.2.3", "v2.0.0", "2.1.0-rc.1", "2.1.0-beta1", "2.1.0-alpine",
		"2.1.0-rc.1-alpine", "2.1.0-preview", "1.2.3-alpine", "alpine", "feature-x", "3.0.0+build", "20231010"}
	for _, c := range []struct {
		name  string
		rules Semver
		want  string
		bare  bool
	}{
		{"finals only by default: a pre-release and a variant are both left out", Semver{},
			"1.0.0 1.2 1.2.3 v2.0.0 3.0.0+build 20231010", true},
		{"pre_releases: alpha, beta and rc count; alpine, preview and rc.1-alpine do not", Semver{PreReleases: true},
			"1.0.0 1.2 1.2.3 v2.0.0 2.1.0-rc.1 2.1.0-beta1 3.0.0+build 20231010", true},
		{"pre_release_prefixes add to the defaults and allow a dash", Semver{PreReleases: true, PreReleasePrefixes: []string{"preview"}},
			"1.0.0 1.2 1.2.3 v2.0.0 2.1.0-rc.1 2.1.0-beta1 2.1.0-rc.1-alpine 2.1.0-preview 3.0.0+build 20231010", true},
		{"constraint", Semver{Constraint: constraint(t, "~1.2")}, "1.2 1.2.3", true},
		{"constraint leaves pre-releases out without -0", Semver{Constraint: constraint(t, ">= 2"), PreReleases: true}, "v2.0.0 3.0.0+build 20231010", true},
		{"constraint with -0 admits pre-releases", Semver{Constraint: constraint(t, ">= 2.1.0-0, < 3"), PreReleases: true}, "2.1.0-rc.1 2.1.0-beta1", true},
		{"variant: only <semver>-<variant>, the variant is the bare tag", Semver{Variant: "alpine"}, "2.1.0-alpine 1.2.3-alpine", true},
		{"variant with pre-releases", Semver{Variant: "alpine", PreReleases: true}, "2.1.0-alpine 2.1.0-rc.1-alpine 1.2.3-alpine", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, bare := c.rules.Candidates(all)
			if candidateTags(got) != c.want || bare != c.bare {
				t.Errorf("candidates %q bare %v, want %q bare %v", candidateTags(got), bare, c.want, c.bare)
			}
		})
	}
	if _, bare := (&Semver{}).Candidates([]string{"1.0.0"}); bare {
		t.Error("bare tag found where there is none")
	}
}

func TestFrom(t *testing.T) {
	r := &Semver{}
	cands, _ := r.Candidates([]string{"1.0.0", "1.1.0", "1.1", "1.2.0", "0.9.0"})
	if got := candidateTags(From(cands, nil)); got != "1.0.0 1.1.0 1.1 1.2.0 0.9.0" {
		t.Errorf("no cursor: %q", got)
	}
	cursor := cands[1] // 1.1.0
	if got := candidateTags(From(cands, &cursor)); got != "1.1.0 1.2.0" {
		t.Errorf("cursor 1.1.0: %q (the cursor and newer; 1.1 is the same version under another tag)", got)
	}
}

func resolvedOf(t *testing.T, r *Semver, tagDigest ...string) []Resolved {
	t.Helper()
	var out []Resolved
	for i := 0; i < len(tagDigest); i += 2 {
		v, ok := r.Version(tagDigest[i])
		if !ok {
			t.Fatalf("%s is no tracked version", tagDigest[i])
		}
		out = append(out, Resolved{Candidate: Candidate{Tag: tagDigest[i], Version: v}, Digest: tagDigest[i+1]})
	}
	return out
}

func show(vs []Tagged) string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Tag+"@"+v.Digest)
	}
	return strings.Join(out, " ")
}

func TestPick(t *testing.T) {
	r := &Semver{PreReleases: true}
	t.Run("one version per digest, oldest first", func(t *testing.T) {
		got := r.Pick(resolvedOf(t, r, "2.0.0", "c", "1.2", "b", "1.2.3", "b", "1", "b", "1.0.0", "a", "2.0.0-rc.1", "c"), "")
		if show(got) != "1.0.0@a 1.2.3@b 2.0.0@c" {
			t.Errorf("got %s: want 1.2.3 over 1.2 and 1, the final 2.0.0 over its rc", show(got))
		}
	})
	t.Run("a pre-release of its own digest stays", func(t *testing.T) {
		got := r.Pick(resolvedOf(t, r, "2.0.0-rc.1", "d", "1.0.0", "a", "2.0.0-rc.2", "e"), "")
		if show(got) != "1.0.0@a 2.0.0-rc.1@d 2.0.0-rc.2@e" {
			t.Errorf("got %s", show(got))
		}
	})
	t.Run("latest appended when its digest is no version", func(t *testing.T) {
		got := r.Pick(resolvedOf(t, r, "1.0.0", "a"), "z")
		if show(got) != "1.0.0@a latest@z" {
			t.Errorf("got %s", show(got))
		}
		got = r.Pick(resolvedOf(t, r, "1.0.0", "a"), "a")
		if show(got) != "1.0.0@a" {
			t.Errorf("latest on a version's digest: got %s", show(got))
		}
	})
	t.Run("no latest with a constraint", func(t *testing.T) {
		c := &Semver{Constraint: constraint(t, ">= 1")}
		if got := c.Pick(resolvedOf(t, c, "1.0.0", "a"), "z"); show(got) != "1.0.0@a" {
			t.Errorf("got %s", show(got))
		}
	})
	t.Run("the variant is the bare tag", func(t *testing.T) {
		v := &Semver{Variant: "alpine"}
		if got := v.Pick(resolvedOf(t, v, "1.0.0-alpine", "a"), "z"); show(got) != "1.0.0-alpine@a alpine@z" {
			t.Errorf("got %s", show(got))
		}
	})
	t.Run("equal versions on two digests: tag order, every time", func(t *testing.T) {
		for i := 0; i < 20; i++ {
			if got := r.Pick(resolvedOf(t, r, "1.2.0", "a", "1.2", "b"), ""); show(got) != "1.2@b 1.2.0@a" {
				t.Fatalf("got %s", show(got))
			}
		}
	})
}

func TestAliases(t *testing.T) {
	v := func(s string) *semver.Version { return semver.MustParse(s) }
	existing := []string{"1.2.3", "1.2", "1", "1.3.0", "2.0.0", "latest", "2.1.0-rc.1", "1.2.9-alpine", "3.0.0-alpine"}
	for _, c := range []struct {
		push, variant string
		want          string
	}{
		{"2.0.1", "", "2.0 2 latest"},
		{"1.2.4", "", "1.2"},          // 1.3.0 exists: not the highest of 1.x
		{"1.3.1", "", "1.3 1"},        // 2.0.0 exists
		{"1.2.2", "", ""},             // 1.2.3 exists
		{"2.0.0", "", "2.0 2 latest"}, // pushed again: still the highest; 2.1.0-rc.1 does not count
		{"2.1.0-rc.2", "", ""},        // a pre-release moves nothing
		{"1.2.10", "alpine", "1.2-alpine 1-alpine"},
		{"3.0.1", "alpine", "3.0-alpine 3-alpine alpine"},
		{"4.0.0", "", "4.0 4 latest"},
	} {
		got := strings.Join(Aliases(existing, v(c.push), c.variant), " ")
		if got != c.want {
			t.Errorf("push %s variant %q: aliases %q, want %q", c.push, c.variant, got, c.want)
		}
	}
	if got := strings.Join(Aliases(nil, v("0.1.0"), ""), " "); got != "0.1 0 latest" {
		t.Errorf("empty repository: %q", got)
	}
}

func TestPushVersion(t *testing.T) {
	for in, want := range map[string]string{"1.2.3": "1.2.3", "v1.2.3": "1.2.3", " 1.2.3\n": "1.2.3", "1.2": "1.2.0", "1.2.3-rc.1": "1.2.3-rc.1"} {
		_, tag, err := PushVersion(in, "")
		if err != nil || tag != want {
			t.Errorf("%q: tag %q, %v; want %q", in, tag, err, want)
		}
	}
	if _, tag, _ := PushVersion("1.2.3", "alpine"); tag != "1.2.3-alpine" {
		t.Errorf("variant: %q", tag)
	}
	for _, bad := range []string{"", "abc", "1.2.3.4", "latest"} {
		if _, _, err := PushVersion(bad, ""); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestMatching(t *testing.T) {
	all := []string{"main-1", "main-2", "x-main-3", "dev-1"}
	if got := strings.Join(Matching(regexp.MustCompile(`main-\d+`), all), " "); got != "main-1 main-2 x-main-3" {
		t.Errorf("unanchored: %q", got)
	}
	if got := strings.Join(Matching(regexp.MustCompile(`^main-\d+$`), all), " "); got != "main-1 main-2" {
		t.Errorf("anchored: %q", got)
	}
}

func TestSortByCreated(t *testing.T) {
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	vs := []Tagged{{Tag: "c"}, {Tag: "a"}, {Tag: "b"}, {Tag: "d"}}
	created := map[string]time.Time{"a": base, "b": base.Add(time.Hour), "c": base.Add(2 * time.Hour), "d": base.Add(time.Hour)}
	SortByCreated(vs, created)
	var got []string
	for _, v := range vs {
		got = append(got, v.Tag)
	}
	if fmt.Sprint(got) != "[a b d c]" {
		t.Errorf("got %v: oldest first, equal times in the given order", got)
	}
}
