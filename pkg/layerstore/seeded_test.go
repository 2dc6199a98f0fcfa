package layerstore_test

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/layerstore"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
)

// seedAndStart writes imgs into a fresh data root through daemon.Seed and
// starts dockerd on it.
func seedAndStart(t *testing.T, imgs ...layerstore.Image) *daemon.Daemon {
	t.Helper()
	seed := &daemon.Seed{Driver: layerstore.Driver, Write: func(ctx context.Context, root string) error {
		return layerstore.Write(ctx, root, imgs, layerstore.Options{Log: testLog(t)})
	}}
	return startDaemon(t, dataRoot(t, "seeded"), seed)
}

// TestSeededImageIsDockerds seeds an image of several layers (whiteouts of
// a file and an opaque folder, hardlinks, symlinks, modes, owners, xattrs)
// and starts dockerd on it: the image is there with its ID and layers, a
// container sees the files as the layers say (whiteouts hide the lower
// files), and docker save rebuilds every layer's exact tar from the
// tar-split Write recorded.
func TestSeededImageIsDockerds(t *testing.T) {
	requireDockerd(t)
	img := rich(t)
	d := seedAndStart(t, imageOf(t, "rich", img))
	if !d.Seeded() {
		t.Fatal("Seeded() is false: the seed was not taken")
	}
	if d.StorageDriver() != "overlay2" {
		t.Fatalf("storage driver %s, want overlay2", d.StorageDriver())
	}
	ctx := context.Background()
	cli := d.Client()
	id, _ := img.ConfigName()
	cf, _ := img.ConfigFile()
	ins, err := cli.ImageInspect(ctx, id.String())
	if err != nil {
		t.Fatalf("the seeded image is not in dockerd: %v", err)
	}
	if ins.ID != id.String() {
		t.Errorf("image ID %s, want the config digest %s", ins.ID, id)
	}
	var want []string
	for _, h := range cf.RootFS.DiffIDs {
		want = append(want, h.String())
	}
	if strings.Join(ins.RootFS.Layers, " ") != strings.Join(want, " ") {
		t.Errorf("RootFS layers %v, want %v", ins.RootFS.Layers, want)
	}
	if err := cli.ImageTag(ctx, id.String(), "seeded/rich:1"); err != nil {
		t.Fatal(err)
	}
	out := run(t, cli, "seeded/rich:1", `cat /data/keep.txt /data/link /data/sym /opaque/fresh
test -e /data/gone.txt && echo gone.txt is visible
test -e /opaque/old1 && echo old1 is visible
test -e /opaque/sub && echo sub is visible
test -e /bin/false && echo false is visible
ls -ln /data | grep -v total | while read m n u g rest; do echo "$m $u $g ${rest##* }"; done
ls -la /opaque | wc -l
wc -c < /data/new.txt
cat /implicit/parent/file`)
	wantOut := `kept in the lower layer
kept in the lower layer
kept in the lower layer
only this survives
lrwxrwxrwx 0 0 /etc/passwd
prw------- 0 0 fifo
-rw-r----- 1000 2000 keep.txt
-rw-r----- 1000 2000 link
-rw-r--r-- 0 0 new.txt
---------- 0 0 nomode
drwxrwxrwt 0 0 sticky
-rwsr-xr-x 0 0 suid
lrwxrwxrwx 7 8 keep.txt
4
20000
parents made on the way
`
	if out != wantOut {
		t.Errorf("the container sees\n%s\nwant\n%s", out, wantOut)
	}
	checkSave(t, cli, id.String(), want)
}

// run runs script in a container of image and returns its output.
func run(t *testing.T, cli *client.Client, image, script string) string {
	t.Helper()
	ctx := context.Background()
	c, err := cli.ContainerCreate(ctx, &container.Config{Image: image, Cmd: []string{"sh", "-c", script}},
		&container.HostConfig{NetworkMode: "none"}, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	defer cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
	if err := cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	wait, errc := cli.ContainerWait(ctx, c.ID, container.WaitConditionNotRunning)
	select {
	case <-wait:
	case err := <-errc:
		t.Fatal(err)
	}
	logs, err := cli.ContainerLogs(ctx, c.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	var so, se strings.Builder
	if _, err := stdcopy.StdCopy(&so, &se, logs); err != nil {
		t.Fatal(err)
	}
	if se.Len() > 0 {
		t.Logf("stderr: %s", se.String())
	}
	return so.String()
}

// checkSave saves the image and checks every layer tar hashes to its diff
// ID: dockerd rebuilt it from the tar-split and the diff folder.
func checkSave(t *testing.T, cli *client.Client, id string, diffIDs []string) {
	t.Helper()
	rc, err := cli.ImageSave(context.Background(), []string{id})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	sums := map[string]string{}
	var manifest []struct{ Layers []string }
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading docker save: %v", err)
		}
		if h.Name == "manifest.json" {
			if err := json.NewDecoder(tr).Decode(&manifest); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if strings.HasSuffix(h.Name, "layer.tar") || strings.HasPrefix(h.Name, "blobs/sha256/") {
			s := sha256.New()
			if _, err := io.Copy(s, tr); err != nil {
				t.Fatalf("docker save of %s: %v", h.Name, err)
			}
			sums[h.Name] = "sha256:" + hex.EncodeToString(s.Sum(nil))
		}
	}
	if len(manifest) != 1 || len(manifest[0].Layers) != len(diffIDs) {
		t.Fatalf("docker save's manifest: %+v, want %d layers", manifest, len(diffIDs))
	}
	for i, l := range manifest[0].Layers {
		if sums[l] != diffIDs[i] {
			t.Errorf("docker save's layer %d (%s) hashes to %s, want its diff ID %s", i+1, l, sums[l], diffIDs[i])
		}
	}
}

// TestFailedSeedStartsPlain seeds a layer that does not match its diff ID:
// dockerd starts as without a seed, and has no such image.
func TestFailedSeedStartsPlain(t *testing.T) {
	requireDockerd(t)
	good := rich(t)
	li := imageOf(t, "rich", good)
	li.Layers[0], li.Layers[1] = li.Layers[1], li.Layers[0]
	d := seedAndStart(t, li)
	if d.Seeded() {
		t.Fatal("Seeded() is true after a failed Write")
	}
	id, _ := good.ConfigName()
	if _, err := d.Client().ImageInspect(context.Background(), id.String()); err == nil {
		t.Error("dockerd has the image of a failed seed")
	}
	if imgs, err := d.Client().ImageList(context.Background(), image.ListOptions{All: true}); err != nil || len(imgs) != 0 {
		t.Errorf("dockerd lists %d images (%v), want none", len(imgs), err)
	}
}
