package protocol

import (
	"slices"
	"strings"
	"testing"
)

func TestAdditionalRepositories(t *testing.T) {
	ok := `{"source": {"repository": "registry.example.com:5000/team/app"}, "params": {"build": "x",
		"additional_repositories": ["registry.example.com:5000/team/mirror", "other.example.com/app", "alpine"]}}`
	p, err := ParseOut(strings.NewReader(ok))
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Request.AdditionalRepositories()
	if err != nil || !slices.Equal(got, []string{"registry.example.com:5000/team/mirror", "other.example.com/app", "alpine"}) {
		t.Errorf("AdditionalRepositories() = %q, %v", got, err)
	}

	for _, c := range []struct {
		name, source, list, want string
	}{
		{"not a repository", "team/app", `["Team/App"]`, `params.additional_repositories[0]: "Team/App" is not a valid repository: repository names must be lower case`},
		{"a tag in it", "team/app", `["ok/one", "registry.example.com/app:1"]`, `params.additional_repositories[1]: "registry.example.com/app:1" must not contain a tag`},
		{"a digest in it", "team/app", `["app@sha256:` + strings.Repeat("a", 64) + `"]`, `params.additional_repositories[0]: "app@sha256:`},
		{"empty", "team/app", `[""]`, `params.additional_repositories[0] is empty`},
		{"twice", "team/app", `["a.example/x", "b.example/y", "a.example/x"]`, `params.additional_repositories[2]: "a.example/x" is params.additional_repositories[0] ("a.example/x") again`},
		{"twice, Docker Hub spelt two ways", "team/app", `["alpine", "docker.io/library/alpine"]`, `params.additional_repositories[1]: "docker.io/library/alpine" is params.additional_repositories[0] ("alpine") again`},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := `{"source": {"repository": "` + c.source + `"}, "params": {"build": "x", "additional_repositories": ` + c.list + `}}`
			_, err := ParseOut(strings.NewReader(in))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ParseOut: %v, want %q", err, c.want)
			}
		})
	}

	// The source again is found by the plan, which has both.
	for _, c := range []struct{ source, entry string }{
		{"registry.example.com:5000/team/app", "registry.example.com:5000/team/app"},
		{"library/alpine", "index.docker.io/library/alpine"},
	} {
		in := `{"source": {"repository": "` + c.source + `"}, "params": {"build": "x", "additional_repositories": ["ok.example/x", "` + c.entry + `"]}}`
		p, err := ParseOut(strings.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		want := `params.additional_repositories[1]: "` + c.entry + `" is source.repository ("` + c.source + `")`
		if _, err := p.Request.AdditionalRepositories(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", c.entry, err, want)
		}
	}
}
