package test

import (
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

// TestPutRegistryMirror: the put hands registry_mirror to its dockerd, and
// the debug log's dockerd command line shows it; a mirror URL with a
// username or password is refused before the daemon starts and never
// shown (issue 12, item 2: dockerd refused it, after the debug log had
// printed it with the password).
func TestPutRegistryMirror(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	srcDir := t.TempDir()
	writeFiles(t, srcDir, map[string]string{
		"app/Dockerfile": "FROM scratch\nCOPY f /f\n",
		"app/f":          "built with a mirror configured\n",
	})
	// dockerd asks a mirror only for Docker Hub images; this build pulls
	// none, so the mirror need not be a registry.
	mirror := "http://" + notARegistry(t)
	const password = "mirror-pw-4711"

	t.Run("the mirror reaches dockerd", func(t *testing.T) {
		r := runOut(t, srcDir, map[string]any{
			"source": source(reg, "mirror/app", map[string]any{"registry_mirror": mirror, "debug": true}),
			"params": map[string]any{"build": "app"},
		})
		if r.err != nil {
			t.Fatalf("out failed: %v\n%s", r.err, r.stderr)
		}
		if !strings.Contains(r.stderr, "--registry-mirror "+mirror) {
			t.Errorf("the debug log shows no dockerd command line with the mirror:\n%s", r.stderr)
		}
		assertComplete(t, reg, "mirror/app:latest")
	})
	for _, u := range []string{
		strings.Replace(mirror, "://", "://user:"+password+"@", 1),
		strings.Replace(mirror, "://", "://"+password+"@", 1),
	} {
		t.Run("a mirror URL with userinfo is refused", func(t *testing.T) {
			r := runOut(t, srcDir, map[string]any{
				"source": source(reg, "mirror/secret", map[string]any{"registry_mirror": u, "debug": true}),
				"params": map[string]any{"build": "app"},
			})
			if r.err == nil {
				t.Fatalf("out succeeded: %s", r.stdout)
			}
			t.Logf("error: %v", r.err)
			for _, w := range []string{"source.registry_mirror", "username or password", "source.additional_private_registries entry for"} {
				if !strings.Contains(r.err.Error(), w) {
					t.Errorf("error does not contain %q", w)
				}
			}
			if strings.Contains(r.err.Error()+r.stderr+r.stdout, password) {
				t.Errorf("the password appears in the output:\n%v\n%s", r.err, r.stderr)
			}
			if strings.Contains(r.stderr, "starting dockerd") {
				t.Errorf("the daemon was started:\n%s", r.stderr)
			}
		})
	}
	assertRegistryHolds(t, reg, map[string][]string{"mirror/app": {"latest"}})
}
