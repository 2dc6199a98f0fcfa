package protocol

import (
	"strings"
	"testing"
)

func TestBuildCacheParams(t *testing.T) {
	for _, c := range []struct{ given, repo, tag string }{
		{"registry.example.com:5000/team/app-cache", "registry.example.com:5000/team/app-cache", DefaultCacheTag},
		{"registry.example.com:5000/team/app-cache:main", "registry.example.com:5000/team/app-cache", "main"},
		{"team/cache", "team/cache", DefaultCacheTag},
	} {
		p, err := ParseOut(strings.NewReader(`{"source": {"repository": "team/app"}, "params": {"build": "x", "cache_repository": "` + c.given + `"}}`))
		if err != nil {
			t.Fatalf("%s: %v", c.given, err)
		}
		repo, tag := p.Request.Params.CacheRef()
		if repo != c.repo || tag != c.tag || p.Request.Params.CacheModeOrDefault() != CacheModeMax {
			t.Errorf("%s: CacheRef() = %q, %q; mode %q", c.given, repo, tag, p.Request.Params.CacheModeOrDefault())
		}
	}

	for _, c := range []struct{ name, params, want string }{
		{"mode without repository", `"cache_mode": "max"`, "params.cache_mode is set but params.cache_repository is not"},
		{"required without repository", `"cache_required": true`, "params.cache_required is set but params.cache_repository is not"},
		{"unknown mode", `"cache_repository": "r.example/c", "cache_mode": "all"`, `params.cache_mode: "all" is not a cache mode: use "max"`},
		{"bad repository", `"cache_repository": "R.example/C"`, `params.cache_repository: "R.example/C" is not a valid repository`},
		{"digest", `"cache_repository": "r.example/c@sha256:` + strings.Repeat("a", 64) + `"`, "params.cache_repository: \"r.example/c@sha256:"},
		{"bad tag", `"cache_repository": "r.example/c:-x"`, "params.cache_repository (its tag)"},
		{"bad platform", `"platforms": ["linux/amd64", "linux"]`, `params.platforms[1]: "linux" is not a platform: write os/architecture[/variant]`},
		{"platform twice", `"platforms": ["linux/arm64", "linux/arm64/v8"]`, `params.platforms[1]: "linux/arm64/v8" is params.platforms[0] ("linux/arm64") again`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseOut(strings.NewReader(`{"source": {"repository": "team/app"}, "params": {"build": "x", ` + c.params + `}}`))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ParseOut: %v, want %q", err, c.want)
			}
		})
	}
}
