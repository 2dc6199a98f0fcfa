package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/pkg/push"
	"github.com/concourse-docker/docker-image-resource/pkg/registry"
	"github.com/concourse-docker/docker-image-resource/pkg/resource"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/go-units"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// BenchmarkPush compares the push phase of a put after load_base: this
// resource's registry push (pkg/push: base blobs reused, new layers
// compressed once) against the daemon's push (Engine API) of the same image,
// for a ~300 MiB base of real files (/usr/lib) and a ~16 MiB new layer
// (/usr/share). Each round gets a fresh daemon, as every put does: a daemon
// that has pushed once knows the blobs and would skip them the next time.
// Run with
//
//	go test -run '^$' -bench BenchmarkPush -benchtime 1x -timeout 30m ./test/bench/
//
// (BENCH_OUT=file also writes the table there); it prints a table.
func BenchmarkPush(b *testing.B) {
	const mib = 1 << 20
	reg := testenv.StartRegistry(b, testenv.RegistryOptions{})
	// A second registry without the base: nothing to mount from there.
	other := testenv.StartRegistry(b, testenv.RegistryOptions{Username: reg.Username, Password: reg.Password})
	ctx := context.Background()

	base, files := filesBase(b)
	baseDigest := reg.Push(b, "bench/base:1", base)
	baseRaw, baseZip := testenv.HostFilesSize(files), int64(0)
	m, _ := base.Manifest()
	for _, l := range m.Layers {
		baseZip += l.Size
	}

	work := b.TempDir()
	baseDir := filepath.Join(work, "base")
	get(b, reg, baseDir, "bench/base", "1", baseDigest.String())
	ctxDir := filepath.Join(work, "app")
	testenv.CopyHostFiles(b, testenv.HostFiles{Roots: []string{"/usr/share"}, Budget: 16 * mib}.Collect(b), filepath.Join(ctxDir, "files"))
	writeFile(b, filepath.Join(ctxDir, "Dockerfile"), "FROM "+reg.Host+"/bench/base:1\nCOPY files /opt/files\nLABEL bench=push\n")

	rc, err := registry.New(registry.Options{Username: reg.Username, Password: reg.Password})
	if err != nil {
		b.Fatal(err)
	}
	auth := engine.NewRegistryAuth(map[string]engine.Credentials{reg.Host: {Username: reg.Username, Password: reg.Password}})

	type row struct {
		took           []time.Duration
		uploaded       int64
		reused         int64
		lastRes        *push.Result
		daemonUploaded int64
	}
	var daemonRow, mountRow, existRow, otherRow row
	rounds := max(b.N, 3)
	for i := 0; i < rounds; i++ {
		d := testenv.StartDockerd(b)
		cli := d.Client()
		if _, err := engine.LoadBase(ctx, cli, baseDir, nil); err != nil {
			b.Fatal(err)
		}
		built, err := engine.Build(ctx, cli, engine.BuildOptions{ContextDir: ctxDir}, nil)
		if err != nil {
			b.Fatal(err)
		}
		// The put's way (pkg/resource ownLayerStore): the config and new
		// layer are read from the daemon's layer store, not its save stream.
		info, err := cli.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		o := push.Options{Daemon: cli, Registry: rc, Image: built.ID, Repository: reg.Host + fmt.Sprintf("/bench/app-%d", i),
			Tags: []string{"v1"}, Bases: []string{baseDir}, Jobs: 3, LayerStore: &push.LayerStore{Root: d.DataRoot, Driver: info.Driver}}

		// Registry push to a new repository: base blobs are mounted.
		start := time.Now()
		res, err := push.Push(ctx, o)
		if err != nil {
			b.Fatal(err)
		}
		mountRow.took = append(mountRow.took, time.Since(start))
		mountRow.uploaded, mountRow.reused, mountRow.lastRes = res.Uploaded.Bytes, res.Reused().Bytes, res

		// Again, tag v2: the repository has every blob now (the second
		// build of the seed scenario, with base and new layers unchanged).
		o.Tags = []string{"v2"}
		start = time.Now()
		res, err = push.Push(ctx, o)
		if err != nil {
			b.Fatal(err)
		}
		existRow.took = append(existRow.took, time.Since(start))
		existRow.uploaded, existRow.reused = res.Uploaded.Bytes, res.Reused().Bytes

		// To the other registry: the base's original blobs are uploaded as
		// they are, while the daemon streams the image out.
		o.Repository, o.Tags = other.Host+fmt.Sprintf("/bench/app-%d", i), []string{"v1"}
		start = time.Now()
		res, err = push.Push(ctx, o)
		if err != nil {
			b.Fatal(err)
		}
		otherRow.took = append(otherRow.took, time.Since(start))
		otherRow.uploaded, otherRow.reused = res.Uploaded.Bytes, res.Reused().Bytes

		// The daemon's push of the same image, to a repository of its own.
		daemonRepo := reg.Host + fmt.Sprintf("/bench/daemon-%d", i)
		start = time.Now()
		if _, err := engine.Push(ctx, cli, built.ID, daemonRepo, []string{"v1"}, auth, nil); err != nil {
			b.Fatal(err)
		}
		daemonRow.took = append(daemonRow.took, time.Since(start))
		img, err := remote.Image(reg.Ref(b, fmt.Sprintf("bench/daemon-%d:v1", i)), reg.RemoteOptions()...)
		if err != nil {
			b.Fatal(err)
		}
		dm, _ := img.Manifest()
		daemonRow.daemonUploaded = dm.Config.Size
		for _, l := range dm.Layers {
			daemonRow.daemonUploaded += l.Size
		}
		if err := d.Stop(); err != nil {
			b.Fatal(err)
		}
	}

	// What had to travel: the new layer(s) compressed, and the config.
	r := mountRow.lastRes
	pm, err := remote.Image(reg.Ref(b, "bench/app-0:v1"), reg.RemoteOptions()...)
	if err != nil {
		b.Fatal(err)
	}
	pman, _ := pm.Manifest()
	need := pman.Config.Size
	for _, l := range pman.Layers[len(pman.Layers)-r.NewLayers:] {
		need += l.Size
	}

	med := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	hs := func(n int64) string { return units.HumanSize(float64(n)) }
	host, _ := os.Hostname()
	var t strings.Builder
	fmt.Fprintf(&t, "\n# push benchmark (%s, %d cores, %s)\n\n", host, numCPU(), time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&t, "Base: busybox + 3 layers of /usr/lib files, %s uncompressed, %s compressed (gzip). New: one COPY layer of /usr/share files and a LABEL. Median of %d rounds, each on a fresh dockerd.\n\n",
		hs(baseRaw), hs(baseZip), rounds)
	fmt.Fprintf(&t, "| push path | push phase | uploaded | reused |\n|---|---|---|---|\n")
	fmt.Fprintf(&t, "| daemon (Engine API ImagePush), new repository | %s | %s (every layer, recompressed) | - |\n", med(daemonRow.took).Round(10*time.Millisecond), hs(daemonRow.daemonUploaded))
	fmt.Fprintf(&t, "| registry (pkg/push), new repository: base blobs mounted | %s | %s | %s |\n", med(mountRow.took).Round(10*time.Millisecond), hs(mountRow.uploaded), hs(mountRow.reused))
	fmt.Fprintf(&t, "| registry (pkg/push), repository has every blob | %s | %s | %s |\n", med(existRow.took).Round(10*time.Millisecond), hs(existRow.uploaded), hs(existRow.reused))
	fmt.Fprintf(&t, "| registry (pkg/push), another registry without the base: original blobs uploaded | %s | %s | %s |\n", med(otherRow.took).Round(10*time.Millisecond), hs(otherRow.uploaded), hs(otherRow.reused))
	fmt.Fprintf(&t, "\nregistry push, new repository (last round): %s in all = %s before (inspect, bases indexed, daemon's image list) + %s reading the config and new layer from %s (base blobs meanwhile) + %s after it (new layer, config, manifest)\n",
		mountRow.took[len(mountRow.took)-1].Round(10*time.Millisecond), (mountRow.took[len(mountRow.took)-1] - r.Took).Round(10*time.Millisecond),
		r.Save.Round(10*time.Millisecond), r.From, r.Upload.Round(10*time.Millisecond))
	fmt.Fprintf(&t, "speed-up over the daemon push: %.1fx\n", med(daemonRow.took).Seconds()/med(mountRow.took).Seconds())
	fmt.Fprintf(&t, "uploaded %d bytes for new layers + config of %d bytes compressed: %+.2f%% (manifest and request overhead)\n",
		mountRow.uploaded, need, 100*(float64(mountRow.uploaded)/float64(need)-1))
	fmt.Print(t.String())
	if out := os.Getenv("BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(strings.TrimPrefix(t.String(), "\n")), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(med(daemonRow.took).Seconds()/med(mountRow.took).Seconds(), "x-faster")
	b.ReportMetric(100*(float64(mountRow.uploaded)/float64(need)-1), "%-upload-overhead")
}

func writeFile(b *testing.B, path, content string) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		b.Fatal(err)
	}
}

// get runs this resource's get with save: true in-process.
func get(b *testing.B, reg *testenv.Registry, dest, repo, tag, digest string) {
	req, _ := json.Marshal(map[string]any{
		"source":  map[string]any{"repository": reg.Host + "/" + repo, "tag": tag, "username": reg.Username, "password": reg.Password},
		"version": map[string]any{"digest": digest},
		"params":  map[string]any{"save": true},
	})
	var stderr strings.Builder
	env := resource.Env{Stdin: strings.NewReader(string(req)), Stdout: io.Discard, Stderr: &stderr, Args: []string{"in", dest}}
	if err := resource.In(context.Background(), env); err != nil {
		b.Fatalf("get: %v\n%s", err, stderr.String())
	}
}
