package test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/resource"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

// badCase is one entry of the bad-input corpus (issue 8, part 1). Every case
// must fail with exit 1, an empty stdout, one error message holding every
// want fragment (the field, file or value at fault and what to do), push
// nothing, and leave nothing in DEST that looks like a finished get.
type badCase struct {
	name string
	verb string // check, in, out
	// stdin is the raw request; when empty, req is marshalled instead.
	stdin string
	req   map[string]any
	// args: nil gives in a fresh DEST and out the shared SRC; noArgs none.
	args   []string
	want   []string
	binary bool // run through the built binary (asserts the real exit code)
	daemon bool // fails only once the put's dockerd runs (runOut, locked)
	env    map[string]string
}

var noArgs = []string{}

// mirrorUserinfo is what a registry_mirror with a username or password must
// say: the field, that it is refused, and where mirror credentials go.
var mirrorUserinfo = []string{"source.registry_mirror", "username or password", "not supported", `source.additional_private_registries entry for "mirror.example:5000"`}

// completeLooking are the files of a finished get; a failed one must leave
// none of them.
var completeLooking = []string{"digest", "image", "image-id", "repository", "tag", "metadata.json", "docker_inspect.json", "rootfs", "rootfs.tar"}

func TestBadInput(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	baseDigest := reg.Push(t, "seed/base:1", testenv.BusyboxImage(t, testenv.ImageOptions{})).String()
	digest := baseDigest
	otherCA := testenv.NewCA(t)
	certA, _ := otherCA.Issue(t, "a.example")
	_, keyB := otherCA.Issue(t, "b.example")

	// SRC shared by the put cases; none of them may change it.
	srcDir := t.TempDir()
	writeFiles(t, srcDir, map[string]string{
		"ok/Dockerfile":          "FROM " + reg.Host + "/seed/base:1\nRUN echo should-never-run\n",
		"dfdir/Dockerfile/x":     "a folder named Dockerfile",
		"tags/empty":             "  \n",
		"tags/invalid":           "bad tag!\n",
		"tags/good":              "v1\n",
		"tags/more-invalid":      "ok -bad\n",
		"json/malformed.json":    "{not json",
		"json/nonscalar.json":    `{"A": {"nested": 1}}`,
		"json/list.json":         `["A", "B"]`,
		"nobase/image-id":        "sha256:" + strings.Repeat("1", 64) + "\n",
		"nobase/repository":      reg.Host + "/seed/base\n",
		"nobase/tag":             "1\n",
		"files/not-a-tarball":    "this is plain text, not a tarball\n",
		"files/not-a-save.tar":   "",
		"secrets/token":          "file-secret\n",
		"ctx-only/.dockerignore": "*\n",
	})
	// A real saved base (get with save: true), and broken copies of it.
	getOK(t, filepath.Join(srcDir, "saved"), map[string]any{
		"source": source(reg, "seed/base", map[string]any{"tag": "1"}), "version": map[string]any{"digest": baseDigest},
		"params": map[string]any{"save": true, "rootfs": true},
	})
	copyFilesTo(t, filepath.Join(srcDir, "saved"), filepath.Join(srcDir, "truncated"), "image", "image-id", "repository", "tag")
	img := readFile(t, filepath.Join(srcDir, "saved", "image"))
	writeFiles(t, srcDir, map[string]string{"truncated/image": img[:len(img)/2]})
	copyFilesTo(t, filepath.Join(srcDir, "saved"), filepath.Join(srcDir, "mismatch"), "image", "repository", "tag")
	writeFiles(t, srcDir, map[string]string{"mismatch/image-id": "sha256:" + strings.Repeat("1", 64) + "\n"})
	// An empty tar (two zero blocks) is a tarball but no docker-save one.
	writeFiles(t, srcDir, map[string]string{"files/not-a-save.tar": string(make([]byte, 1024))})
	srcBefore := srcTree(t, srcDir)

	repo := func(n string) string { return reg.Host + "/bad/" + n }
	src := func(extra map[string]any) map[string]any { return source(reg, "bad/app", extra) }
	ver := map[string]any{"digest": digest}
	outReq := func(params map[string]any) map[string]any {
		return map[string]any{"source": src(nil), "params": params}
	}
	build := func(extra map[string]any) map[string]any {
		p := map[string]any{"build": "ok"}
		for k, v := range extra {
			p[k] = v
		}
		return outReq(p)
	}

	cases := []badCase{
		// Requests that are not requests.
		{name: "empty stdin", verb: "check", stdin: " ", want: []string{"no request on stdin", `{"source": {"repository": "..."}}`}, binary: true},
		{name: "empty stdin in", verb: "in", stdin: " ", want: []string{"no request on stdin"}},
		{name: "empty stdin out", verb: "out", stdin: " ", want: []string{"no request on stdin"}, binary: true},
		{name: "malformed JSON", verb: "check", stdin: "{\"source\": {\"repository\": \"x\",\n", want: []string{"malformed request on stdin", "invalid JSON at line 2"}, binary: true},
		{name: "malformed JSON in", verb: "in", stdin: `{"source": {"repository": "x"}, "version": {"digest": "sha256:`, want: []string{"malformed request on stdin", "line 1"}},
		{name: "request is a list", verb: "out", stdin: `[{"source": {}}]`, want: []string{"malformed request on stdin", "expected a JSON object"}},
		{name: "request is null", verb: "check", stdin: `null`, want: []string{"expected a JSON object, got null"}},

		// Unknown keys at every level.
		{name: "unknown source key", verb: "check", req: map[string]any{"source": src(map[string]any{"usrename": "u"})}, want: []string{`unknown source key "usrename"`, `did you mean "username"?`}, binary: true},
		{name: "unknown key in ca_certs", verb: "check", req: map[string]any{"source": src(map[string]any{"ca_certs": []any{map[string]any{"domian": reg.Host, "cert": string(otherCA.CertPEM)}}})}, want: []string{`unknown key "domian" in source.ca_certs[0]`, `did you mean "domain"?`}},
		{name: "unknown key in client_certs", verb: "in", req: map[string]any{"source": src(map[string]any{"client_certs": []any{map[string]any{"domain": reg.Host, "cert": "c", "key": "k", "passphrase": "p"}}}), "version": ver}, want: []string{`unknown key "passphrase" in source.client_certs[0]`, "known keys are: cert, domain, key"}},
		{name: "unknown key in additional_private_registries", verb: "out", req: map[string]any{"source": src(map[string]any{"additional_private_registries": []any{map[string]any{"registry": "r.example", "username": "u", "pasword": "p"}}}), "params": map[string]any{"build": "ok"}}, want: []string{`unknown key "pasword" in source.additional_private_registries[0]`, `did you mean "password"?`}},
		{name: "unknown key in platform", verb: "in", req: map[string]any{"source": src(map[string]any{"platform": map[string]any{"arch": "arm64"}}), "version": ver}, want: []string{`unknown key "arch" in source.platform`, "architecture"}},
		{name: "unknown get param", verb: "in", req: map[string]any{"source": src(nil), "version": ver, "params": map[string]any{"sav": true}}, want: []string{`unknown params key "sav"`, `did you mean "save"?`}},
		{name: "unknown put param", verb: "out", req: build(map[string]any{"tag_fille": "tags/good"}), want: []string{`unknown params key "tag_fille"`, `did you mean "tag_file"?`}, binary: true},
		{name: "unknown key in a secrets entry", verb: "out", req: build(map[string]any{"secrets": map[string]any{"tok": map[string]any{"env": "X", "fiel": "y"}}}), want: []string{`unknown key "fiel" in params.secrets.tok`, "known keys are: env, source, value"}},
		{name: "unknown key in a load_bases entry", verb: "out", req: build(map[string]any{"load_bases": []any{map[string]any{"path": "saved", "tga": "1"}}}), want: []string{"params.load_bases[0]", `unknown entry key "tga"`, `did you mean "tag"?`}},

		// Wrong types.
		{name: "source is a string", verb: "check", stdin: `{"source": "alpine"}`, want: []string{"source: expected an object, got a string"}},
		{name: "max_concurrent_downloads is a word", verb: "in", req: map[string]any{"source": src(map[string]any{"max_concurrent_downloads": "three"}), "version": ver}, want: []string{"source.max_concurrent_downloads: expected a whole number, got a string"}},
		{name: "debug is yes", verb: "check", req: map[string]any{"source": src(map[string]any{"debug": "yes"})}, want: []string{"source.debug: expected true or false, got a string"}},
		{name: "insecure_registries is a string", verb: "check", req: map[string]any{"source": src(map[string]any{"insecure_registries": reg.Host})}, want: []string{"source.insecure_registries: expected a list, got a string"}},
		{name: "skip_download is 0", verb: "in", req: map[string]any{"source": src(nil), "version": ver, "params": map[string]any{"skip_download": 0}}, want: []string{"params.skip_download: expected true or false, got the number 0"}},
		{name: "docker_buildkit is yes", verb: "out", req: build(map[string]any{"docker_buildkit": "yes"}), want: []string{"params.docker_buildkit: expected true, false, 0 or 1, got a string"}},
		{name: "non-scalar build_args value", verb: "out", req: build(map[string]any{"build_args": map[string]any{"A": map[string]any{"x": 1}}}), want: []string{"params.build_args.A: expected a string, number or boolean, got an object"}},
		{name: "list build_args value", verb: "out", req: build(map[string]any{"build_args": map[string]any{"B": []any{1, 2}}}), want: []string{"params.build_args.B: expected a string, number or boolean, got a list"}},
		{name: "non-scalar label", verb: "out", req: build(map[string]any{"labels": map[string]any{"team": []any{"a"}}}), want: []string{"params.labels.team: expected a string, number or boolean, got a list"}},
		{name: "version is a string", verb: "in", req: map[string]any{"source": src(nil), "version": "sha256:x"}, want: []string{"version: expected an object like {\"digest\": \"sha256:...\"}, got a string"}},

		// repository, tag, digest.
		{name: "missing repository", verb: "check", req: map[string]any{"source": map[string]any{"tag": "1"}}, want: []string{"source.repository is required", "registry.example.com:5000/team/app"}, binary: true},
		{name: "missing source", verb: "out", req: map[string]any{"params": map[string]any{"build": "ok"}}, want: []string{"source.repository is required"}},
		{name: "repository with a space", verb: "check", req: map[string]any{"source": map[string]any{"repository": reg.Host + "/my app"}}, want: []string{"source.repository", `"` + reg.Host + `/my app" is not a valid repository`, "lower-case letters, digits and . _ - separators"}},
		{name: "repository with double dots", verb: "in", req: map[string]any{"source": map[string]any{"repository": reg.Host + "/team..app"}, "version": ver}, want: []string{"source.repository", "is not a valid repository"}},
		{name: "repository upper case", verb: "out", req: map[string]any{"source": map[string]any{"repository": reg.Host + "/Team/App"}, "params": map[string]any{"build": "ok"}}, want: []string{"source.repository", "repository names must be lower case"}},
		{name: "repository with a tag", verb: "check", req: map[string]any{"source": map[string]any{"repository": repo("app:1.0")}}, want: []string{"source.repository", "must not contain a tag; put it in source.tag"}},
		{name: "repository with a digest", verb: "in", req: map[string]any{"source": map[string]any{"repository": repo("app@" + digest)}, "version": ver}, want: []string{"source.repository", "must not contain a digest"}},
		{name: "invalid source tag", verb: "check", req: map[string]any{"source": src(map[string]any{"tag": "-1.0"})}, want: []string{`source.tag: "-1.0" is not a valid tag`, "not starting with . or -"}},
		{name: "tag too long", verb: "out", req: map[string]any{"source": src(map[string]any{"tag": strings.Repeat("t", 129)}), "params": map[string]any{"build": "ok"}}, want: []string{"source.tag", "up to 128"}},
		{name: "invalid cache_tag", verb: "out", req: build(map[string]any{"cache": true, "cache_tag": "a/b"}), want: []string{`params.cache_tag: "a/b" is not a valid tag`}},
		{name: "invalid load_tag", verb: "out", req: outReq(map[string]any{"load_file": "saved/image", "load_repository": repo("x"), "load_tag": ".x"}), want: []string{`params.load_tag: ".x" is not a valid tag`}},
		{name: "malformed version.digest in check", verb: "check", req: map[string]any{"source": src(nil), "version": map[string]any{"digest": "sha256:abc"}}, want: []string{`version.digest: "sha256:abc" is not a valid digest`, "64 lower-case hex digits"}},
		{name: "malformed version.digest in in", verb: "in", req: map[string]any{"source": src(nil), "version": map[string]any{"digest": strings.ToUpper(digest)}}, want: []string{"version.digest", "is not a valid digest"}, binary: true},
		{name: "missing version.digest", verb: "in", req: map[string]any{"source": src(nil), "version": map[string]any{}}, want: []string{"version.digest is required", `{"version": {"digest": "sha256:..."}}`}},

		// Arguments.
		{name: "missing DEST", verb: "in", req: map[string]any{"source": src(nil), "version": ver}, args: noArgs, want: []string{"usage: in DEST", "destination folder argument is missing"}, binary: true},
		{name: "missing SRC", verb: "out", req: build(nil), args: noArgs, want: []string{"usage: out SRC", "source folder argument is missing"}, binary: true},
		{name: "DEST is a file", verb: "in", req: map[string]any{"source": src(nil), "version": ver}, args: []string{filepath.Join(srcDir, "tags/good")}, want: []string{"destination " + filepath.Join(srcDir, "tags/good") + " is not a folder"}, binary: true},
		{name: "SRC does not exist", verb: "out", req: build(nil), args: []string{filepath.Join(srcDir, "nope")}, want: []string{"source folder " + filepath.Join(srcDir, "nope") + " does not exist"}},

		// Tags from files.
		{name: "tag_file missing", verb: "out", req: build(map[string]any{"tag_file": "tags/nope"}), want: []string{"params.tag_file", "tag file 'tags/nope' does not exist", "relative to the put's folder"}, binary: true},
		{name: "tag_file empty", verb: "out", req: build(map[string]any{"tag_file": "tags/empty"}), want: []string{"params.tag_file: tag file 'tags/empty' is empty"}},
		{name: "tag_file invalid", verb: "out", req: build(map[string]any{"tag_file": "tags/invalid"}), want: []string{"params.tag_file (tags/invalid)", `"bad tag!" is not a valid tag`}},
		{name: "tag_prefix makes it invalid", verb: "out", req: build(map[string]any{"tag_file": "tags/good", "tag_prefix": "-"}), want: []string{"params.tag_file (tags/good)", `"-v1" is not a valid tag`}},
		{name: "additional_tags missing", verb: "out", req: build(map[string]any{"additional_tags": "tags/nope"}), want: []string{"params.additional_tags", "additional tags file 'tags/nope' does not exist", "relative to the put's folder"}},
		{name: "additional_tags invalid", verb: "out", req: build(map[string]any{"additional_tags": "tags/more-invalid"}), want: []string{"params.additional_tags (tags/more-invalid)", `"-bad" is not a valid tag`}},

		// Image sources.
		{name: "no image source", verb: "out", req: outReq(map[string]any{"tag_file": "tags/good"}), want: []string{"must specify build, load, load_file, import_file, or pull_repository params"}},
		{name: "build missing", verb: "out", req: outReq(map[string]any{"build": "nope"}), want: []string{"params.build: the build context nope is not a folder"}},
		{name: "build is a file", verb: "out", req: outReq(map[string]any{"build": "tags/good"}), want: []string{"params.build: the build context tags/good is not a folder"}},
		{name: "Dockerfile missing from the context", verb: "out", req: outReq(map[string]any{"build": "ctx-only"}), want: []string{"params.build", "has no Dockerfile", "params.dockerfile"}},
		{name: "dockerfile missing", verb: "out", req: build(map[string]any{"dockerfile": "ok/Dockerfile.nope"}), want: []string{"params.dockerfile", "ok/Dockerfile.nope", "does not exist", "relative to the put's folder"}},
		{name: "dockerfile is a directory", verb: "out", req: outReq(map[string]any{"build": "dfdir", "dockerfile": "dfdir/Dockerfile"}), want: []string{"params.dockerfile", "dfdir/Dockerfile", "is a folder"}},
		{name: "build_args_file missing", verb: "out", req: build(map[string]any{"build_args_file": "json/nope.json"}), want: []string{"build_args_file (json/nope.json)", "does not exist", "relative to the put's folder"}},
		{name: "build_args_file malformed", verb: "out", req: build(map[string]any{"build_args_file": "json/malformed.json"}), want: []string{"build_args_file (json/malformed.json)", "expected a JSON object of strings, numbers or booleans"}},
		{name: "build_args_file non-scalar", verb: "out", req: build(map[string]any{"build_args_file": "json/nonscalar.json"}), want: []string{"build_args_file (json/nonscalar.json)", "expected a JSON object of strings, numbers or booleans"}},
		{name: "labels_file missing", verb: "out", req: build(map[string]any{"labels_file": "json/nope.json"}), want: []string{"labels_file (json/nope.json)", "does not exist"}},
		{name: "labels_file a list", verb: "out", req: build(map[string]any{"labels_file": "json/list.json"}), want: []string{"labels_file (json/list.json)", "expected a JSON object of strings, numbers or booleans", "the file holds a JSON array"}},
		{name: "load_base without image", verb: "out", req: build(map[string]any{"load_base": "nobase"}), want: []string{"params.load_base", "nobase", `no "image" file`, "save: true"}},
		{name: "load_base not a folder", verb: "out", req: build(map[string]any{"load_base": "nope"}), want: []string{"params.load_base", "is not a folder", "save: true"}},
		{name: "load folder without image", verb: "out", req: outReq(map[string]any{"load": "nobase"}), want: []string{"params.load", "nobase", "save: true"}},
		{name: "load_file without load_repository", verb: "out", req: outReq(map[string]any{"load_file": "saved/image"}), want: []string{"params.load_file", "must specify load_repository param"}},
		{name: "load_file missing", verb: "out", req: outReq(map[string]any{"load_file": "nope.tar", "load_repository": repo("x")}), want: []string{"params.load_file", "nope.tar does not exist"}},
		{name: "import_file missing", verb: "out", req: outReq(map[string]any{"import_file": "nope.tar"}), want: []string{"params.import_file", "nope.tar does not exist"}},

		// Build secrets.
		{name: "secret with neither value, env nor source", verb: "out", req: build(map[string]any{"secrets": map[string]any{"tok": map[string]any{}}}), want: []string{"params.secrets.tok: set exactly one of value", "value: ((npm_token))", "source", "env"}},
		{name: "secret with both env and source", verb: "out", req: build(map[string]any{"secrets": map[string]any{"tok": map[string]any{"env": "A", "source": "secrets/token"}}}), want: []string{"params.secrets.tok: set exactly one of value"}},
		{name: "secret with both value and source", verb: "out", req: build(map[string]any{"secrets": map[string]any{"tok": map[string]any{"value": "badinput-value-3e8a", "source": "secrets/token"}}}), want: []string{"params.secrets.tok: set exactly one of value"}},
		{name: "secret value that is an object", verb: "out", req: build(map[string]any{"secrets": map[string]any{"tok": map[string]any{"value": map[string]any{"badinput-key-71c0": 1}}}}), want: []string{"params.secrets.tok.value: expected a string, got an object"}},
		{name: "secret from an unset variable", verb: "out", req: build(map[string]any{"secrets": map[string]any{"tok": map[string]any{"env": "BADINPUT_UNSET_VARIABLE"}}}), want: []string{"params.secrets.tok.env", "BADINPUT_UNSET_VARIABLE", "is not set in the put's container", "only BUILD_* variables, ATC_EXTERNAL_URL", "use value: ((var))", "or source:"}},
		{name: "secret from a missing file", verb: "out", req: build(map[string]any{"secrets": map[string]any{"tok": map[string]any{"source": "secrets/nope"}}}), want: []string{"params.secrets.tok.source", "secrets/nope does not exist"}},

		// Certificates, registries, numbers.
		{name: "invalid PEM in ca_certs", verb: "check", req: map[string]any{"source": src(map[string]any{"ca_certs": []any{map[string]any{"domain": reg.Host, "cert": "not a certificate"}}})}, want: []string{"source.ca_certs[0].cert (domain " + reg.Host + ")", "no PEM certificate found", "-----BEGIN CERTIFICATE-----"}, binary: true},
		{name: "corrupt certificate in ca_certs", verb: "out", req: map[string]any{"source": src(map[string]any{"ca_certs": []any{map[string]any{"domain": reg.Host, "cert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}}}), "params": map[string]any{"build": "ok"}}, want: []string{"source.ca_certs[0].cert", "could not be parsed"}},
		{name: "client cert whose key does not match", verb: "check", req: map[string]any{"source": src(map[string]any{"client_certs": []any{map[string]any{"domain": reg.Host, "cert": string(certA), "key": string(keyB)}}})}, want: []string{"source.client_certs[0] (domain " + reg.Host + ")", "the private key does not match the certificate"}},
		{name: "client cert without key", verb: "in", req: map[string]any{"source": src(map[string]any{"client_certs": []any{map[string]any{"domain": reg.Host, "cert": string(certA)}}}), "version": ver}, want: []string{"source.client_certs[0]", "both cert and key are required"}},
		{name: "malformed CIDR in insecure_registries", verb: "check", req: map[string]any{"source": src(map[string]any{"insecure_registries": []any{"10.0.0.0/33"}})}, want: []string{"source.insecure_registries[0]", `"10.0.0.0/33" is not a valid CIDR`}},
		{name: "insecure_registries with a scheme", verb: "out", req: map[string]any{"source": src(map[string]any{"insecure_registries": []any{"http://" + reg.Host}}), "params": map[string]any{"build": "ok"}}, want: []string{"source.insecure_registries[0]", "must be host:port (no scheme)"}},
		{name: "registry_mirror without scheme", verb: "check", req: map[string]any{"source": src(map[string]any{"registry_mirror": "mirror.example:5000"})}, want: []string{"source.registry_mirror", "is not a valid URL", "http://host[:port]"}},
		{name: "registry_mirror password not echoed", verb: "in", req: map[string]any{"source": src(map[string]any{"registry_mirror": "ftp://user:mirror-pw-31337@mirror.example"}), "version": ver}, want: []string{"source.registry_mirror", "is not a valid URL"}},
		// Issue 12, item 2: dockerd refuses userinfo in a mirror URL, check
		// and get ignored it, and the put's debug log printed it.
		{name: "registry_mirror with a password", verb: "check", req: map[string]any{"source": src(map[string]any{"registry_mirror": "https://user:mirror-pw-31337@mirror.example:5000", "debug": true})}, want: mirrorUserinfo, binary: true},
		{name: "registry_mirror with a password in", verb: "in", req: map[string]any{"source": src(map[string]any{"registry_mirror": "http://user:mirror-pw-31337@mirror.example:5000/"}), "version": ver}, want: mirrorUserinfo},
		{name: "registry_mirror with a password out", verb: "out", req: map[string]any{"source": src(map[string]any{"registry_mirror": "https://user:mirror-pw-31337@mirror.example:5000", "debug": true}), "params": map[string]any{"build": "ok"}}, want: mirrorUserinfo},
		{name: "registry_mirror with a token as user", verb: "out", req: map[string]any{"source": src(map[string]any{"registry_mirror": "https://mirror-pw-31337@mirror.example:5000"}), "params": map[string]any{"build": "ok"}}, want: mirrorUserinfo},
		{name: "registry_mirror unparsable with a password", verb: "check", req: map[string]any{"source": src(map[string]any{"registry_mirror": "https://user:mirror-pw-31337@mirror.example:50x0"})}, want: []string{"source.registry_mirror", "is not a valid URL"}},
		{name: "startup_timeout zero", verb: "out", req: map[string]any{"source": src(map[string]any{"startup_timeout": 0}), "params": map[string]any{"build": "ok"}}, want: []string{"source.startup_timeout must be a positive number, got 0"}},
		{name: "max_concurrent_downloads negative", verb: "in", req: map[string]any{"source": src(map[string]any{"max_concurrent_downloads": -2}), "version": ver}, want: []string{"source.max_concurrent_downloads must be a positive number, got -2"}},
		{name: "max_concurrent_uploads zero", verb: "out", req: map[string]any{"source": src(map[string]any{"max_concurrent_uploads": "0"}), "params": map[string]any{"build": "ok"}}, want: []string{"source.max_concurrent_uploads must be a positive number, got 0"}},
		// Issue 12, item 11: numbers that overflowed into nonsense.
		{name: "startup_timeout beyond a day", verb: "check", req: map[string]any{"source": src(map[string]any{"startup_timeout": json.Number("9223372036854775807")})}, want: []string{"source.startup_timeout must be at most 86400 (a day), got 9223372036854775807"}, binary: true},
		{name: "startup_timeout one second beyond a day", verb: "out", req: map[string]any{"source": src(map[string]any{"startup_timeout": 86401}), "params": map[string]any{"build": "ok"}}, want: []string{"source.startup_timeout must be at most 86400 (a day), got 86401"}},
		{name: "startup_timeout beyond a whole number", verb: "out", req: map[string]any{"source": src(map[string]any{"startup_timeout": json.Number("9223372036854775808")}), "params": map[string]any{"build": "ok"}}, want: []string{"source.startup_timeout: the number 9223372036854775808 is too large"}},
		{name: "max_concurrent_downloads huge", verb: "in", req: map[string]any{"source": src(map[string]any{"max_concurrent_downloads": json.Number("9223372036854775807")}), "version": ver}, want: []string{"source.max_concurrent_downloads must be at most 128", "got 9223372036854775807"}},
		{name: "max_concurrent_uploads huge string", verb: "out", req: map[string]any{"source": src(map[string]any{"max_concurrent_uploads": "99999999999999999999"}), "params": map[string]any{"build": "ok"}}, want: []string{"source.max_concurrent_uploads: the number 99999999999999999999 is too large"}},
		{name: "version.digest a number", verb: "check", stdin: `{"source": {"repository": "` + repo("app") + `"}, "version": {"digest": 5}}`, want: []string{"version.digest: expected a string, got the number 5"}, binary: true},
		{name: "version.digest a number in", verb: "in", stdin: `{"source": {"repository": "` + repo("app") + `"}, "version": {"digest": 5}}`, want: []string{"version.digest: expected a string, got the number 5"}},
		{name: "version.digest an object", verb: "in", stdin: `{"source": {"repository": "` + repo("app") + `"}, "version": {"digest": {"sha256": "x"}}}`, want: []string{"version.digest: expected a string, got an object"}},
		{name: "username without password", verb: "check", req: map[string]any{"source": map[string]any{"repository": repo("app"), "username": "u"}}, want: []string{"source.username is set but source.password is empty", "set both, or neither"}},
		{name: "additional registry without password", verb: "in", req: map[string]any{"source": src(map[string]any{"additional_private_registries": []any{map[string]any{"registry": "r.example", "username": "u"}}}), "version": ver}, want: []string{"source.additional_private_registries[0].password is required", "r.example"}},
		{name: "platform variant without architecture", verb: "in", req: map[string]any{"source": src(nil), "version": ver, "params": map[string]any{"platform": map[string]any{"variant": "v7"}}}, want: []string{"params.platform.variant needs params.platform.architecture"}},

		// Broken images: found before the daemon starts, except what only
		// loading can tell.
		{name: "truncated image tarball in load_base", verb: "out", req: build(map[string]any{"load_base": "truncated"}), want: []string{"params.load_base", "truncated/image", "not a readable tarball"}},
		{name: "image-id not matching", verb: "out", req: build(map[string]any{"load_base": "mismatch"}), want: []string{"mismatch", strings.Repeat("1", 12)}, daemon: true},
		{name: "import_file not a tarball", verb: "out", req: outReq(map[string]any{"import_file": "files/not-a-tarball"}), want: []string{"params.import_file", "files/not-a-tarball is not a tarball", "docker import"}},
		{name: "load_file not a docker-save tarball", verb: "out", req: outReq(map[string]any{"load_file": "files/not-a-save.tar", "load_repository": repo("x")}), want: []string{"load_file", "files/not-a-save.tar", "manifest.json"}, daemon: true},
	}

	var bin string
	names := map[string]bool{}
	for _, c := range cases {
		if names[c.name] {
			t.Fatalf("duplicate case name %q", c.name)
		}
		names[c.name] = true
		if c.binary && bin == "" {
			bin = buildBinaries(t)
		}
	}
	t.Logf("%d cases: %d through the built binaries, %d with a daemon", len(cases), countCases(cases, func(c badCase) bool { return c.binary }), countCases(cases, func(c badCase) bool { return c.daemon }))

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			stdin := c.stdin
			if stdin == "" {
				b, err := json.Marshal(c.req)
				if err != nil {
					t.Fatal(err)
				}
				stdin = string(b)
			}
			parent := t.TempDir()
			dest := filepath.Join(parent, "dest")
			args := c.args
			if args == nil {
				switch c.verb {
				case "in":
					args = []string{dest}
				case "out":
					args = []string{srcDir}
				}
			}
			if c.verb == "check" {
				args = nil
			}

			var msg, stdout string
			switch {
			case c.binary:
				cmd := exec.Command(filepath.Join(bin, c.verb), args...)
				cmd.Stdin = strings.NewReader(stdin)
				var out, errb bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &errb
				start := time.Now()
				err := cmd.Run()
				code := 0
				if ee, ok := err.(*exec.ExitError); ok {
					code = ee.ExitCode()
				} else if err != nil {
					t.Fatal(err)
				}
				if code != 1 {
					t.Errorf("exit code %d, want 1", code)
				}
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("bad input took %s to refuse", d)
				}
				stdout, msg = out.String(), errb.String()
				if n := strings.Count(msg, "error:"); n != 1 {
					t.Errorf("stderr holds %d error messages, want 1:\n%s", n, msg)
				}
			case c.verb == "out" && c.daemon:
				var req map[string]any
				if err := json.Unmarshal([]byte(stdin), &req); err != nil {
					t.Fatal(err)
				}
				r := runOut(t, args[0], req)
				if r.err == nil {
					t.Fatalf("out succeeded; stdout %q", r.stdout)
				}
				stdout, msg = r.stdout, r.err.Error()
			default:
				r := runInProcess(t, c.verb, stdin, args)
				if r.err == nil {
					t.Fatalf("%s succeeded; stdout %q\nstderr:\n%s", c.verb, r.stdout, r.stderr)
				}
				stdout, msg = r.stdout, r.err.Error()
				for _, secret := range []string{reg.Password, "mirror-pw-31337", "PRIVATE KEY"} {
					if strings.Contains(r.stderr, secret) {
						t.Errorf("the log shows a secret (%q)", secret)
					}
				}
				if strings.Contains(r.stderr, "error") {
					t.Errorf("the log holds a second error message:\n%s", r.stderr)
				}
			}
			t.Logf("message: %s", msg)
			if stdout != "" {
				t.Errorf("stdout must be empty, got %q", stdout)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message does not contain %q", w)
				}
			}
			for _, secret := range []string{reg.Password, "mirror-pw-31337", "PRIVATE KEY"} {
				if strings.Contains(msg, secret) {
					t.Errorf("message shows a secret (%q)", secret)
				}
			}
			if c.verb == "in" && len(args) == 1 {
				assertNoCompleteGet(t, args[0])
			}
		})
	}

	if got := srcTree(t, srcDir); !slices.Equal(got, srcBefore) {
		t.Errorf("the puts changed SRC:\nbefore %v\nafter  %v", srcBefore, got)
	}
	assertRegistryHolds(t, reg, map[string][]string{"seed/base": {"1"}})
}

// runInProcess runs a verb in-process. A put gets a dockerd that cannot
// start: none of these cases may get that far.
func runInProcess(t *testing.T, verb, stdin string, args []string) result {
	t.Helper()
	cmd := map[string]resource.Command{"check": resource.Check, "in": resource.In, "out": resource.Out}[verb]
	var out, errb bytes.Buffer
	env := resource.Env{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb, Args: append([]string{verb}, args...)}
	env.Hooks.Daemon = func(o *daemon.Options) { o.Isolated = true; o.Binary = "/nonexistent/bad-input-must-not-start-dockerd" }
	env.Hooks.Registry = fastRetry
	err := cmd(t.Context(), env)
	return result{stdout: out.String(), stderr: errb.String(), err: err}
}

// assertNoCompleteGet fails when dest holds a file a finished get writes.
func assertNoCompleteGet(t *testing.T, dest string) {
	t.Helper()
	fi, err := os.Stat(dest)
	if err != nil || !fi.IsDir() {
		return // missing, or the file that was passed as DEST
	}
	for _, n := range completeLooking {
		if _, err := os.Lstat(filepath.Join(dest, n)); err == nil {
			t.Errorf("a failed get left %s in DEST", n)
		}
	}
}

// assertRegistryHolds compares the registry's catalog and tags with want:
// whatever a failed put might have pushed shows up here.
func assertRegistryHolds(t *testing.T, reg *testenv.Registry, want map[string][]string) {
	t.Helper()
	get := func(path string, v any) {
		req, _ := http.NewRequest("GET", reg.URL(path), nil)
		if reg.Username != "" {
			req.SetBasicAuth(reg.Username, reg.Password)
		}
		resp, err := reg.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %s %s", path, resp.Status, b)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	var cat struct{ Repositories []string }
	get("/v2/_catalog", &cat)
	var repos []string
	for r := range want {
		repos = append(repos, r)
	}
	slices.Sort(repos)
	slices.Sort(cat.Repositories)
	if !slices.Equal(cat.Repositories, repos) {
		t.Errorf("registry holds repositories %v, want %v", cat.Repositories, repos)
	}
	for _, r := range cat.Repositories {
		var tags struct{ Tags []string }
		get("/v2/"+r+"/tags/list", &tags)
		slices.Sort(tags.Tags)
		if w, ok := want[r]; ok && !slices.Equal(tags.Tags, w) {
			t.Errorf("registry holds %s tags %v, want %v", r, tags.Tags, w)
		}
	}
}

// treeOf lists every path under dir with its size, for before/after
// comparisons.
func srcTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel+" "+fi.Mode().String()+" "+itoa64(fi.Size()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func itoa64(n int64) string { b, _ := json.Marshal(n); return string(b) }

// copyDir copies the named files of from into to.
func copyFilesTo(t *testing.T, from, to string, names ...string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(from, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func countCases[T any](list []T, f func(T) bool) int {
	n := 0
	for _, x := range list {
		if f(x) {
			n++
		}
	}
	return n
}
