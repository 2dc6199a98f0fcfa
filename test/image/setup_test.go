package image

import (
	"os"
	"testing"
)

// imageForTest skips a test that cannot run the image (the image tests need
// root: debootstrap, dockerd and network namespaces) and returns the image's
// docker-save tarball, built from the working tree or cached.
func imageForTest(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the image test needs root: debootstrap, dockerd and network namespaces")
	}
	repo, err := RepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	return builtImage(t, t.Context(), repo)
}

// registrySource makes the source of a repository on the registry
// container reached as registry:5000 (plain HTTP) with user and pass.
func registrySource(user, pass string) func(repo string, extra map[string]any) map[string]any {
	return func(repo string, extra map[string]any) map[string]any {
		s := map[string]any{"repository": "registry:5000/" + repo, "username": user, "password": pass, "insecure_registries": []string{"registry:5000"}}
		for k, v := range extra {
			s[k] = v
		}
		return s
	}
}
