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
	ref, _ := name.ParseReference(repo + ":1.10")
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	rimg, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	local, _, err := download.Image(ctx, rimg, download.Options{Dir: filepath.Join(work, "blobs")})
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()

	out := filepath.Join(work, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := imagefs.WriteSaveTarball(ctx, local, repo+":1.10", filepath.Join(out, "image")); err != nil {
		t.Fatal(err)
	}
	if err := imagefs.ExtractRootfs(ctx, local, filepath.Join(out, "rootfs"), imagefs.ExtractOptions{Chown: os.Geteuid() == 0}); err != nil {
		t.Fatal(err)
	}
	if err := imagefs.WriteRootfsTar(ctx, local, filepath.Join(out, "rootfs.tar")); err != nil {
		t.Fatal(err)
	}
	cfg, err := local.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	md, err := imagefs.ReadMetadata(cfg, filepath.Join(out, "rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(md.Env, ",") != imagefs.DefaultPath+",X=1,HOME=/root" {
		t.Errorf("env %v", md.Env)
	}
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

	tag, _ := name.NewTag(repo + ":1.10")
	back, err := tarball.ImageFromPath(filepath.Join(out, "image"), &tag)
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
	ents, _ := os.ReadDir(filepath.Join(out, "rootfs"))
	if len(ents) != 3 { // random.Image: one file per layer
		t.Errorf("rootfs holds %v", ents)
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
