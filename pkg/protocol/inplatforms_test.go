package protocol

import (
	"reflect"
	"strings"
	"testing"
)

func parseInParams(params string) (Parsed[InRequest], error) {
	return ParseIn(strings.NewReader(`{"source":{"repository":"a"},"version":{"digest":"sha256:` + strings.Repeat("a", 64) + `"},"params":` + params + `}`))
}

func TestInPlatformsAccepted(t *testing.T) {
	p, err := parseInParams(`{"save":true,"platforms":["linux/amd64","linux/arm64","linux/arm/v7"]}`)
	if err != nil {
		t.Fatal(err)
	}
	want := []Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}, {OS: "linux", Architecture: "arm", Variant: "v7"}}
	if got := p.Request.Params.PlatformList(); !reflect.DeepEqual(got, want) {
		t.Errorf("PlatformList() = %+v, want %+v", got, want)
	}
	// An empty list (or null, as Concourse passes an empty var) is "not
	// given": the get stays the single-platform one, save or not.
	for _, params := range []string{`{"platforms":[]}`, `{"platforms":null}`} {
		p, err := parseInParams(params)
		if err != nil || len(p.Request.Params.Platforms) != 0 {
			t.Errorf("%s: %v %v", params, err, p.Request.Params.Platforms)
		}
	}
}

func TestInPlatformsRefused(t *testing.T) {
	for _, c := range []struct{ params, want string }{
		{`{"platforms":["linux/amd64"]}`, "params.platforms needs params.save: true"},
		{`{"save":true,"skip_download":true,"platforms":["linux/amd64"]}`, "params.platforms and params.skip_download: true exclude each other"},
		{`{"save":true,"platforms":["linux"]}`, `params.platforms[0]: "linux" is not a platform: write os/architecture[/variant]`},
		{`{"save":true,"platforms":["linux/amd64","linux//v7"]}`, `params.platforms[1]: "linux//v7" is not a platform`},
		{`{"save":true,"platforms":["linux/arm/v7/x"]}`, `params.platforms[0]: "linux/arm/v7/x" is not a platform`},
		{`{"save":true,"platforms":["linux/amd64/"]}`, `params.platforms[0]: "linux/amd64/" is not a platform`},
		{`{"save":true,"platforms":["Linux/AMD64"]}`, `params.platforms[0]: "Linux/AMD64" is not a platform: write os/architecture[/variant] in lower case`},
		{`{"save":true,"platforms":["windows/amd64:10.0.17763"]}`, `params.platforms[0]: "windows/amd64:10.0.17763" is not a platform`},
		{`{"save":true,"platforms":[""]}`, `params.platforms[0]: "" is not a platform`},
		{`{"save":true,"platforms":["linux/amd64","linux/arm64","linux/amd64"]}`, `params.platforms[2]: "linux/amd64" is params.platforms[0] ("linux/amd64") again: list each platform once`},
		{`{"save":true,"platforms":["linux/arm64/v8","linux/arm64"]}`, `params.platforms[1]: "linux/arm64" is params.platforms[0] ("linux/arm64/v8") again`},
		{`{"save":true,"platforms":"linux/amd64"}`, `params.platforms: expected a list, got a string`},
		{`{"save":true,"platforms":[{"os":"linux"}]}`, `params.platforms[0]: expected a string`},
		{`{"save":true,"platfroms":["linux/amd64"]}`, `did you mean "platforms"?`},
	} {
		_, err := parseInParams(c.params)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want it to contain %q", c.params, err, c.want)
		}
	}
}

func TestPlatformNormalized(t *testing.T) {
	for in, want := range map[Platform]string{
		{OS: "linux", Architecture: "arm64"}:                "linux/arm64/v8",
		{OS: "linux", Architecture: "arm64", Variant: "v9"}: "linux/arm64/v9",
		{OS: "linux", Architecture: "arm"}:                  "linux/arm",
		{OS: "linux", Architecture: "amd64"}:                "linux/amd64",
	} {
		if got := in.Normalized().String(); got != want {
			t.Errorf("%s normalized = %s, want %s", in, got, want)
		}
	}
}
