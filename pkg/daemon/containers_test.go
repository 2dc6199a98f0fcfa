package daemon_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const busyboxTag = "daemon-test/busybox:1"

// loadBusybox loads a small busybox image into the daemon.
func loadBusybox(t *testing.T, ctx context.Context, cli *client.Client) {
	t.Helper()
	ref, err := name.NewTag(busyboxTag)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := tarball.Write(ref, testenv.BusyboxImage(t, testenv.ImageOptions{}), &buf); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.ImageLoad(ctx, &buf, client.ImageLoadWithQuiet(true))
	if err != nil {
		t.Fatalf("loading busybox: %v", err)
	}
	defer resp.Body.Close()
	if _, err := testenv.ReadJSONStream(resp.Body); err != nil {
		t.Fatalf("loading busybox: %v", err)
	}
}

// runSleeper loads busybox and starts a container that sleeps; it returns
// the container's ID and process ID.
func runSleeper(t *testing.T, ctx context.Context, cli *client.Client) (id string, pid int) {
	t.Helper()
	loadBusybox(t, ctx, cli)
	c, err := cli.ContainerCreate(ctx, &container.Config{Image: busyboxTag, Cmd: []string{"busybox", "sleep", "600"}},
		&container.HostConfig{NetworkMode: "none"}, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	ins, err := cli.ContainerInspect(ctx, c.ID)
	if err != nil || !ins.State.Running {
		t.Fatalf("container not running: %v %+v", err, ins.State)
	}
	return c.ID, ins.State.Pid
}

// A container still running at Stop is killed, its cgroups removed, and
// runc's and the shim's traces stay out of the host.
func TestRunningContainerKilledOnStop(t *testing.T) {
	requireDockerd(t)
	unlock := testenv.LockDockerd(t)
	defer unlock()
	before := hostSnapshot(t)
	delete(before, "mounts")
	ctx := context.Background()
	log, _ := testLog(t)
	d, err := daemon.Start(ctx, daemon.Options{Isolated: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop(context.Background())
	id, pid := runSleeper(t, ctx, d.Client())
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if !strings.Contains(string(cg), d.CgroupParent()+"/"+id) {
		t.Errorf("container cgroups not under %s:\n%s", d.CgroupParent(), cg)
	}
	during := hostSnapshot(t)
	delete(during, "mounts")
	delete(during, "cgroups") // the container's own, checked gone below
	delete(before, "cgroups")
	compareSnapshots(t, before, during)

	dir, nsID, parent := d.StateDir(), d.NamespaceID(), d.CgroupParent()
	t0 := time.Now()
	if err := d.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("Stop with a running container took %s", time.Since(t0))
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(st), ") Z ") {
		t.Errorf("container process %d still running", pid)
	}
	checkGone(t, dir, nsID, parent)
	after := hostSnapshot(t)
	delete(after, "mounts")
	delete(after, "cgroups")
	compareSnapshots(t, before, after)
}

// Production networking (default bridge, iptables) gives containers a
// network with the default route's MTU. It runs in a throwaway network
// namespace so the host keeps no bridge and no rules.
func TestProductionNetworking(t *testing.T) {
	requireDockerd(t)
	unlock := testenv.LockDockerd(t)
	defer unlock()
	before := hostSnapshot(t)
	delete(before, "mounts")
	delete(before, "cgroups")
	ctx := context.Background()
	log, _ := testLog(t)
	d, err := daemon.Start(ctx, daemon.Options{Log: log, PrivateNetwork: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop(context.Background())
	cli := d.Client()
	loadBusybox(t, ctx, cli)
	_, wantMTU, mtuErr := daemon.DefaultRouteMTU("/proc/net/route", "/sys/class/net")
	script := "cat /sys/class/net/eth0/mtu && busybox ping -c 1 -W 5 172.17.0.1"
	c, err := cli.ContainerCreate(ctx, &container.Config{Image: busyboxTag, Cmd: []string{"sh", "-c", script}}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	waitC, errC := cli.ContainerWait(wctx, c.ID, container.WaitConditionNotRunning)
	var code int64
	select {
	case r := <-waitC:
		code = r.StatusCode
	case err := <-errC:
		t.Fatalf("waiting for the container: %v", err)
	}
	logs, err := cli.ContainerLogs(ctx, c.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	_, _ = stdcopy.StdCopy(&out, &out, logs)
	logs.Close()
	t.Logf("container output (exit %d):\n%s", code, out.String())
	if code != 0 {
		t.Fatalf("container on the default bridge failed (exit %d)", code)
	}
	if mtuErr == nil && !strings.HasPrefix(out.String(), fmt.Sprintf("%d\n", wantMTU)) {
		t.Errorf("container MTU is not the default route's %d", wantMTU)
	}
	if err := d.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	after := hostSnapshot(t)
	delete(after, "mounts")
	delete(after, "cgroups")
	compareSnapshots(t, before, after)
}
