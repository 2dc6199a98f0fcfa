package test

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	"github.com/concourse-docker/docker-image-resource/pkg/resource"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func runIn(t *testing.T, dest string, req map[string]any, hooks ...func(*registry.Options)) result {
	t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return runRaw(t, resource.In, string(b), hooks, dest)
}

func getOK(t *testing.T, dest string, req map[string]any, hooks ...func(*registry.Options)) protocol.Response {
	t.Helper()
	r := runIn(t, dest, req, hooks...)
	if r.err != nil {
		t.Fatalf("in failed: %v\nstderr:\n%s", r.err, r.stderr)
	}
	if testing.Verbose() {
		t.Logf("in's log:\n%s", r.stderr)
	}
	var resp protocol.Response
	if err := json.Unmarshal([]byte(r.stdout), &resp); err != nil {
		t.Fatalf("stdout %q: %v", r.stdout, err)
	}
	return resp
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func TestGetWritesEveryFile(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	img := testenv.BusyboxImage(t, testenv.ImageOptions{
		User: "app", Env: []string{"PATH=/bin", "GREETING=hi"}, Labels: map[string]string{"team": "core"},
		RandomLayers: []int64{1 << 20},
	})
	digest := reg.Push(t, "get/app:1.10", img).String()
	configName, _ := img.ConfigName()
	dest := t.TempDir()

	resp := getOK(t, dest, map[string]any{
		"source":  source(reg, "get/app", map[string]any{"tag": json.Number("1.10")}),
		"version": map[string]any{"digest": digest},
		"params":  map[string]any{"save": true, "rootfs": true},
	})

	if resp.Version.Digest != digest {
		t.Errorf("version %v", resp.Version)
	}
	wantMeta := []protocol.MetadataField{{Name: "repository", Value: reg.Host + "/get/app"}, {Name: "tag", Value: "1.10"}, {Name: "image", Value: configName.Hex[:12]}}
	if got, _ := json.Marshal(resp.Metadata); string(got) != mustJSON(wantMeta) {
		t.Errorf("metadata %s", got)
	}
	if got := listDir(t, dest); strings.Join(got, " ") != "digest docker_inspect.json image image-id metadata.json repository rootfs rootfs.tar tag" {
		t.Errorf("files: %v", got)
	}
	for name, want := range map[string]string{"repository": reg.Host + "/get/app\n", "tag": "1.10\n", "digest": digest + "\n", "image-id": configName.String() + "\n"} {
		if got := readFile(t, filepath.Join(dest, name)); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	var meta struct {
		Env  []string `json:"env"`
		User string   `json:"user"`
	}
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dest, "metadata.json"))), &meta); err != nil {
		t.Fatal(err)
	}
	if meta.User != "app" || !slices.Contains(meta.Env, "GREETING=hi") || !slices.Contains(meta.Env, "PATH=/bin") || !slices.Contains(meta.Env, "HOME=/home/app") {
		t.Errorf("metadata.json %+v", meta)
	}
	var inspect []struct {
		ID     string `json:"Id"`
		Config struct{ Labels map[string]string }
	}
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dest, "docker_inspect.json"))), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("docker_inspect.json: %v %d", err, len(inspect))
	}
	if inspect[0].Config.Labels["team"] != "core" || inspect[0].ID != configName.String() {
		t.Errorf("inspect %+v", inspect[0])
	}
	// rootfs/: busybox runs from it, /data holds the random layer, no dev.
	if fi, err := os.Stat(filepath.Join(dest, "rootfs/bin/busybox")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("rootfs busybox: %v", err)
	}
	if l, err := os.Readlink(filepath.Join(dest, "rootfs/bin/sh")); err != nil || !strings.Contains(l, "busybox") {
		t.Errorf("rootfs sh link %q %v", l, err)
	}
	if fi, err := os.Stat(filepath.Join(dest, "rootfs/data/random-0")); err != nil || fi.Size() != 1<<20 {
		t.Errorf("random layer: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dest, "rootfs/home/app")); err != nil || !ownedBy(fi, 1000) {
		t.Errorf("home/app ownership: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dest, ".download")); !os.IsNotExist(err) {
		t.Errorf("temporary blobs left behind: %v", err)
	}
	// rootfs.tar has the same files.
	names := tarNames(t, filepath.Join(dest, "rootfs.tar"))
	for _, n := range []string{"bin/busybox", "etc/passwd", "data/random-0"} {
		if !names[n] {
			t.Errorf("rootfs.tar lacks %s", n)
		}
	}
	// image: layers kept compressed as the registry stores them.
	layers, _ := img.Layers()
	tarList := tarNames(t, filepath.Join(dest, "image"))
	for _, l := range layers {
		d, _ := l.Digest()
		if !tarList[d.Hex+".tar.gz"] && !tarList["blobs/sha256/"+d.Hex] && !tarList[d.String()] && !hasPrefixKey(tarList, d.Hex) {
			t.Errorf("image tarball lacks compressed layer %s: %v", d, tarList)
		}
	}
}

func TestGetImageLoadsIntoDocker(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	digest := reg.Push(t, "get/load:latest", testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{256 << 10}})).String()
	dest := t.TempDir()
	getOK(t, dest, map[string]any{"source": source(reg, "get/load", nil), "version": map[string]any{"digest": digest}, "params": map[string]any{"save": true}})

	d := testenv.StartDockerd(t)
	f, err := os.Open(filepath.Join(dest, "image"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx := t.Context()
	resp, err := d.Client().ImageLoad(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := testenv.ReadJSONStream(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("docker load: %v", err)
	}
	t.Logf("docker load: %+v", msgs)
	ins, err := d.Client().ImageInspect(ctx, reg.Host+"/get/load:latest")
	if err != nil {
		t.Fatalf("loaded image is not tagged %s/get/load:latest: %v", reg.Host, err)
	}
	if want := strings.TrimSpace(readFile(t, filepath.Join(dest, "image-id"))); ins.ID != want {
		t.Errorf("docker load gave %s, image-id says %s", ins.ID, want)
	}
}

func TestGetRootfsFidelity(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	base := testenv.BusyboxImage(t, testenv.ImageOptions{})
	lower := testenv.LayerFromFiles(t, []testenv.File{
		{Name: "app/", Type: tar.TypeDir},
		{Name: "app/gone.txt", Content: []byte("deleted above")},
		{Name: "app/opaque/", Type: tar.TypeDir},
		{Name: "app/opaque/old.txt", Content: []byte("hidden by opaque")},
		{Name: "app/data.txt", Content: []byte("linked"), Mode: 0o640},
		{Name: "app/setuid", Content: []byte("x"), Mode: 0o4755},
		{Name: "app/private.txt", Content: []byte("x"), Mode: 0o600, Uid: 1000, Gid: 1000},
	}, "gzip")
	upper := testenv.LayerFromFiles(t, []testenv.File{
		{Name: "app/.wh.gone.txt"},
		{Name: "app/opaque/.wh..wh..opq"},
		{Name: "app/opaque/new.txt", Content: []byte("kept")},
		{Name: "app/hard", Type: tar.TypeLink, Linkname: "app/data.txt"},
		{Name: "app/link", Type: tar.TypeSymlink, Linkname: "data.txt"},
		{Name: "app/null", Type: tar.TypeChar, Devmajor: 1, Devminor: 3},
		{Name: "dev/", Type: tar.TypeDir},
		{Name: "dev/console", Content: []byte("no dev in rootfs")},
	}, "zstd")
	img := testenv.AppendLayers(t, base, lower, upper)
	digest := reg.Push(t, "get/fidelity:latest", img).String()
	dest := t.TempDir()
	getOK(t, dest, map[string]any{"source": source(reg, "get/fidelity", nil), "version": map[string]any{"digest": digest}})

	root := filepath.Join(dest, "rootfs")
	for _, gone := range []string{"app/gone.txt", "app/opaque/old.txt", "app/null", "dev"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); !os.IsNotExist(err) {
			t.Errorf("%s should not exist: %v", gone, err)
		}
	}
	if got := readFile(t, filepath.Join(root, "app/opaque/new.txt")); got != "kept" {
		t.Errorf("opaque dir lost this layer's file: %q", got)
	}
	a, _ := os.Stat(filepath.Join(root, "app/data.txt"))
	b, _ := os.Stat(filepath.Join(root, "app/hard"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Error("hardlink not kept")
	}
	if fi, _ := os.Stat(filepath.Join(root, "app/private.txt")); fi == nil || fi.Mode().Perm() != 0o600 || !ownedBy(fi, 1000) {
		t.Errorf("mode or owner of app/private.txt lost: %v", fi)
	}
	if l, _ := os.Readlink(filepath.Join(root, "app/link")); l != "data.txt" {
		t.Errorf("symlink %q", l)
	}
	if fi, _ := os.Stat(filepath.Join(root, "app/setuid")); fi == nil || fi.Mode()&os.ModeSetuid == 0 {
		t.Error("setuid bit lost")
	}
}

func TestGetRefusesEscapes(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	parent := t.TempDir()
	dest := filepath.Join(parent, "dest")
	for i, files := range [][]testenv.File{
		{{Name: "../escaped.txt", Content: []byte("out")}},
		{{Name: "evil", Type: tar.TypeSymlink, Linkname: parent}, {Name: "evil/escaped.txt", Content: []byte("out")}},
		{{Name: "hard", Type: tar.TypeLink, Linkname: "../../etc/passwd"}},
	} {
		img := testenv.AppendLayers(t, testenv.BusyboxImage(t, testenv.ImageOptions{}), testenv.LayerFromFiles(t, files, "gzip"))
		digest := reg.Push(t, "get/evil:latest", img).String()
		r := runIn(t, dest, map[string]any{"source": source(reg, "get/evil", nil), "version": map[string]any{"digest": digest}})
		if _, err := os.Lstat(filepath.Join(parent, "escaped.txt")); err == nil {
			t.Fatalf("case %d wrote outside DEST", i)
		}
		if r.err == nil {
			// Contained instead of refused: then it must be inside rootfs/.
			if i == 1 {
				if _, err := os.Stat(filepath.Join(dest, "rootfs", parent, "escaped.txt")); err != nil {
					t.Errorf("case %d: succeeded but the file is not contained in rootfs: %v", i, err)
				}
			} else {
				t.Errorf("case %d: hostile layer accepted", i)
			}
		} else {
			t.Logf("case %d refused: %v", i, r.err)
			if _, err := os.Stat(filepath.Join(dest, "image-id")); err == nil {
				t.Errorf("case %d: failed get left image-id behind", i)
			}
		}
		os.RemoveAll(dest)
	}
}

func TestGetMetadataUsers(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	for _, c := range []struct {
		name    string
		opts    testenv.ImageOptions
		user    string
		home    string
		hasPath bool
	}{
		{"numeric user", testenv.ImageOptions{User: "1000:1000"}, "app", "HOME=/home/app", true},
		{"root by default", testenv.ImageOptions{}, "root", "HOME=/root", true},
		{"no passwd", testenv.ImageOptions{NoPasswd: true, User: "1234"}, "", "HOME=/", true},
		{"no PATH in image", testenv.ImageOptions{Env: []string{"A=b"}}, "root", "HOME=/root", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			digest := reg.Push(t, "get/meta:latest", testenv.BusyboxImage(t, c.opts)).String()
			dest := t.TempDir()
			getOK(t, dest, map[string]any{"source": source(reg, "get/meta", nil), "version": map[string]any{"digest": digest}})
			var meta struct {
				Env  []string `json:"env"`
				User *string  `json:"user"`
			}
			raw := readFile(t, filepath.Join(dest, "metadata.json"))
			if err := json.Unmarshal([]byte(raw), &meta); err != nil {
				t.Fatal(err)
			}
			user := ""
			if meta.User != nil {
				user = *meta.User
			}
			if user != c.user || !slices.Contains(meta.Env, c.home) || !hasPrefix(meta.Env, "PATH=") {
				t.Errorf("metadata.json %s", raw)
			}
			if c.user == "" && strings.Contains(raw, `"user"`) {
				t.Errorf("unresolvable user must be left out: %s", raw)
			}
		})
	}
}

func TestGetSkipDownloadMakesNoRequest(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	proxy := testenv.StartFaultProxy(t, reg.Host)
	dest := t.TempDir()
	digest := "sha256:" + strings.Repeat("ab", 32)
	resp := getOK(t, dest, map[string]any{
		"source":  map[string]any{"repository": proxy.Host + "/get/skip", "tag": "v1"},
		"version": map[string]any{"digest": digest},
		"params":  map[string]any{"skip_download": true},
	})
	if proxy.Requests() != 0 {
		t.Errorf("skip_download sent %d requests", proxy.Requests())
	}
	if got := listDir(t, dest); strings.Join(got, " ") != "digest repository tag" {
		t.Errorf("files %v", got)
	}
	if resp.Version.Digest != digest || len(resp.Metadata) != 2 {
		t.Errorf("response %+v", resp)
	}
}

func TestGetPlatformSelection(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	plats := []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}, {OS: "linux", Architecture: "arm", Variant: "v7"}}
	digest := reg.PushIndex(t, "get/multi:latest", testenv.MultiPlatformIndex(t, plats, testenv.ImageOptions{})).String()
	label := func(dest string) string {
		var inspect []struct {
			Config struct{ Labels map[string]string }
		}
		if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dest, "docker_inspect.json"))), &inspect); err != nil {
			t.Fatal(err)
		}
		return inspect[0].Config.Labels["platform"]
	}
	req := func(src, params map[string]any) map[string]any {
		s := source(reg, "get/multi", src)
		return map[string]any{"source": s, "version": map[string]any{"digest": digest}, "params": params}
	}
	t.Run("default is linux and our architecture", func(t *testing.T) {
		dest := t.TempDir()
		getOK(t, dest, req(nil, nil))
		if got := label(dest); !strings.HasPrefix(got, "linux/"+runtime.GOARCH) {
			t.Errorf("picked %s", got)
		}
	})
	t.Run("source.platform", func(t *testing.T) {
		dest := t.TempDir()
		getOK(t, dest, req(map[string]any{"platform": map[string]any{"architecture": "arm", "variant": "v7"}}, nil))
		if got := label(dest); got != "linux/arm/v7" {
			t.Errorf("picked %s", got)
		}
	})
	t.Run("params.platform overrides source", func(t *testing.T) {
		dest := t.TempDir()
		getOK(t, dest, req(map[string]any{"platform": map[string]any{"architecture": "arm"}}, map[string]any{"platform": map[string]any{"architecture": "arm64"}}))
		if got := label(dest); got != "linux/arm64/v8" {
			t.Errorf("picked %s", got)
		}
	})
	t.Run("missing platform lists the available ones", func(t *testing.T) {
		r := runIn(t, t.TempDir(), req(nil, map[string]any{"platform": map[string]any{"os": "windows", "architecture": "amd64"}}))
		if r.err == nil || !strings.Contains(r.err.Error(), "no windows/amd64 variant; it has: linux/amd64, linux/arm/v7, linux/arm64/v8") {
			t.Errorf("err %v", r.err)
		}
	})
}

func TestGetErrors(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	digest := reg.Push(t, "get/err:latest", testenv.BusyboxImage(t, testenv.ImageOptions{})).String()
	missing := "sha256:" + strings.Repeat("0", 64)
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	for _, c := range []struct {
		name string
		dest string
		req  map[string]any
		want string
	}{
		{"no digest", t.TempDir(), map[string]any{"source": source(reg, "get/err", nil)}, "version.digest is required"},
		{"digest not found", t.TempDir(), map[string]any{"source": source(reg, "get/err", nil), "version": map[string]any{"digest": missing}}, "image " + reg.Host + "/get/err@" + missing + " not found"},
		{"DEST is a file", file, map[string]any{"source": source(reg, "get/err", nil), "version": map[string]any{"digest": digest}}, "is not a folder"},
		{"wrong password", t.TempDir(), map[string]any{"source": source(reg, "get/err", map[string]any{"password": "wrong-pw-123"}), "version": map[string]any{"digest": digest}}, "refused the credentials"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := runIn(t, c.dest, c.req, fastRetry)
			if r.err == nil || !strings.Contains(r.err.Error(), c.want) {
				t.Fatalf("err %v, want %q", r.err, c.want)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q", r.stdout)
			}
			if strings.Contains(r.err.Error()+r.stderr, "wrong-pw-123") {
				t.Error("password leaked")
			}
		})
	}
}

func hasPrefix(list []string, p string) bool {
	for _, x := range list {
		if strings.HasPrefix(x, p) {
			return true
		}
	}
	return false
}

func hasPrefixKey(m map[string]bool, p string) bool {
	for k := range m {
		if strings.Contains(k, p) {
			return true
		}
	}
	return false
}

func tarNames(t *testing.T, path string) map[string]bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		names[strings.TrimPrefix(h.Name, "./")] = true
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func ownedBy(fi os.FileInfo, uid uint32) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == uid
}
