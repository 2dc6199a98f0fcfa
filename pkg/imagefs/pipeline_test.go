package imagefs_test

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/download"
	"github.com/concourse-docker/docker-image-resource/pkg/imagefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The way the in command uses both packages: remote.Image, download.Image,
// then every file from the local image, with the registry gone.
func TestPipelineFromRegistry(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	repo := strings.TrimPrefix(srv.URL, "http://") + "/team/app"
	img := pushLabelledImage(t, repo+":1.10")

	ctx := context.Background()
	work := t.TempDir()
	local := downloadImage(t, ctx, repo+":1.10", filepath.Join(work, "blobs"))
	srv.Close()

	out := filepath.Join(work, "out")
	writeGetFiles(t, ctx, local, repo+":1.10", out)
	checkPipelineMetadata(t, local, filepath.Join(out, "rootfs"))
	checkPipelineInspect(t, img, local, repo)
	checkPipelineSave(t, img, repo+":1.10", filepath.Join(out, "image"))
	ents, _ := os.ReadDir(filepath.Join(out, "rootfs"))
	if len(ents) != 3 { // random.Image: one file per layer
		t.Errorf("rootfs holds %v", ents)
	}
}

// pushLabelledImage pushes a random three-layer image with a label and an
// environment variable to ref.
func pushLabelledImage(t *testing.T, ref string) v1.Image {
	t.Helper()
	img, err := random.Image(10_000, 3)
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Config.Labels = map[string]string{"a": "b"}
	cf.Config.Env = []string{"X=1"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	r, _ := name.ParseReference(ref)
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	return img
}

// downloadImage is the get's fetch: remote.Image, then download.Image into
// dir.
func downloadImage(t *testing.T, ctx context.Context, ref, dir string) v1.Image {
	t.Helper()
	r, _ := name.ParseReference(ref)
	rimg, err := remote.Image(r, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	local, _, err := download.Image(ctx, rimg, download.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return local
}

// writeGetFiles writes image, rootfs/ and rootfs.tar into out.
func writeGetFiles(t *testing.T, ctx context.Context, local v1.Image, repoTag, out string) {
	t.Helper()
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := imagefs.WriteSaveTarball(ctx, local, repoTag, filepath.Join(out, "image")); err != nil {
		t.Fatal(err)
	}
	if err := imagefs.ExtractRootfs(ctx, local, filepath.Join(out, "rootfs"), imagefs.ExtractOptions{Chown: os.Geteuid() == 0}); err != nil {
		t.Fatal(err)
	}
	if err := imagefs.WriteRootfsTar(ctx, local, filepath.Join(out, "rootfs.tar")); err != nil {
		t.Fatal(err)
	}
}

func checkPipelineMetadata(t *testing.T, local v1.Image, rootfs string) {
	t.Helper()
	cfg, err := local.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	md, err := imagefs.ReadMetadata(cfg, rootfs)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(md.Env, ",") != imagefs.DefaultPath+",X=1,HOME=/root" {
		t.Errorf("env %v", md.Env)
	}
}

// checkPipelineInspect: docker_inspect.json of the local image has the
// pushed image's ID and labels.
func checkPipelineInspect(t *testing.T, img, local v1.Image, repo string) {
	t.Helper()
	digest, _ := local.Digest()
	ij, err := imagefs.InspectJSON(local, repo+":1.10", repo+"@"+digest.String())
	if err != nil {
		t.Fatal(err)
	}
	var arr []struct {
		ID     string `json:"Id"`
		Config struct{ Labels map[string]string }
	}
	if err := json.Unmarshal(ij, &arr); err != nil {
		t.Fatal(err)
	}
	cn, _ := img.ConfigName()
	if arr[0].ID != cn.String() || arr[0].Config.Labels["a"] != "b" {
		t.Errorf("inspect: %+v", arr[0])
	}
}

// checkPipelineSave: the docker-save tarball holds the pushed image's
// layers.
func checkPipelineSave(t *testing.T, img v1.Image, repoTag, path string) {
	t.Helper()
	tag, _ := name.NewTag(repoTag)
	back, err := tarball.ImageFromPath(path, &tag)
	if err != nil {
		t.Fatal(err)
	}
	wantLayers, _ := img.Layers()
	gotLayers, _ := back.Layers()
	for i := range wantLayers {
		if a, b := digestOf(t, wantLayers[i]), digestOf(t, gotLayers[i]); a != b {
			t.Errorf("layer %d: %s != %s", i, a, b)
		}
	}
}

func digestOf(t *testing.T, l v1.Layer) v1.Hash {
	t.Helper()
	h, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}
