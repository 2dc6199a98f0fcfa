package test

import (
	"archive/tar"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// noPlatform is img with a config that names no os and architecture, as
// crane append and go-containerregistry's mutate make them.
func noPlatform(t *testing.T, img v1.Image) v1.Image {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Variant = "", "", ""
	out, err := mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// passwdNoGroup is a busybox base with /etc/passwd but no /etc/group,
// running as user (by name).
func passwdNoGroup(t *testing.T, user string, seed uint64) v1.Image {
	t.Helper()
	img := testenv.BusyboxImage(t, testenv.ImageOptions{NoPasswd: true, User: user, RandomLayers: []int64{4 << 10}, RandomSeed: seed})
	return testenv.AppendLayers(t, img, testenv.LayerFromFiles(t, []testenv.File{
		{Name: "etc/", Type: tar.TypeDir},
		{Name: "etc/passwd", Content: []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")},
	}, "gzip"))
}

// gzipTo writes src gzip-compressed at dst, as `docker save | gzip` does.
func gzipTo(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	zw := gzip.NewWriter(out)
	if _, err := io.Copy(zw, in); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}

// dockerSave writes img as dockerd's own docker save writes it (a folder per
// layer, manifest.json and the legacy repositories file), tagged tag.
func dockerSave(t *testing.T, img v1.Image, tag, p string) {
	t.Helper()
	d := testenv.StartDockerd(t)
	defer d.Stop()
	d.LoadImage(t, tag, img)
	rc, err := d.Client().ImageSave(t.Context(), []string{tag})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, rc); err != nil {
		t.Fatal(err)
	}
}

// TestPutBaseNames: the names FROM uses point at the images their folders
// name. A cache_from or load_bases docker-save tarball whose own
// manifest.json tags it with the load_base's repository:tag does not take
// that name over (docker load would move the tag to it), under either
// builder; two folders that give one name to different images fail the put,
// before the daemon starts when their files tell the images, after loading
// otherwise. The load_base is deleted from the registry, so FROM can only be
// satisfied by the loaded image.
func TestPutBaseNames(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	srcDir := t.TempDir()
	base := testenv.BusyboxImage(t, testenv.ImageOptions{Labels: map[string]string{"base": "a"}, RandomLayers: []int64{8 << 10}, RandomSeed: 61})
	d := reg.Push(t, "names/a:1", base)
	getOK(t, filepath.Join(srcDir, "a"), map[string]any{"source": source(reg, "names/a", map[string]any{"tag": "1"}), "version": map[string]any{"digest": d.String()}, "params": map[string]any{"save": true}})
	reg.Delete(t, "names/a@"+d.String())
	baseRef := reg.Host + "/names/a:1"

	// Crafted folders: docker-save tarballs of another image whose
	// manifest.json says RepoTags [<the load_base's name>], as oci-build-task
	// lays them out (image.tar and digest, nothing naming the image), plain
	// and gzip-compressed.
	evil := testenv.BusyboxImage(t, testenv.ImageOptions{Labels: map[string]string{"base": "evil"}, RandomLayers: []int64{8 << 10}, RandomSeed: 62})
	testenv.SaveTarball(t, filepath.Join(srcDir, "evil/image.tar"), evil, baseRef)
	os.MkdirAll(filepath.Join(srcDir, "evil-gz"), 0o755)
	gzipTo(t, filepath.Join(srcDir, "evil/image.tar"), filepath.Join(srcDir, "evil-gz/image.tar"))
	testenv.SaveTarball(t, filepath.Join(srcDir, "only/image.tar"), evil, reg.Host+"/names/only:1")
	dockerSave(t, evil, baseRef, filepath.Join(srcDir, "evil-save/image.tar"))
	writeFiles(t, srcDir, map[string]string{
		"evil/digest":         hashOf(t, evil.ConfigName),
		"app/Dockerfile":      "FROM " + baseRef + "\nRUN echo built > /built\n",
		"only-app/Dockerfile": "FROM " + reg.Host + "/names/only:1\nRUN echo built > /built\n",
	})
	put := func(t *testing.T, builder int, params map[string]any) result {
		params["docker_buildkit"] = builder
		return runOut(t, srcDir, map[string]any{"source": source(reg, "names/app", nil), "params": params})
	}

	for _, c := range []struct {
		name   string
		params map[string]any
		// A gzip-compressed folder's blobs cannot be read in place, so the
		// put pushes through the daemon, which compresses the layers again.
		viaDaemon bool
	}{
		{"cache_from tarball tagged with the load_base's name", map[string]any{"load_base": "a", "cache_from": []any{"evil"}}, false},
		{"load_bases: a later tarball tagged with an earlier folder's name", map[string]any{"load_bases": []any{"a", "evil"}}, false},
		{"gzip-compressed tarball in cache_from", map[string]any{"load_base": "a", "cache_from": []any{"evil-gz"}}, true},
		{"docker save output (with a repositories file) in cache_from", map[string]any{"load_base": "a", "cache_from": []any{"evil-save"}}, false},
	} {
		for _, b := range []int{1, 0} {
			t.Run(c.name+map[int]string{0: "/classic", 1: "/buildkit"}[b], func(t *testing.T) {
				params := map[string]any{"build": "app"}
				for k, v := range c.params {
					params[k] = v
				}
				r := put(t, b, params)
				if r.err != nil {
					t.Fatalf("out: %v\n%s", r.err, r.stderr)
				}
				// Built on the load_base's image: its label and its layers.
				if c.viaDaemon {
					checkBuiltOn(t, reg, "names/app:latest", base)
				} else {
					checkOnBase(t, reg, "names/app:latest", base)
				}
			})
		}
	}

	t.Run("a name only a tarball gives is not applied", func(t *testing.T) {
		r := put(t, 1, map[string]any{"build": "only-app", "cache_from": []any{"only"}})
		if r.err == nil {
			t.Fatalf("FROM used the name the cache_from tarball gave itself:\n%s", r.stderr)
		}
		if !strings.Contains(r.err.Error(), "names/only") {
			t.Errorf("err %v, want the FROM image not found", r.err)
		}
		if !strings.Contains(r.stderr, "loaded base image") || !strings.Contains(r.stderr, "without a name") {
			t.Errorf("the log does not say the tarball was loaded without a name:\n%s", r.stderr)
		}
	})

	// Two folders give one name to different images: found from the
	// folders' files before a daemon starts, or once a gzip-compressed
	// tarball is loaded.
	for _, c := range []struct {
		name, param, path string
		loaded            bool
	}{
		{"two folders name one image differently: fails before the daemon", "load_bases", "evil", false},
		{"a gzip-compressed folder's clash is found once loaded", "cache_from", "evil-gz", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := put(t, 1, map[string]any{"build": "app", "load_base": "a",
				c.param: []any{map[string]any{"path": c.path, "repository": reg.Host + "/names/a", "tag": "1"}}})
			want := "params.load_base (a) and params." + c.param + "[0] (" + c.path + ") both name their image " + baseRef + ", but hold different images"
			if r.err == nil || !strings.Contains(r.err.Error(), want) {
				t.Fatalf("err %v\nwant %q\n%s", r.err, want, r.stderr)
			}
			if loaded := strings.Contains(r.stderr, "loaded base image"); loaded != c.loaded {
				t.Errorf("loaded before the clash was found: %v, want %v:\n%s", loaded, c.loaded, r.stderr)
			}
			if !c.loaded && strings.Contains(r.stderr, "dockerd") {
				t.Errorf("a daemon was started for a clash the folders' files show:\n%s", r.stderr)
			}
		})
	}
}

// baseRequests are the registry requests for repo's manifests and blobs.
func baseRequests(reqs []regRequest, repo string) []string {
	var out []string
	for _, r := range reqs {
		if strings.HasPrefix(r.path, "/v2/"+repo+"/manifests/") || strings.HasPrefix(r.path, "/v2/"+repo+"/blobs/") {
			out = append(out, r.method+" "+r.path)
		}
	}
	return out
}

// TestPutBaseWithoutPlatform: a load_base whose config names no os and
// architecture (crane append makes such images) satisfies FROM from the
// loaded image under BuildKit, which on dockerd 20.10 (here) and 26.1 (the
// image test) otherwise goes to the registry for it: it pulled the base
// while the registry had it and failed with "not found" once it was
// deleted. The loaded image gets the build platform (a new config and ID);
// image-id is checked against the folder's own image, the pushed image
// reuses the base's original blobs, and load pushes the folder's image as
// it is.
func TestPutBaseWithoutPlatform(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	srcDir := t.TempDir()
	base := noPlatform(t, testenv.BusyboxImage(t, testenv.ImageOptions{Labels: map[string]string{"base": "np"}, RandomLayers: []int64{8 << 10}, RandomSeed: 71}))
	d := reg.Push(t, "np/base:1", base)
	getOK(t, filepath.Join(srcDir, "np"), map[string]any{"source": source(reg, "np/base", map[string]any{"tag": "1"}), "version": map[string]any{"digest": d.String()}, "params": map[string]any{"save": true}})
	ociBase := noPlatform(t, testenv.BusyboxImage(t, testenv.ImageOptions{MediaType: "oci", Labels: map[string]string{"base": "np-oci"}, RandomLayers: []int64{8 << 10}, RandomSeed: 72}))
	od := reg.Push(t, "np/oci:1", ociBase)
	testenv.OCILayout(t, filepath.Join(srcDir, "np-oci/oci"), ociBase, nil)
	writeFiles(t, srcDir, map[string]string{
		"np-oci/repository": reg.Host + "/np/oci", "np-oci/tag": "1", "np-oci/digest": od.String(),
		"app/Dockerfile":     "FROM " + reg.Host + "/np/base:1\nRUN echo built > /built\n",
		"oci-app/Dockerfile": "FROM " + reg.Host + "/np/oci:1\nRUN echo built > /built\n",
	})
	put := func(t *testing.T, builder int, build, folder string) (result, []string) {
		t.Helper()
		before := len(registryRequests(t, reg))
		r := runOut(t, srcDir, map[string]any{"source": source(reg, "np/app", nil), "params": map[string]any{"build": build, "load_base": folder, "docker_buildkit": builder}})
		if r.err != nil {
			t.Fatalf("out: %v\n%s", r.err, r.stderr)
		}
		reqs := registryRequests(t, reg)[before:]
		return r, append(baseRequests(reqs, "np/base"), baseRequests(reqs, "np/oci")...)
	}
	pushedPlatform := func(t *testing.T) string {
		img, err := remote.Image(reg.Ref(t, "np/app:latest"), reg.RemoteOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		cfg, _ := img.ConfigFile()
		return cfg.OS + "/" + cfg.Architecture
	}
	host := baseimage.HostPlatform()
	filled := "with the build platform " + host.OS + "/" + host.Architecture

	t.Run("in the registry: BuildKit does not pull it", func(t *testing.T) {
		r, reqs := put(t, 1, "app", "np")
		if len(reqs) > 0 {
			t.Errorf("the put asked the registry for the load_base: %v", reqs)
		}
		if !strings.Contains(r.stderr, filled) {
			t.Errorf("the log does not say the base got the build platform:\n%s", r.stderr)
		}
		checkOnBase(t, reg, "np/app:latest", base)
		if p := pushedPlatform(t); p != host.OS+"/"+host.Architecture {
			t.Errorf("pushed image's platform %q", p)
		}
	})

	t.Run("OCI layout folder in the registry: not pulled either", func(t *testing.T) {
		_, reqs := put(t, 1, "oci-app", "np-oci")
		if len(reqs) > 0 {
			t.Errorf("the put asked the registry for the load_base: %v", reqs)
		}
		checkOnBase(t, reg, "np/app:latest", ociBase)
	})

	t.Run("load pushes the folder's image unchanged", func(t *testing.T) {
		resp := putOK(t, srcDir, map[string]any{"source": source(reg, "np/copy", nil), "params": map[string]any{"load": "np"}})
		if resp.Version.Digest != d.String() {
			t.Errorf("load pushed %s, want the base's own manifest %s", resp.Version.Digest, d)
		}
	})

	reg.Delete(t, "np/base@"+d.String())
	for _, b := range []int{1, 0} {
		t.Run("deleted from the registry"+map[int]string{0: "/classic", 1: "/buildkit"}[b], func(t *testing.T) {
			r, _ := put(t, b, "app", "np")
			if got := strings.Contains(r.stderr, filled); got != (b == 1) {
				t.Errorf("builder %d: the log says the base got the build platform: %v, want %v\n%s", b, got, b == 1, r.stderr)
			}
			checkOnBase(t, reg, "np/app:latest", base)
		})
	}
}

// TestPutBaseWithoutGroup: a load_base that runs as a named user and has
// /etc/passwd but no /etc/group. BuildKit (dockerd 20.10 here, 26.1 in the
// image test) fails every RUN as that user with "unable to find groups for
// spec app: invalid argument", the classic builder runs it. The put says so
// before the build starts and what to do; the classic builder and a USER
// given as uid:gid build it.
func TestPutBaseWithoutGroup(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	srcDir := t.TempDir()
	base := passwdNoGroup(t, "app", 81)
	d := reg.Push(t, "ng/base:1", base)
	getOK(t, filepath.Join(srcDir, "ng"), map[string]any{"source": source(reg, "ng/base", map[string]any{"tag": "1"}), "version": map[string]any{"digest": d.String()}, "params": map[string]any{"save": true}})
	reg.Delete(t, "ng/base@"+d.String())
	from := "FROM " + reg.Host + "/ng/base:1\n"
	writeFiles(t, srcDir, map[string]string{
		"app/Dockerfile":     from + "COPY Dockerfile /src/\nRUN id > /tmp/id\n",
		"numeric/Dockerfile": from + "USER 1000:1000\nRUN id > /tmp/id\n",
	})
	put := func(t *testing.T, repo, build string, builder int) result {
		return runOut(t, srcDir, map[string]any{"source": source(reg, repo, nil), "params": map[string]any{"build": build, "load_base": "ng", "docker_buildkit": builder}})
	}

	t.Run("BuildKit: fails before the build, saying why and what to do", func(t *testing.T) {
		r := put(t, "ng/app", "app", 1)
		if r.err == nil {
			t.Fatalf("the put succeeded:\n%s", r.stderr)
		}
		for _, w := range []string{"app/Dockerfile line 3: BuildKit cannot run this RUN step as user \"app\" (set by the base's config)",
			"the base " + reg.Host + "/ng/base:1, from params.load_base (ng), has /etc/passwd but no /etc/group",
			"Add an /etc/group to the base", "USER 1000:1000", "docker_buildkit: 0"} {
			if !strings.Contains(r.err.Error(), w) {
				t.Errorf("err %v\nwant %q", r.err, w)
			}
		}
		if !strings.Contains(r.stderr, "loaded base image "+reg.Host+"/ng/base:1") || strings.Contains(r.stderr, "RUN id >") {
			t.Errorf("the check did not come between the load and the build:\n%s", r.stderr)
		}
		if vs := checkVersions(t, map[string]any{"source": source(reg, "ng/app", nil)}); len(vs) != 0 {
			t.Errorf("pushed %v", vs)
		}
	})

	t.Run("no /etc/passwd, USER by uid: fails before the build too", func(t *testing.T) {
		nop := testenv.BusyboxImage(t, testenv.ImageOptions{NoPasswd: true, User: "1000", RandomLayers: []int64{4 << 10}, RandomSeed: 82})
		d := reg.Push(t, "ng/nopasswd:1", nop)
		getOK(t, filepath.Join(srcDir, "nopasswd"), map[string]any{"source": source(reg, "ng/nopasswd", map[string]any{"tag": "1"}), "version": map[string]any{"digest": d.String()}, "params": map[string]any{"save": true}})
		writeFiles(t, srcDir, map[string]string{"nopasswd-app/Dockerfile": "FROM " + reg.Host + "/ng/nopasswd:1\nRUN id > /tmp/id\n"})
		r := runOut(t, srcDir, map[string]any{"source": source(reg, "ng/nopasswd-app", nil), "params": map[string]any{"build": "nopasswd-app", "load_base": "nopasswd"}})
		want := "nopasswd-app/Dockerfile line 2: BuildKit cannot run this RUN step as user \"1000\" (set by the base's config): the base " + reg.Host + "/ng/nopasswd:1, from params.load_base (nopasswd), has no /etc/passwd"
		if r.err == nil || !strings.Contains(r.err.Error(), want) {
			t.Fatalf("err %v\nwant %q\n%s", r.err, want, r.stderr)
		}
		putOK(t, srcDir, map[string]any{"source": source(reg, "ng/nopasswd-app", nil), "params": map[string]any{"build": "nopasswd-app", "load_base": "nopasswd", "docker_buildkit": 0}})
	})

	t.Run("the classic builder runs it", func(t *testing.T) {
		putOK(t, srcDir, map[string]any{"source": source(reg, "ng/classic", nil), "params": map[string]any{"build": "app", "load_base": "ng", "docker_buildkit": 0}})
		if id, ok := imageFile(t, pushedImage(t, reg, "ng/classic:latest"), "/tmp/id"); !ok || !strings.HasPrefix(id, "uid=1000(app) gid=1000") {
			t.Errorf("/tmp/id %q (%v)", id, ok)
		}
	})

	t.Run("BuildKit with USER uid:gid, as the message says", func(t *testing.T) {
		if r := put(t, "ng/numeric", "numeric", 1); r.err != nil {
			t.Fatalf("out: %v\n%s", r.err, r.stderr)
		}
		if id, ok := imageFile(t, pushedImage(t, reg, "ng/numeric:latest"), "/tmp/id"); !ok || !strings.HasPrefix(id, "uid=1000(app) gid=1000") {
			t.Errorf("/tmp/id %q (%v)", id, ok)
		}
	})
}
