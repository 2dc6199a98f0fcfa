package test

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/errgroup"
)

// Tag tracking (issue 15): check against Debian's distribution 2.8, with
// registry-image-resource's semantics.

// tagged formats versions as tag@digest-name, naming digests by the image
// they were pushed as, so a failure reads "1.1.0@B" instead of hashes.
func tagged(vs []protocol.Version, names map[string]string) string {
	var out []string
	for _, v := range vs {
		n, ok := names[v.Digest]
		if !ok {
			n = v.Digest
		}
		out = append(out, v.Tag+"@"+n)
	}
	return strings.Join(out, " ")
}

// tagImages pushes one distinct image per name and returns digest->name.
type tagImages struct {
	t      *testing.T
	reg    *testenv.Registry
	repo   string
	names  map[string]string // digest -> name
	digest map[string]string // name -> digest
}

func newTagImages(t *testing.T, reg *testenv.Registry, repo string) *tagImages {
	return &tagImages{t: t, reg: reg, repo: repo, names: map[string]string{}, digest: map[string]string{}}
}

// push pushes image name (created at created, if set) under tags.
func (ti *tagImages) push(name string, created time.Time, tags ...string) string {
	ti.t.Helper()
	img := testenv.BusyboxImage(ti.t, testenv.ImageOptions{Labels: map[string]string{"image": name}, Created: created})
	var d string
	for _, tag := range tags {
		d = ti.reg.Push(ti.t, ti.repo+":"+tag, img).String()
	}
	ti.names[d], ti.digest[name] = name, d
	return d
}

func (ti *tagImages) check(extra map[string]any, version map[string]any) (string, result) {
	ti.t.Helper()
	req := map[string]any{"source": source(ti.reg, ti.repo, extra)}
	if version != nil {
		req["version"] = version
	}
	r := runCheck(ti.t, req)
	if r.err != nil {
		ti.t.Fatalf("check failed: %v\nstderr:\n%s", r.err, r.stderr)
	}
	var vs []protocol.Version
	if err := json.Unmarshal([]byte(r.stdout), &vs); err != nil {
		ti.t.Fatalf("stdout %q: %v", r.stdout, err)
	}
	for _, v := range vs {
		if v.Tag == "" {
			ti.t.Errorf("version %s has no tag: with tag tracking every version is {tag, digest}", v.Digest)
		}
	}
	return tagged(vs, ti.names), r
}

func (ti *tagImages) cursor(tag, name string) map[string]any {
	return map[string]any{"tag": tag, "digest": ti.digest[name]}
}

func TestCheckSemverTracking(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ti := newTagImages(t, reg, "track/app")
	ti.push("A", time.Time{}, "1.0.0")
	ti.push("B", time.Time{}, "1.1.0", "1.1", "1")
	ti.push("C", time.Time{}, "2.0.0-rc.1")
	ti.push("D", time.Time{}, "latest")
	ti.push("E", time.Time{}, "1.1.0-alpine", "feature-x")
	ti.push("R", time.Time{}, "1.1.0-preview.1")
	constraint := map[string]any{"semver_constraint": ">= 1"}

	expect := func(t *testing.T, got, want string) {
		t.Helper()
		if got != want {
			t.Errorf("versions %q\n          want %q", got, want)
		}
	}
	t.Run("first check: every version in semver order, one per digest, most dots", func(t *testing.T) {
		got, r := ti.check(constraint, nil)
		// The rc is a pre-release, 1.1.0-alpine a variant, latest left out
		// under a constraint.
		expect(t, got, "1.0.0@A 1.1.0@B")
		if !strings.Contains(r.stderr, "read 9 tags of "+reg.Host+"/track/app (1 page)") {
			t.Errorf("the log does not say how many tags were read:\n%s", r.stderr)
		}
	})
	t.Run("a version without a tag (tag tracking switched on) is a first check", func(t *testing.T) {
		got, _ := ti.check(constraint, map[string]any{"digest": ti.digest["A"]})
		expect(t, got, "1.0.0@A 1.1.0@B")
	})
	t.Run("cursor kept, nothing newer", func(t *testing.T) {
		got, _ := ti.check(constraint, ti.cursor("1.1.0", "B"))
		expect(t, got, "1.1.0@B")
	})
	t.Run("cursor on the older version", func(t *testing.T) {
		got, _ := ti.check(constraint, ti.cursor("1.0.0", "A"))
		expect(t, got, "1.0.0@A 1.1.0@B")
	})
	ti.push("F", time.Time{}, "1.2.0")
	t.Run("new tag after the cursor", func(t *testing.T) {
		got, _ := ti.check(constraint, ti.cursor("1.1.0", "B"))
		expect(t, got, "1.1.0@B 1.2.0@F")
	})
	t.Run("latest appended without a constraint when its digest is no version", func(t *testing.T) {
		got, _ := ti.check(map[string]any{"pre_releases": true}, ti.cursor("1.2.0", "F"))
		expect(t, got, "1.2.0@F 2.0.0-rc.1@C latest@D")
	})
	t.Run("pre-release excluded by a constraint without -0", func(t *testing.T) {
		got, _ := ti.check(map[string]any{"semver_constraint": ">= 1", "pre_releases": true}, ti.cursor("1.2.0", "F"))
		expect(t, got, "1.2.0@F")
	})
	t.Run("pre-release included with -0", func(t *testing.T) {
		got, _ := ti.check(map[string]any{"semver_constraint": ">= 1.2.0-0", "pre_releases": true}, ti.cursor("1.2.0", "F"))
		expect(t, got, "1.2.0@F 2.0.0-rc.1@C")
	})
	t.Run("pre_release_prefixes add preview", func(t *testing.T) {
		got, _ := ti.check(map[string]any{"semver_constraint": ">= 1.1.0-0", "pre_releases": true, "pre_release_prefixes": []string{"preview"}}, nil)
		expect(t, got, "1.1.0-preview.1@R 1.1.0@B 1.2.0@F 2.0.0-rc.1@C")
	})
	ti.push("G", time.Time{}, "1.1.0")
	t.Run("the cursor's tag moved: every version again", func(t *testing.T) {
		got, r := ti.check(constraint, ti.cursor("1.1.0", "B"))
		// 1.1 still names B; 1.1.0 now names G.
		expect(t, got, "1.0.0@A 1.1@B 1.1.0@G 1.2.0@F")
		if !strings.Contains(r.stderr, "tag 1.1.0 now has digest") {
			t.Errorf("the log does not say the cursor moved:\n%s", r.stderr)
		}
	})
	ti.push("H", time.Time{}, "1.2.0-alpine", "alpine")
	t.Run("variant: only <semver>-alpine tags", func(t *testing.T) {
		got, _ := ti.check(map[string]any{"variant": "alpine"}, nil)
		// alpine names H, which 1.2.0-alpine reports: no bare version.
		expect(t, got, "1.1.0-alpine@E 1.2.0-alpine@H")
		got, _ = ti.check(map[string]any{"variant": "alpine"}, ti.cursor("1.2.0-alpine", "H"))
		expect(t, got, "1.2.0-alpine@H")
	})
	t.Run("variant: the bare variant tag is appended when it is no version", func(t *testing.T) {
		ti.push("I", time.Time{}, "alpine")
		got, _ := ti.check(map[string]any{"variant": "alpine"}, ti.cursor("1.2.0-alpine", "H"))
		expect(t, got, "1.2.0-alpine@H alpine@I")
	})
	t.Run("tag with variant is the one tag, as before", func(t *testing.T) {
		vs := checkVersions(t, map[string]any{"source": source(reg, "track/app", map[string]any{"tag": "1.0.0", "variant": "alpine"})})
		if len(vs) != 1 || vs[0].Tag != "" || vs[0].Digest != ti.digest["A"] {
			t.Errorf("versions %+v, want [{digest: A}]", vs)
		}
	})
	t.Run("missing repository gives no versions", func(t *testing.T) {
		vs := checkVersions(t, map[string]any{"source": source(reg, "track/none", constraint)})
		if len(vs) != 0 {
			t.Errorf("versions %+v", vs)
		}
	})
}

func TestCheckTagRegex(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ti := newTagImages(t, reg, "regex/app")
	day := func(d int) time.Time { return time.Date(2025, 3, d, 0, 0, 0, 0, time.UTC) }
	ti.push("A", day(2), "main-1")
	ti.push("B", day(1), "main-2")
	ti.push("C", day(4), "dev-1")
	ti.push("D", day(3), "x-main-3")

	// The registry's own order (distribution 2.8's is not by name).
	listed, err := remote.List(reg.Ref(t, "regex/app").Context(), reg.RemoteOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	inRegistryOrder := func(want ...string) string {
		var out []string
		for _, tag := range listed {
			for _, w := range want {
				if name, ok := strings.CutPrefix(w, tag+"@"); ok && name != "" {
					out = append(out, w)
				}
			}
		}
		return strings.Join(out, " ")
	}
	t.Logf("the registry lists %v", listed)
	t.Run("unanchored, in the registry's order", func(t *testing.T) {
		got, _ := ti.check(map[string]any{"tag_regex": `main-\d+`}, nil)
		if want := inRegistryOrder("main-1@A", "main-2@B", "x-main-3@D"); got != want || len(want) != len("main-1@A main-2@B x-main-3@D") {
			t.Errorf("versions %q, want %q", got, want)
		}
	})
	t.Run("the cursor is ignored", func(t *testing.T) {
		got, _ := ti.check(map[string]any{"tag_regex": `main-\d+`}, ti.cursor("main-2", "B"))
		if want := inRegistryOrder("main-1@A", "main-2@B", "x-main-3@D"); got != want {
			t.Errorf("versions %q, want %q", got, want)
		}
	})
	t.Run("anchored", func(t *testing.T) {
		got, _ := ti.check(map[string]any{"tag_regex": `^main-\d+$`}, nil)
		if want := inRegistryOrder("main-1@A", "main-2@B"); got != want || len(want) != len("main-1@A main-2@B") {
			t.Errorf("versions %q, want %q", got, want)
		}
	})
	t.Run("created_at_sort: oldest image first", func(t *testing.T) {
		got, _ := ti.check(map[string]any{"tag_regex": `main-\d+`, "created_at_sort": true}, nil)
		if got != "main-2@B main-1@A x-main-3@D" {
			t.Errorf("versions %q", got)
		}
	})
}

func TestCheckTagTrackingErrors(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	for _, c := range []struct {
		name  string
		extra map[string]any
		want  []string
	}{
		{"tag with semver_constraint", map[string]any{"tag": "1.0", "semver_constraint": "~1"}, []string{"source.tag and source.semver_constraint: give one"}},
		{"tag with pre_releases", map[string]any{"tag": "1.0", "pre_releases": true}, []string{"source.tag and source.pre_releases: give one"}},
		{"tag with tag_regex", map[string]any{"tag": "1.0", "tag_regex": "^1"}, []string{"source.tag and source.tag_regex: give one"}},
		{"bad regex", map[string]any{"tag_regex": "main-(\\d+"}, []string{"source.tag_regex", "not a valid regular expression", "missing closing )"}},
		{"bad constraint", map[string]any{"semver_constraint": ">= one"}, []string{"source.semver_constraint", `">= one" is not a valid constraint`, "improper constraint"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkFails(t, map[string]any{"source": source(reg, "any/app", c.extra)}, c.want)
		})
	}
}

// TestCheckTagPaging: more than 1000 tags, paged by a loopback proxy in
// front of the real registry (distribution 2.8 itself sends all tags at
// once, whatever n says: the first case proves it).
func TestCheckTagPaging(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	ti := newTagImages(t, reg, "many/app")
	filler := ti.push("Z", time.Time{}, "0filler-0000")
	ti.push("A", time.Time{}, "1.0.0")
	ti.push("B", time.Time{}, "1.1.0")
	// 1100 more tags of one image: manifest PUTs only. "0filler-" sorts
	// before "1.0.0", so the versions are on the second page.
	desc, err := remote.Get(reg.Ref(t, "many/app@"+filler), reg.RemoteOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	var g errgroup.Group
	g.SetLimit(8)
	for i := 1; i <= 1100; i++ {
		ref := reg.Ref(t, fmt.Sprintf("many/app:0filler-%04d", i)).(name.Tag)
		g.Go(func() error { return remote.Tag(ref, desc, reg.RemoteOptions()...) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	constraint := map[string]any{"semver_constraint": ">= 1"}

	t.Run("distribution 2.8 ignores n", func(t *testing.T) {
		got, r := ti.check(constraint, nil)
		if got != "1.0.0@A 1.1.0@B" || !strings.Contains(r.stderr, "read 1103 tags of "+reg.Host+"/many/app (1 page)") {
			t.Errorf("versions %q; log:\n%s", got, r.stderr)
		}
	})
	t.Run("paged", func(t *testing.T) {
		pager := testenv.StartTagPager(t, reg, 1000)
		src := source(reg, "many/app", constraint)
		src["repository"] = pager.Host + "/many/app"
		r := runCheck(t, map[string]any{"source": src})
		if r.err != nil {
			t.Fatalf("check: %v\n%s", r.err, r.stderr)
		}
		var vs []protocol.Version
		if err := json.Unmarshal([]byte(r.stdout), &vs); err != nil {
			t.Fatal(err)
		}
		if got := tagged(vs, ti.names); got != "1.0.0@A 1.1.0@B" {
			t.Errorf("versions %q: the second page's versions are missing", got)
		}
		if !strings.Contains(r.stderr, "read 1103 tags of "+pager.Host+"/many/app (2 pages)") {
			t.Errorf("the log does not say 1103 tags in 2 pages:\n%s", r.stderr)
		}
		pages := pager.Pages()
		if len(pages) != 2 || !strings.Contains(pages[0], "n=1000") || !strings.Contains(pages[1], "last=0filler-0999") {
			t.Errorf("tag list requests %q: want n=1000, then the page after 0filler-0999", pages)
		}
	})
}

func TestInTagVersion(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	d := reg.Push(t, "track/base:1.2.3", testenv.BusyboxImage(t, testenv.ImageOptions{})).String()
	src := source(reg, "track/base", map[string]any{"semver_constraint": "~1.2"})
	version := map[string]any{"tag": "1.2.3", "digest": d}

	dest := t.TempDir()
	resp := getOK(t, dest, map[string]any{"source": src, "version": version, "params": map[string]any{"save": true}})
	if resp.Version.Tag != "1.2.3" || resp.Version.Digest != d {
		t.Errorf("version %+v, want the requested {tag, digest}", resp.Version)
	}
	if got := readFile(t, filepath.Join(dest, "tag")); got != "1.2.3\n" {
		t.Errorf("tag file %q, want the version's tag", got)
	}
	if got := readFile(t, filepath.Join(dest, "digest")); got != d+"\n" {
		t.Errorf("digest file %q", got)
	}
	if tags := saveTarballTags(t, filepath.Join(dest, "image")); tags != reg.Host+"/track/base:1.2.3" {
		t.Errorf("the image tarball is tagged %q, want the version's tag (for load_base and FROM)", tags)
	}
	meta, _ := json.Marshal(resp.Metadata)
	if !strings.Contains(string(meta), `{"name":"tag","value":"1.2.3"}`) {
		t.Errorf("metadata %s does not name the tag", meta)
	}

	dest = t.TempDir()
	getOK(t, dest, map[string]any{"source": src, "version": version, "params": map[string]any{"skip_download": true}})
	if got := readFile(t, filepath.Join(dest, "tag")); got != "1.2.3\n" {
		t.Errorf("skip_download: tag file %q", got)
	}
}

// saveTarballTags is the RepoTags of a docker-save tarball, joined.
func saveTarballTags(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			t.Fatalf("%s has no manifest.json", path)
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name != "manifest.json" {
			continue
		}
		var m []struct{ RepoTags []string }
		if err := json.NewDecoder(tr).Decode(&m); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range m {
			out = append(out, e.RepoTags...)
		}
		return strings.Join(out, " ")
	}
}

// TestPutBumpAliases pushes semver versions with bump_aliases (a put:
// dockerd), as registry-image-resource moves them, and checks them back.
func TestPutBumpAliases(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	srcDir := t.TempDir()
	images := map[string]string{}
	for _, n := range []string{"one", "two", "three", "four"} {
		d := reg.Push(t, "bump/base:"+n, testenv.BusyboxImage(t, labelled(t, n))).String()
		getOK(t, filepath.Join(srcDir, n), map[string]any{"source": source(reg, "bump/base", map[string]any{"tag": n}), "version": map[string]any{"digest": d}, "params": map[string]any{"save": true}})
		images[d] = n
	}
	tagsNow := func(t *testing.T, repo string, tags ...string) string {
		t.Helper()
		var out []string
		for _, tag := range tags {
			desc, err := remote.Head(reg.Ref(t, repo+":"+tag), reg.RemoteOptions()...)
			if err != nil {
				out = append(out, tag+"@none")
				continue
			}
			out = append(out, tag+"@"+images[desc.Digest.String()])
		}
		return strings.Join(out, " ")
	}
	put := func(t *testing.T, repo string, extra, params map[string]any) protocol.Response {
		t.Helper()
		return putOK(t, srcDir, map[string]any{"source": source(reg, repo, extra), "params": params})
	}
	semver := map[string]any{"semver_constraint": ">= 0"}

	t.Run("the first version moves every alias; the put's version is {tag, digest}", func(t *testing.T) {
		resp := put(t, "bump/app", semver, map[string]any{"load": "one", "version": "v1.2.3", "bump_aliases": true})
		if resp.Version.Tag != "1.2.3" || images[resp.Version.Digest] != "one" {
			t.Errorf("version %+v, want {tag: 1.2.3, digest: one's}", resp.Version)
		}
		if got := tagsNow(t, "bump/app", "1.2.3", "1.2", "1", "latest"); got != "1.2.3@one 1.2@one 1@one latest@one" {
			t.Errorf("tags %s", got)
		}
		got := checkVersions(t, map[string]any{"source": source(reg, "bump/app", semver)})
		if len(got) != 1 || got[0] != resp.Version {
			t.Errorf("check reports %+v, want the put's version %+v", got, resp.Version)
		}
	})
	t.Run("an older series moves only its own aliases", func(t *testing.T) {
		writeFiles(t, srcDir, map[string]string{"version/number": "1.1.0\n"})
		put(t, "bump/app", semver, map[string]any{"load": "two", "version_file": "version/number", "bump_aliases": true})
		if got := tagsNow(t, "bump/app", "1.1.0", "1.1", "1", "latest"); got != "1.1.0@two 1.1@two 1@one latest@one" {
			t.Errorf("tags %s", got)
		}
	})
	t.Run("a pre-release moves nothing", func(t *testing.T) {
		resp := put(t, "bump/app", semver, map[string]any{"load": "three", "version": "1.3.0-rc.1", "bump_aliases": true})
		if got := tagsNow(t, "bump/app", "1.3.0-rc.1", "1.3", "1", "latest"); got != "1.3.0-rc.1@three 1.3@none 1@one latest@one" {
			t.Errorf("tags %s", got)
		}
		if resp.Version.Tag != "1.3.0-rc.1" {
			t.Errorf("version %+v", resp.Version)
		}
	})
	t.Run("variant: -variant aliases and the bare variant", func(t *testing.T) {
		resp := put(t, "bump/app", map[string]any{"variant": "alpine"}, map[string]any{"load": "four", "version": "2.0.0", "bump_aliases": true})
		if got := tagsNow(t, "bump/app", "2.0.0-alpine", "2.0-alpine", "2-alpine", "alpine", "latest"); got != "2.0.0-alpine@four 2.0-alpine@four 2-alpine@four alpine@four latest@one" {
			t.Errorf("tags %s", got)
		}
		if resp.Version.Tag != "2.0.0-alpine" {
			t.Errorf("version %+v", resp.Version)
		}
	})
	t.Run("without tag tracking the version stays {digest}", func(t *testing.T) {
		resp := put(t, "bump/plain", nil, map[string]any{"load": "one", "version": "3.0.0"})
		if resp.Version.Tag != "" || images[resp.Version.Digest] != "one" {
			t.Errorf("version %+v, want {digest} only", resp.Version)
		}
		if got := tagsNow(t, "bump/plain", "3.0.0", "latest"); got != "3.0.0@one latest@none" {
			t.Errorf("tags %s", got)
		}
	})
}
