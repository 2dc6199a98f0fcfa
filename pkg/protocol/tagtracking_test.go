package protocol

import (
	"strings"
	"testing"
)

func TestTagTrackingValidation(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{`"tag":"1","semver_constraint":"~1"`, "source.tag and source.semver_constraint: give one"},
		{`"tag":"1","pre_releases":true`, "source.tag and source.pre_releases: give one"},
		{`"tag":"1","tag_regex":"x"`, "source.tag and source.tag_regex: give one"},
		{`"tag_regex":"x","semver_constraint":"~1"`, "source.tag_regex and source.semver_constraint"},
		{`"tag_regex":"(x"`, "source.tag_regex is not a valid regular expression (RE2 syntax): error parsing regexp: missing closing ): `(x`"},
		{`"tag_regex":"(?!x)"`, "source.tag_regex is not a valid regular expression (RE2 syntax): error parsing regexp: invalid or unsupported Perl syntax: `(?!`"},
		{`"semver_constraint":"~>> 1"`, `source.semver_constraint: "~>> 1" is not a valid constraint`},
		{`"pre_release_prefixes":["pre"]`, "source.pre_release_prefixes needs source.pre_releases: true"},
		{`"pre_releases":true,"pre_release_prefixes":[""]`, "source.pre_release_prefixes[0] is empty"},
		{`"created_at_sort":true`, "source.created_at_sort needs source.tag_regex"},
		{`"variant":"-x"`, `source.variant: "-x" is not a valid tag`},
	} {
		_, err := ParseCheck(strings.NewReader(`{"source":{"repository":"a",` + c.src + `}}`))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.src, err, c.want)
		}
	}
	for src, want := range map[string]Tracking{
		``:                                         TrackTag,
		`,"tag":"1"`:                               TrackTag,
		`,"tag":"1","variant":"alpine"`:            TrackTag, // the variant is the put's suffix
		`,"variant":"alpine"`:                      TrackSemver,
		`,"semver_constraint":">= 1"`:              TrackSemver,
		`,"pre_releases":true`:                     TrackSemver,
		`,"tag_regex":"^v"`:                        TrackRegex,
		`,"tag_regex":"^v","variant":"slim"`:       TrackRegex,
		`,"tag_regex":"^v","created_at_sort":true`: TrackRegex,
	} {
		p, err := ParseCheck(strings.NewReader(`{"source":{"repository":"a"` + src + `}}`))
		if err != nil {
			t.Errorf("%s: %v", src, err)
			continue
		}
		if got := p.Request.Source.Tracking(); got != want {
			t.Errorf("%s: tracking %d, want %d", src, got, want)
		}
	}
}

func TestSemverRules(t *testing.T) {
	p, err := ParseCheck(strings.NewReader(`{"source":{"repository":"a","semver_constraint":">= 1.2.0-0","pre_releases":true,"pre_release_prefixes":["dev"],"variant":"slim"}}`))
	if err != nil {
		t.Fatal(err)
	}
	r := p.Request.Source.SemverRules()
	if r.Constraint == nil || !r.PreReleases || r.Variant != "slim" || len(r.PreReleasePrefixes) != 1 {
		t.Errorf("%+v", r)
	}
	if _, ok := r.Version("1.2.9-dev.1-slim"); !ok {
		t.Error("1.2.9-dev.1-slim should be tracked")
	}
}

func TestVersionParamsValidation(t *testing.T) {
	for _, c := range []struct{ params, want string }{
		{`"version":"1","version_file":"v"`, "params.version and params.version_file: give one"},
		{`"bump_aliases":true`, "params.bump_aliases needs params.version or params.version_file"},
		{`"version":"abc"`, `params.version: "abc" is not a semantic version`},
		{`"version":"1.2.3","tag_file":"t"`, "params.version and params.tag_file: give one"},
		{`"version_file":"v","tag":"t"`, "params.version_file and params.tag: give one"},
	} {
		_, err := ParseOut(strings.NewReader(`{"source":{"repository":"a"},"params":{"build":"x",` + c.params + `}}`))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.params, err, c.want)
		}
	}
	for _, ok := range []string{`"version":"v1.2.3","bump_aliases":true`, `"version_file":"v/number","bump_aliases":true`, `"version":"1.2.3-rc.1"`} {
		if _, err := ParseOut(strings.NewReader(`{"source":{"repository":"a"},"params":{"build":"x",` + ok + `}}`)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

func TestVersionTag(t *testing.T) {
	p, err := ParseIn(strings.NewReader(`{"source":{"repository":"a"},"version":{"tag":"1.2.3","digest":"sha256:` + strings.Repeat("a", 64) + `"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if p.Request.Version.Tag != "1.2.3" {
		t.Errorf("version.tag not read: %+v", p.Request.Version)
	}
	_, err = ParseIn(strings.NewReader(`{"source":{"repository":"a"},"version":{"tag":5,"digest":"sha256:` + strings.Repeat("a", 64) + `"}}`))
	if err == nil || !strings.Contains(err.Error(), "version.tag: expected a string") {
		t.Errorf("a number tag: %v", err)
	}
}

// TestVersionAsYAMLNumber: `version: 1.10` reaches the put as a JSON number
// and keeps its digits, as `tag` does.
func TestVersionAsYAMLNumber(t *testing.T) {
	p, err := ParseOut(strings.NewReader(`{"source": {"repository": "r", "semver_constraint": ">= 1"}, "params": {"build": "b", "version": 1.10}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Request.Params.Version; got != "1.10" {
		t.Errorf("params.version = %q, want the number's digits 1.10", got)
	}
}
