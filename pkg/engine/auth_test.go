package engine

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/registry"
)

func TestRegistryKey(t *testing.T) {
	for in, want := range map[string]string{
		"docker.io":                   DockerHubKey,
		"index.docker.io":             DockerHubKey,
		"registry-1.docker.io":        DockerHubKey,
		"https://index.docker.io/v1/": DockerHubKey,
		"":                            DockerHubKey,
		"my.registry:5000":            "my.registry:5000",
		"https://my.registry/v2/":     "my.registry",
		"127.0.0.1:5000":              "127.0.0.1:5000",
	} {
		if got := RegistryKey(in); got != want {
			t.Errorf("RegistryKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRegistryAuthHeader(t *testing.T) {
	a := NewRegistryAuth(map[string]Credentials{
		"docker.io":        {Username: "hubuser", Password: "hubpass"},
		"my.registry:5000": {Username: "me", Password: "s3cret"},
		"empty.example":    {},
	})
	for ref, want := range map[string]registry.AuthConfig{
		"alpine:3.7":                   {Username: "hubuser", Password: "hubpass", ServerAddress: DockerHubKey},
		"index.docker.io/library/x:1":  {Username: "hubuser", Password: "hubpass", ServerAddress: DockerHubKey},
		"my.registry:5000/team/app:v1": {Username: "me", Password: "s3cret", ServerAddress: "my.registry:5000"},
		"other.example/app:1":          {},
		"empty.example/app:1":          {},
	} {
		h, err := a.Header(ref)
		if err != nil {
			t.Fatalf("Header(%q): %v", ref, err)
		}
		got, err := registry.DecodeAuthConfig(h)
		if err != nil {
			t.Fatalf("decoding header of %q: %v", ref, err)
		}
		if *got != want {
			t.Errorf("Header(%q) = %+v, want %+v", ref, *got, want)
		}
	}
	if _, err := a.Header("Not A Ref"); err == nil {
		t.Error("a malformed reference gave no error")
	}
	cfgs := a.BuildConfigs()
	if keys := a.Registries(); !reflect.DeepEqual(keys, []string{DockerHubKey, "my.registry:5000"}) {
		t.Fatalf("registries %v", keys)
	}
	if len(cfgs) != 2 || cfgs[DockerHubKey].Password != "hubpass" || cfgs["my.registry:5000"].Username != "me" {
		t.Fatalf("build configs %+v", cfgs)
	}
	if (RegistryAuth{}).BuildConfigs() != nil {
		t.Fatal("zero RegistryAuth has build configs")
	}
	// Printing never shows a password.
	for _, s := range []string{
		fmt.Sprint(a), fmt.Sprintf("%+v", a), fmt.Sprintf("%#v", a),
		fmt.Sprint(Credentials{"u", "s3cret"}), fmt.Sprintf("%+v", Credentials{"u", "s3cret"}), fmt.Sprintf("%#v", Credentials{"u", "s3cret"}),
	} {
		if strings.Contains(s, "s3cret") || strings.Contains(s, "hubpass") {
			t.Errorf("printed a password: %s", s)
		}
	}
}
