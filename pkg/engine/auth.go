package engine

import (
	"fmt"
	"sort"
	"strings"

	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/registry"
)

// DockerHubKey is the key dockerd looks Docker Hub credentials up by, in a
// build's AuthConfigs and in the auth of pulls and pushes.
const DockerHubKey = "https://index.docker.io/v1/"

// Credentials are a username and password for one registry.
type Credentials struct {
	Username, Password string
}

// String never shows the password, so credentials can be logged by mistake
// without leaking.
func (c Credentials) String() string {
	return fmt.Sprintf("{Username:%s Password:***}", c.Username)
}

// GoString is String for %#v.
func (c Credentials) GoString() string { return c.String() }

// RegistryAuth holds registry credentials keyed the way dockerd looks them up.
// The zero value has none: pulls and pushes go anonymously.
type RegistryAuth struct {
	byKey map[string]Credentials
}

// NewRegistryAuth takes credentials by registry host ("host[:port]"; Docker
// Hub as "docker.io", "index.docker.io" or "registry-1.docker.io"). Entries
// with neither username nor password are dropped.
func NewRegistryAuth(byHost map[string]Credentials) RegistryAuth {
	a := RegistryAuth{byKey: map[string]Credentials{}}
	for host, c := range byHost {
		if c.Username == "" && c.Password == "" {
			continue
		}
		a.byKey[RegistryKey(host)] = c
	}
	return a
}

// RegistryKey maps a registry host to dockerd's key for it: Docker Hub's
// names become DockerHubKey, other hosts lose any scheme and path.
func RegistryKey(host string) string {
	h := strings.TrimPrefix(strings.TrimPrefix(host, "https://"), "http://")
	if i := strings.IndexByte(h, '/'); i >= 0 {
		h = h[:i]
	}
	switch strings.ToLower(h) {
	case "", "docker.io", "index.docker.io", "registry-1.docker.io":
		return DockerHubKey
	}
	return h
}

// Header is the X-Registry-Auth value (base64url JSON) to pull or push ref;
// an empty config when there are no credentials for its registry.
func (a RegistryAuth) Header(ref string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("registry auth for %q: %w", ref, err)
	}
	key := RegistryKey(reference.Domain(named))
	cfg := registry.AuthConfig{}
	if c, ok := a.byKey[key]; ok {
		cfg = authConfig(key, c)
	}
	h, err := registry.EncodeAuthConfig(cfg)
	if err != nil {
		return "", fmt.Errorf("registry auth for %s: %w", key, err)
	}
	return h, nil
}

// BuildConfigs is a build's AuthConfigs: credentials for the FROM pulls.
func (a RegistryAuth) BuildConfigs() map[string]registry.AuthConfig {
	if len(a.byKey) == 0 {
		return nil
	}
	m := make(map[string]registry.AuthConfig, len(a.byKey))
	for key, c := range a.byKey {
		m[key] = authConfig(key, c)
	}
	return m
}

// Registries lists the keys credentials are held for, sorted.
func (a RegistryAuth) Registries() []string {
	keys := make([]string, 0, len(a.byKey))
	for k := range a.byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// String lists the registries, never the credentials.
func (a RegistryAuth) String() string {
	return fmt.Sprintf("RegistryAuth%v", a.Registries())
}

// GoString is String for %#v.
func (a RegistryAuth) GoString() string { return a.String() }

func authConfig(key string, c Credentials) registry.AuthConfig {
	return registry.AuthConfig{Username: c.Username, Password: c.Password, ServerAddress: key}
}
