package test

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

// Markers for every secret a request can carry (issue 8, part 4). None may
// show in stdout, stderr, an error, a file the get writes, or the pushed
// image's layers and config — with debug: true, on success and on failure.
const (
	markRegPW      = "regpw-marker-5e1d7c"      // source.password
	markAddPW      = "addpw-marker-93ab0f"      // additional_private_registries[].password
	markAWSSecret  = "awssecret-marker-71c2e4"  // aws_secret_access_key (non-ECR repository)
	markAWSSession = "awssession-marker-0d9f3a" // aws_session_token
	markBuildEnv   = "buildenv-marker-4b8e21"   // a build secret from an env var
	markBuildFile  = "buildfile-marker-c03a77"  // a build secret from a file that ends in a newline
	markBuildValue = "buildvalue-marker-8d41f6" // a build secret given as value:, with a trailing newline
	markMultiA     = "multia-marker-1f6b92"     // a line of a multi-line (JSON) build secret file
	markMultiB     = "multib-marker-a730c4"     // another line of it
	markWrongPW    = "wrongpw-marker-66e0d2"    // a password the registry refuses
)

type secretScan struct {
	markers []string
}

// text fails the test when s shows a marker.
func (m *secretScan) text(t *testing.T, what, s string) {
	t.Helper()
	for _, mk := range m.markers {
		if strings.Contains(s, mk) {
			i := strings.Index(s, mk)
			t.Errorf("%s shows a secret (%.12s...) near: %q", what, mk, s[max(0, i-80):min(len(s), i+len(mk)+20)])
		}
	}
}

// result checks a command's stdout, stderr and error.
func (m *secretScan) result(t *testing.T, what string, r result) {
	t.Helper()
	m.text(t, what+" stdout", r.stdout)
	m.text(t, what+" stderr", r.stderr)
	if r.err != nil {
		m.text(t, what+" error", r.err.Error())
	}
}

// wantLog fails the test unless the log shows each of want: the test must
// see the output and debug lines it relies on, or an empty log would pass.
func wantLog(t *testing.T, what, log string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(log, w) {
			t.Errorf("%s: the log lacks %q:\n%s", what, w, log)
		}
	}
}

// debugLine is how a debug line starts in the log (dim cyan level word).
const debugLine = "\x1b[2;36mDEBUG\x1b[0m "

// tree reads every regular file under dir (rootfs/, rootfs.tar, the image
// tarball, metadata) and fails on a marker.
func (m *secretScan) tree(t *testing.T, what, dir string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		n++
		rel, _ := filepath.Rel(dir, p)
		m.text(t, what+" file "+rel, string(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Errorf("%s: no files to scan in %s", what, dir)
	}
}

// image reads a pushed image back from the registry (manifest, config,
// every layer uncompressed) and fails on a marker.
func (m *secretScan) image(t *testing.T, reg *testenv.Registry, ref string) {
	t.Helper()
	img := pushedImage(t, reg, ref)
	for _, mk := range m.markers {
		if where := imageContains(t, img, mk); where != "" {
			t.Errorf("%s: secret %.12s... is in the image's %s", ref, mk, where)
		}
	}
}

// TestSecretsNeverShow runs check, in and out with debug: true and every
// kind of secret set to a marker, through successes and failures (wrong
// password, failing build, failing push, malformed request), and looks for
// the markers everywhere the resource writes.
func TestSecretsNeverShow(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{Password: markRegPW})
	other := testenv.StartRegistry(t, testenv.RegistryOptions{Username: "other", Password: markAddPW})
	baseDigest := reg.Push(t, "sec/base:1", testenv.BusyboxImage(t, testenv.ImageOptions{Env: []string{"PATH=/bin"}})).String()
	other.Push(t, "priv/base:1", testenv.BusyboxImage(t, labelled(t, "private")))

	ca := testenv.NewCA(t)
	certPEM, keyPEM := ca.Issue(t, "mtls.invalid")
	keyLines := strings.Split(string(keyPEM), "\n")
	scan := &secretScan{markers: []string{markRegPW, markAddPW, markAWSSecret, markAWSSession, markBuildEnv, markBuildFile, markBuildValue,
		markMultiA, markMultiB, markWrongPW, "PRIVATE KEY"}}
	for _, l := range keyLines[1:] {
		if l != "" && !strings.HasPrefix(l, "-----") {
			scan.markers = append(scan.markers, l) // each base64 line is as unique as a marker
		}
	}

	t.Setenv("SECRETS_TEST_BUILD_TOKEN", markBuildEnv)
	src := func(repo string, extra map[string]any) map[string]any {
		s := source(reg, repo, map[string]any{
			"debug":                         true,
			"aws_access_key_id":             "AKIDSECRETSTEST0001",
			"aws_secret_access_key":         markAWSSecret,
			"aws_session_token":             markAWSSession,
			"additional_private_registries": []any{map[string]any{"registry": other.Host, "username": other.Username, "password": markAddPW}},
			"client_certs":                  []any{map[string]any{"domain": "mtls.invalid:5000", "cert": string(certPEM), "key": string(keyPEM)}},
		})
		for k, v := range extra {
			s[k] = v
		}
		return s
	}

	t.Run("check", func(t *testing.T) {
		r := runCheck(t, map[string]any{"source": src("sec/base", map[string]any{"tag": "1"})})
		if r.err != nil || !strings.Contains(r.stdout, baseDigest) {
			t.Fatalf("check: %v\n%s", r.err, r.stderr)
		}
		wantLog(t, "check", r.stderr, debugLine+"checking "+reg.Host+"/sec/base:1")
		scan.result(t, "check", r)
	})
	t.Run("check with a wrong password", func(t *testing.T) {
		r := runCheck(t, map[string]any{"source": src("sec/base", map[string]any{"password": markWrongPW})}, fastRetry)
		if r.err == nil {
			t.Fatal("check succeeded with a wrong password")
		}
		scan.result(t, "check", r)
	})
	t.Run("check with a malformed request", func(t *testing.T) {
		b, _ := json.Marshal(map[string]any{"source": src("sec/base", nil)})
		r := runRaw(t, checkCmd, string(b[:len(b)-2]), nil)
		if r.err == nil {
			t.Fatal("a truncated request was accepted")
		}
		scan.result(t, "check", r)
	})
	t.Run("in", func(t *testing.T) {
		dest := t.TempDir()
		r := runIn(t, dest, map[string]any{"source": src("sec/base", map[string]any{"tag": "1"}), "version": map[string]any{"digest": baseDigest},
			"params": map[string]any{"save": true, "rootfs": true}})
		if r.err != nil {
			t.Fatalf("in: %v\n%s", r.err, r.stderr)
		}
		wantLog(t, "in", r.stderr, debugLine+"download: ")
		scan.result(t, "in", r)
		scan.tree(t, "in", dest)
	})
	t.Run("in with a wrong password", func(t *testing.T) {
		dest := t.TempDir()
		r := runIn(t, dest, map[string]any{"source": src("sec/base", map[string]any{"password": markWrongPW}), "version": map[string]any{"digest": baseDigest}}, fastRetry)
		if r.err == nil {
			t.Fatal("in succeeded with a wrong password")
		}
		scan.result(t, "in", r)
		if ents, _ := os.ReadDir(dest); len(ents) > 0 {
			scan.tree(t, "in", dest)
		}
	})

	// The build prints every build secret into its log, pulls FROM the
	// other registry with its password, and pushes with source.password.
	// The file secrets have the shapes real ones have: a trailing newline
	// (echo tok > file, .npmrc) and several lines (JSON, PEM); one line
	// reaches the log in two progress messages, stderr writing between them.
	srcDir := t.TempDir()
	multi := "{\n  \"token\": \"" + markMultiA + "\",\n  \"key\": \"" + markMultiB + "\"\n}\n"
	mounts := "RUN --mount=type=secret,id=envsec --mount=type=secret,id=filesec --mount=type=secret,id=multisec --mount=type=secret,id=valuesec "
	prints := "echo build-output-visible && sed 's/^/env: /' /run/secrets/envsec && echo && sed 's/^/file: /' /run/secrets/filesec && " +
		"sed 's/^/value: /' /run/secrets/valuesec && sed 's/^/multi: /' /run/secrets/multisec && " +
		"printf 'split: ' && head -c 9 /run/secrets/filesec && echo between-halves >&2 && sleep 1 && tail -c +10 /run/secrets/filesec"
	writeFiles(t, srcDir, map[string]string{
		"secret.txt":       markBuildFile + "\n",
		"multi.json":       multi,
		"ok/Dockerfile":    "FROM " + other.Host + "/priv/base:1\n" + mounts + prints + " && echo built > /built\n",
		"fail/Dockerfile":  "FROM " + other.Host + "/priv/base:1\n" + mounts + prints + " && echo failing on purpose && exit 3\n",
		"tags/version.txt": "v1\n",
		// The classic builder cannot mount secrets, but its output can
		// carry a source secret: here the client key, a PEM file.
		"classic/key.pem": string(keyPEM),
		"classic/Dockerfile": "FROM " + other.Host + "/priv/base:1\nCOPY key.pem /tmp/k\nRUN echo classic-output-visible && sed 's/^/key: /' /tmp/k && " +
			"printf 'split: ' && sed -n 2p /tmp/k | head -c 20 && sleep 1 && sed -n 2p /tmp/k | tail -c +21 && echo failing on purpose && exit 3\n",
	})
	params := func(dir string) map[string]any {
		return map[string]any{"build": dir, "tag_file": "tags/version.txt", "secrets": map[string]any{
			"envsec":   map[string]any{"env": "SECRETS_TEST_BUILD_TOKEN"},
			"filesec":  map[string]any{"source": "secret.txt"},
			"multisec": map[string]any{"source": "multi.json"},
			"valuesec": map[string]any{"value": markBuildValue + "\n"},
		}}
	}
	// What the RUN step prints, masked: every secret line becomes ***;
	// the JSON file's "{" and "}" are shorter than the redactor's minimum
	// and stay.
	// Each is a whole line: a mask that ate the newline would join lines.
	masked := []string{"build-output-visible\n", "env: ***\n", "file: ***\n", "value: ***\n", "multi: {\n", "multi: }\n", "split: ***\n", "between-halves\n"}
	maskedJSON := regexp.MustCompile(`multi: +\*\*\*\n`)
	t.Run("out", func(t *testing.T) {
		r := runOut(t, srcDir, map[string]any{"source": src("sec/app", nil), "params": params("ok")})
		if r.err != nil {
			t.Fatalf("out: %v\n%s", r.err, r.stderr)
		}
		wantLog(t, "out", r.stderr, append(masked, debugLine+"default route via", "dockerd --config-file", "build secrets: envsec, filesec, multisec, valuesec")...)
		if n := len(maskedJSON.FindAllString(r.stderr, -1)); n != 2 {
			t.Errorf("%d masked lines of the JSON secret, want 2:\n%s", n, r.stderr)
		}
		scan.result(t, "out", r)
		scan.image(t, reg, "sec/app:v1")
	})
	t.Run("out with a failing build", func(t *testing.T) {
		r := runOut(t, srcDir, map[string]any{"source": src("sec/fail", nil), "params": params("fail")})
		if r.err == nil {
			t.Fatalf("out succeeded\n%s", r.stderr)
		}
		// The error's excerpt of the failing step's last lines is masked too.
		wantLog(t, "out's error", r.err.Error(), append(masked, "output of the failing step", "failing on purpose")...)
		wantLog(t, "out", r.stderr, masked...)
		scan.result(t, "out", r)
	})
	t.Run("out with the classic builder", func(t *testing.T) {
		r := runOut(t, srcDir, map[string]any{"source": src("sec/classic", nil), "params": map[string]any{"build": "classic", "docker_buildkit": 0}})
		if r.err == nil {
			t.Fatalf("out succeeded\n%s", r.stderr)
		}
		keyMasked := []string{"classic-output-visible\n", "key: ***\n", "split: ***\n", "failing on purpose"}
		wantLog(t, "out", r.stderr, append(keyMasked, "Step 3/3 : RUN echo classic-output-visible")...)
		wantLog(t, "out's error", r.err.Error(), append(keyMasked, "output of the failing step")...)
		if n, lines := strings.Count(r.stderr, "key: ***\n"), strings.Count(strings.TrimSpace(string(keyPEM)), "\n")+1; n != lines {
			t.Errorf("%d masked key lines, want %d:\n%s", n, lines, r.stderr)
		}
		scan.result(t, "out", r)
	})
	t.Run("out with a failing push", func(t *testing.T) {
		r := runOut(t, srcDir, map[string]any{"source": src("sec/push", map[string]any{"password": markWrongPW}), "params": params("ok")})
		if r.err == nil {
			t.Fatal("out pushed with a wrong password")
		}
		wantLog(t, "out", r.stderr, masked...)
		scan.result(t, "out", r)
	})
	assertRegistryHolds(t, reg, map[string][]string{"sec/base": {"1"}, "sec/app": {"v1"}})
}

// TestSecretsNeverShowECR: the AWS keys of an ECR repository, exchanged for
// a token by the fake ECR, with debug: true, on success and with a wrong
// secret key.
func TestSecretsNeverShowECR(t *testing.T) {
	e := startECR(t)
	d := e.reg.Push(t, "team/sec:latest", testenv.BusyboxImage(t, testenv.ImageOptions{})).String()
	const wrongSecret = "wrong-awssecret-marker-2f7c"
	scan := &secretScan{markers: []string{ecrSecret, ecrSession, e.reg.Password, wrongSecret}}

	r := runCheck(t, map[string]any{"source": e.source("team/sec", true, nil)}, e.hosts)
	if r.err != nil {
		t.Fatalf("check: %v\n%s", r.err, r.stderr)
	}
	scan.result(t, "check", r)

	dest := t.TempDir()
	r = runIn(t, dest, map[string]any{"source": e.source("team/sec", true, nil), "version": map[string]any{"digest": d}, "params": map[string]any{"save": true}}, e.hosts)
	if r.err != nil {
		t.Fatalf("in: %v\n%s", r.err, r.stderr)
	}
	scan.result(t, "in", r)
	scan.tree(t, "in", dest)

	for _, verb := range []string{"check", "in"} {
		src := e.source("team/sec", true, map[string]any{"aws_secret_access_key": wrongSecret})
		if verb == "check" {
			r = runCheck(t, map[string]any{"source": src}, e.hosts, fastRetry)
		} else {
			r = runIn(t, t.TempDir(), map[string]any{"source": src, "version": map[string]any{"digest": d}}, e.hosts, fastRetry)
		}
		if r.err == nil {
			t.Fatalf("%s succeeded with a wrong secret key", verb)
		}
		scan.result(t, verb+" with a wrong secret key", r)
	}
}
