package imagefs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestWriteSaveTarball(t *testing.T) {
	img := imageOf(t,
		layerOf(t, gzipKind, file("a", "a", 0o644)),
		layerOf(t, zstdKind, file("b", "b", 0o644)),
		layerOf(t, plainKind, file("c", "c", 0o644)),
	)
	for _, repoTag := range []string{"127.0.0.1:5000/base:1", "alpine:3", "registry.example.com/team/app:1.10"} {
		t.Run(repoTag, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "image")
			if err := WriteSaveTarball(context.Background(), img, repoTag, p); err != nil {
				t.Fatal(err)
			}
			files := map[string]string{}
			for _, e := range readTar(t, p) {
				files[e.hdr.Name] = e.body
			}
			var m tarball.Manifest
			if err := json.Unmarshal([]byte(files["manifest.json"]), &m); err != nil {
				t.Fatalf("manifest.json: %v", err)
			}
			if len(m) != 1 {
				t.Fatalf("manifest.json has %d images", len(m))
			}
			cn, _ := img.ConfigName()
			if m[0].Config != cn.String() {
				t.Errorf("Config = %s, want %s", m[0].Config, cn)
			}
			raw, _ := img.RawConfigFile()
			if files[m[0].Config] != string(raw) {
				t.Error("config blob differs")
			}
			if len(m[0].RepoTags) != 1 || m[0].RepoTags[0] != repoTag {
				t.Errorf("RepoTags = %v, want [%s]", m[0].RepoTags, repoTag)
			}
			layers, _ := img.Layers()
			if len(m[0].Layers) != len(layers) {
				t.Fatalf("%d layer files, want %d", len(m[0].Layers), len(layers))
			}
			for i, l := range layers {
				rc, _ := l.Compressed()
				want, _ := io.ReadAll(rc)
				rc.Close()
				if files[m[0].Layers[i]] != string(want) {
					t.Errorf("layer file %s is not the compressed blob", m[0].Layers[i])
				}
			}
			// go-containerregistry reads it back as the same image.
			tag, _ := name.NewTag(repoTag)
			back, err := tarball.ImageFromPath(p, &tag)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := back.ConfigName(); got != cn {
				t.Errorf("read back config %s", got)
			}
			if ents, _ := os.ReadDir(filepath.Dir(p)); len(ents) != 1 {
				t.Errorf("leftovers: %v", ents)
			}
		})
	}
}

func TestWriteSaveTarballFailures(t *testing.T) {
	img := imageOfEntries(t, []ent{file("a", "a", 0o644)})
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WriteSaveTarball(ctx, img, "x:1", filepath.Join(dir, "image")); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if err := WriteSaveTarball(context.Background(), img, "Not A Name", filepath.Join(dir, "image")); err == nil {
		t.Error("bad name accepted")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("failures left %v", ents)
	}

	// No tag: no RepoTags.
	p := filepath.Join(dir, "untagged")
	if err := WriteSaveTarball(context.Background(), img, "", p); err != nil {
		t.Fatal(err)
	}
	for _, e := range readTar(t, p) {
		if e.hdr.Name == "manifest.json" && strings.Contains(e.body, `"RepoTags":[`) {
			t.Errorf("manifest.json: %s", e.body)
		}
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "digest")
	if err := WriteFileAtomic(p, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, p); got != "two" {
		t.Errorf("content %q", got)
	}
	if m := lstat(t, p).Mode(); m != 0o600 {
		t.Errorf("mode %v", m)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "x"), nil, 0o644); err == nil {
		t.Error("write into a missing directory should fail")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("leftovers: %v", ents)
	}
}

const passwd = `root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment
broken line
app:x:1000:1000:App:/home/app:/bin/sh
nohome:x:1001:1001::
`

func rootfsWithPasswd(t *testing.T, content string) string {
	t.Helper()
	r := t.TempDir()
	if err := os.MkdirAll(filepath.Join(r, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r, "etc/passwd"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return r
}

func cfgWith(user string, env ...string) *v1.ConfigFile {
	return &v1.ConfigFile{Config: v1.Config{User: user, Env: env}}
}

func TestReadMetadata(t *testing.T) {
	withPasswd := rootfsWithPasswd(t, passwd)
	noPasswd := t.TempDir()
	cases := []struct {
		name     string
		cfg      *v1.ConfigFile
		rootfs   string
		wantUser string
		wantEnv  []string
	}{
		{"root by default", cfgWith("", "FOO=bar"), withPasswd, "root",
			[]string{DefaultPath, "FOO=bar", "HOME=/root"}},
		{"name", cfgWith("app"), withPasswd, "app", []string{DefaultPath, "HOME=/home/app"}},
		{"uid", cfgWith("1000"), withPasswd, "app", []string{DefaultPath, "HOME=/home/app"}},
		{"name:group", cfgWith("app:staff"), withPasswd, "app", []string{DefaultPath, "HOME=/home/app"}},
		{"uid:gid", cfgWith("1:1"), withPasswd, "daemon", []string{DefaultPath, "HOME=/usr/sbin"}},
		{"no home field", cfgWith("nohome"), withPasswd, "nohome", []string{DefaultPath, "HOME=/"}},
		{"unknown name", cfgWith("nobody"), withPasswd, "", []string{DefaultPath, "HOME=/"}},
		{"unknown uid", cfgWith("4242:4242"), withPasswd, "", []string{DefaultPath, "HOME=/"}},
		{"no passwd", cfgWith(""), noPasswd, "", []string{DefaultPath, "HOME=/root"}},
		{"no passwd uid", cfgWith("1000"), noPasswd, "", []string{DefaultPath, "HOME=/"}},
		{"no passwd root by name", cfgWith("0:0"), noPasswd, "", []string{DefaultPath, "HOME=/root"}},
		{"no rootfs", cfgWith(""), "", "", []string{DefaultPath, "HOME=/root"}},
		{"image env kept", cfgWith("app", "PATH=/custom", "HOSTNAME=abc", "HOME=/data", "A=1", "A=2"), withPasswd, "app",
			[]string{"PATH=/custom", "HOME=/data", "A=2"}},
		{"path not first", cfgWith("", "LANG=C", "PATH=/p"), withPasswd, "root", []string{"PATH=/p", "LANG=C", "HOME=/root"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := ReadMetadata(c.cfg, c.rootfs)
			if err != nil {
				t.Fatal(err)
			}
			if m.User != c.wantUser {
				t.Errorf("user %q, want %q", m.User, c.wantUser)
			}
			if strings.Join(m.Env, "|") != strings.Join(c.wantEnv, "|") {
				t.Errorf("env %q, want %q", m.Env, c.wantEnv)
			}
		})
	}

	// The JSON shape Concourse reads; user left out when unknown.
	b, _ := json.Marshal(Metadata{Env: []string{"A=1"}})
	if string(b) != `{"env":["A=1"]}` {
		t.Errorf("json %s", b)
	}
}

func TestReadMetadataPasswdSymlinks(t *testing.T) {
	sandbox := t.TempDir()
	outside := filepath.Join(sandbox, "outside")
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "passwd"), []byte("evil:x:0:0::/evil:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mk := func(target string, inside map[string]string) string {
		r := filepath.Join(t.TempDir(), "rootfs")
		if err := os.MkdirAll(filepath.Join(r, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		for p, c := range inside {
			if err := os.MkdirAll(filepath.Dir(filepath.Join(r, p)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(r, p), []byte(c), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink(target, filepath.Join(r, "etc/passwd")); err != nil {
			t.Fatal(err)
		}
		return r
	}
	cases := []struct {
		name, target string
		inside       map[string]string
		wantUser     string
	}{
		{"absolute link to outside path", filepath.Join(outside, "passwd"), nil, ""},
		{"relative link climbing out", "../../../../../../../../" + strings.TrimPrefix(outside, "/") + "/passwd", nil, ""},
		{"absolute link resolved in rootfs", "/real/passwd", map[string]string{"real/passwd": "good:x:0:0::/good:/bin/sh\n"}, "good"},
		{"self loop", "passwd", nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := mk(c.target, c.inside)
			m, err := ReadMetadata(cfgWith(""), r)
			if err != nil {
				t.Fatal(err)
			}
			if m.User != c.wantUser {
				t.Errorf("user %q, want %q", m.User, c.wantUser)
			}
			for _, e := range m.Env {
				if strings.Contains(e, "evil") {
					t.Errorf("read the passwd outside rootfs: %v", m.Env)
				}
			}
		})
	}
}

// inspectTestImage is a two-layer image whose config sets every field
// docker_inspect.json shows.
func inspectTestImage(t *testing.T) (v1.Image, *v1.ConfigFile) {
	t.Helper()
	base := imageOfEntries(t, []ent{file("a", "a", 0o644)}, []ent{file("b", "bb", 0o644)})
	cf, err := base.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Variant = "arm64", "linux", "v8"
	cf.Author = "someone"
	cf.Created = v1.Time{Time: time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)}
	cf.Config.Labels = map[string]string{"org.opencontainers.image.source": "https://example.com/x", "version": "1.2"}
	cf.Config.Env = []string{"PATH=/bin", "A=b"}
	cf.Config.Cmd = []string{"/bin/sh", "-c", "true"}
	cf.Config.User = "app"
	cf.Config.ExposedPorts = map[string]struct{}{"8080/tcp": {}}
	img, err := mutate.ConfigFile(base, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img, cf
}

func TestInspectJSON(t *testing.T) {
	img, cf := inspectTestImage(t)
	b, err := InspectJSON(img, "127.0.0.1:5000/app:1", "127.0.0.1:5000/app@sha256:"+strings.Repeat("a", 64))
	if err != nil {
		t.Fatal(err)
	}
	var arr []map[string]any
	if err := json.Unmarshal(b, &arr); err != nil {
		t.Fatalf("not a JSON array: %v\n%s", err, b)
	}
	if len(arr) != 1 {
		t.Fatalf("%d objects", len(arr))
	}
	o := arr[0]
	t.Run("names", func(t *testing.T) { checkInspectNames(t, img, o) })
	t.Run("config", func(t *testing.T) { checkInspectConfig(t, o) })
	t.Run("image", func(t *testing.T) { checkInspectImage(t, img, cf, o) })
}

// checkInspectNames: Id is the config digest, RepoTags and RepoDigests the
// names given.
func checkInspectNames(t *testing.T, img v1.Image, o map[string]any) {
	cn, _ := img.ConfigName()
	if o["Id"] != cn.String() {
		t.Errorf("Id = %v, want %s", o["Id"], cn)
	}
	if tags := o["RepoTags"].([]any); len(tags) != 1 || tags[0] != "127.0.0.1:5000/app:1" {
		t.Errorf("RepoTags = %v", tags)
	}
	if ds := o["RepoDigests"].([]any); len(ds) != 1 || !strings.HasPrefix(ds[0].(string), "127.0.0.1:5000/app@sha256:") {
		t.Errorf("RepoDigests = %v", ds)
	}
}

// checkInspectConfig: Config has the image's values and every key docker
// writes.
func checkInspectConfig(t *testing.T, o map[string]any) {
	config := o["Config"].(map[string]any)
	labels := config["Labels"].(map[string]any)
	if labels["version"] != "1.2" || labels["org.opencontainers.image.source"] != "https://example.com/x" {
		t.Errorf("Labels = %v", labels)
	}
	for _, k := range []string{"Hostname", "Domainname", "AttachStdin", "Tty", "Env", "Cmd", "Image", "Volumes", "WorkingDir", "Entrypoint", "OnBuild", "Labels"} {
		if _, ok := config[k]; !ok {
			t.Errorf("Config lacks %s", k)
		}
	}
	if config["User"] != "app" || len(config["Env"].([]any)) != 2 || config["ExposedPorts"] == nil {
		t.Errorf("Config = %v", config)
	}
}

// checkInspectImage: platform, author, times, layers and size, and the keys
// docker writes that have no value here.
func checkInspectImage(t *testing.T, img v1.Image, cf *v1.ConfigFile, o map[string]any) {
	if o["Architecture"] != "arm64" || o["Os"] != "linux" || o["Variant"] != "v8" || o["Author"] != "someone" {
		t.Errorf("platform/author: %v %v %v %v", o["Architecture"], o["Os"], o["Variant"], o["Author"])
	}
	if o["Created"] != "2024-05-06T07:08:09.123456789Z" {
		t.Errorf("Created = %v", o["Created"])
	}
	rootfs := o["RootFS"].(map[string]any)
	layers := rootfs["Layers"].([]any)
	if rootfs["Type"] != "layers" || len(layers) != 2 || layers[0] != cf.RootFS.DiffIDs[0].String() {
		t.Errorf("RootFS = %v", rootfs)
	}
	m, _ := img.Manifest()
	if int64(o["Size"].(float64)) != m.Layers[0].Size+m.Layers[1].Size {
		t.Errorf("Size = %v", o["Size"])
	}
	if o["Metadata"].(map[string]any)["LastTagTime"] != "0001-01-01T00:00:00Z" {
		t.Errorf("Metadata = %v", o["Metadata"])
	}
	for _, k := range []string{"Parent", "Comment", "Container", "ContainerConfig", "DockerVersion", "VirtualSize", "GraphDriver"} {
		if _, ok := o[k]; !ok {
			t.Errorf("no %s", k)
		}
	}
}

// No digest/tag given: empty lists, not null.
func TestInspectJSONWithoutNames(t *testing.T) {
	img, _ := inspectTestImage(t)
	b, _ := InspectJSON(img, "", "")
	if !bytes.Contains(b, []byte(`"RepoTags": []`)) || !bytes.Contains(b, []byte(`"RepoDigests": []`)) {
		t.Errorf("empty lists: %s", b)
	}
}
