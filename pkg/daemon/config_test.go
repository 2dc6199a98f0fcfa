package daemon

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/certs"
)

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDefaultRouteMTU(t *testing.T) {
	const header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
	cases := []struct {
		name, routes string
		mtus         map[string]string
		iface        string
		mtu          int
		wantErr      string
	}{
		{
			name: "one default route",
			routes: header +
				"eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n" +
				"eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
			mtus:  map[string]string{"eth0": "1400\n"},
			iface: "eth0", mtu: 1400,
		},
		{
			name: "lowest metric wins, down routes and non-default masks ignored",
			routes: header +
				"wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n" +
				"tun0\t00000000\t00000000\t0000\t0\t0\t0\t00000000\t0\t0\t0\n" +
				"eth1\t00000000\t0101A8C0\t0003\t0\t0\t5\t000000FF\t0\t0\t0\n" +
				"eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n",
			mtus:  map[string]string{"eth0": "1450", "wlan0": "1500"},
			iface: "eth0", mtu: 1450,
		},
		{
			name:    "no default route",
			routes:  header + "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
			wantErr: "no default route",
		},
		{
			name:    "interface without mtu file",
			routes:  header + "eth9\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
			wantErr: "reading MTU of eth9",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTestFile(t, filepath.Join(dir, "route"), c.routes)
			for ifc, m := range c.mtus {
				writeTestFile(t, filepath.Join(dir, "net", ifc, "mtu"), m)
			}
			iface, mtu, err := defaultRouteMTU(filepath.Join(dir, "route"), filepath.Join(dir, "net"))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil || iface != c.iface || mtu != c.mtu {
				t.Fatalf("got %q %d %v, want %q %d", iface, mtu, err, c.iface, c.mtu)
			}
		})
	}
	if _, _, err := defaultRouteMTU("/nonexistent/route", "/nonexistent"); err == nil {
		t.Fatal("missing route file: no error")
	}
}

func TestDaemonConfig(t *testing.T) {
	decode := func(withKeyPath bool) map[string]any {
		t.Helper()
		b, err := daemonConfig("/tmp/dkd-1/key.json", withKeyPath, false)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	snap := map[string]any{"containerd-snapshotter": false}
	if got, want := decode(true), map[string]any{"deprecated-key-path": "/tmp/dkd-1/key.json", "features": snap}; !reflect.DeepEqual(got, want) {
		t.Errorf("config = %v, want %v", got, want)
	}
	if got, want := decode(false), map[string]any{"features": snap}; !reflect.DeepEqual(got, want) {
		t.Errorf("config without key path = %v, want %v", got, want)
	}
	rejected := "unable to configure the Docker daemon with file /tmp/dkd-1/daemon.json: the following directives don't match any configuration option: deprecated-key-path"
	if !rejectsKeyPath("some line\n" + rejected + "\n") {
		t.Error("rejection not recognised")
	}
	if rejectsKeyPath("the following directives don't match any configuration option: bogus") || rejectsKeyPath("deprecated-key-path: loaded") {
		t.Error("other messages taken for the rejection")
	}
}

func TestFlagArgs(t *testing.T) {
	got := flagArgs(Options{
		MaxConcurrentDownloads: 3, MaxConcurrentUploads: 4,
		InsecureRegistries: []string{"a.example:5000", "10.0.0.0/8"},
		RegistryMirror:     "https://mirror.example",
	}, 1400)
	want := []string{"--mtu", "1400", "--max-concurrent-downloads", "3", "--max-concurrent-uploads", "4",
		"--insecure-registry", "a.example:5000", "--insecure-registry", "10.0.0.0/8",
		"--registry-mirror", "https://mirror.example"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("flagArgs = %q\nwant %q", got, want)
	}
	if got := flagArgs(Options{}, 0); len(got) != 0 {
		t.Errorf("zero options give flags %q", got)
	}
	if got := flagArgs(Options{Isolated: true}, 0); !reflect.DeepEqual(got, isolatedArgs) {
		t.Errorf("isolated flags = %q", got)
	}
}

// TestCommandLineMasksUserinfo: the debug log's dockerd command line never
// shows a URL's username or password, whatever got past validation.
func TestCommandLineMasksUserinfo(t *testing.T) {
	args := flagArgs(Options{RegistryMirror: "https://user:hunter22@mirror.example:5000", InsecureRegistries: []string{"tok@a.example:5000"}}, 0)
	got := commandLine("/usr/bin/dockerd", append([]string{"--data-root", "/scratch/docker"}, args...))
	want := "/usr/bin/dockerd --data-root /scratch/docker --insecure-registry xxxxx@a.example:5000 --registry-mirror https://xxxxx@mirror.example:5000"
	if got != want {
		t.Errorf("commandLine = %q\nwant %q", got, want)
	}
	if strings.Contains(got, "hunter22") || strings.Contains(got, "user") || strings.Contains(got, "tok@") {
		t.Errorf("commandLine shows userinfo: %q", got)
	}
}

func TestWriteCerts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs.d")
	err := writeCerts(dir,
		[]certs.CA{{Domain: "reg.example:5000", Cert: "CA1"}, {Domain: "reg.example:5000", Cert: "CA2\n"}, {Domain: "other.example", Cert: "CA3"}},
		[]certs.ClientCert{{Domain: "reg.example:5000", Cert: "C1", Key: "K1"}, {Domain: "reg.example:5000", Cert: "C2", Key: "K2"}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"reg.example:5000/ca.crt":        "CA1\nCA2\n",
		"reg.example:5000/client.cert":   "C1\n",
		"reg.example:5000/client.key":    "K1\n",
		"reg.example:5000/client-1.cert": "C2\n",
		"reg.example:5000/client-1.key":  "K2\n",
		"other.example/ca.crt":           "CA3\n",
	}
	got := map[string]string{}
	_ = filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(dir, p)
			got[rel] = string(b)
			if strings.HasSuffix(p, ".key") {
				if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
					t.Errorf("%s mode %v, want 0600", rel, fi.Mode().Perm())
				}
			}
		}
		return nil
	})
	if !reflect.DeepEqual(got, want) {
		t.Errorf("certs.d = %v\nwant %v", got, want)
	}
	for _, bad := range []string{"", "..", "a/b", "../etc"} {
		if err := writeCerts(filepath.Join(t.TempDir(), "c"), []certs.CA{{Domain: bad, Cert: "x"}}, nil); err == nil {
			t.Errorf("domain %q accepted", bad)
		}
		if err := writeCerts(filepath.Join(t.TempDir(), "c"), nil, []certs.ClientCert{{Domain: bad, Cert: "x", Key: "y"}}); err == nil {
			t.Errorf("client cert domain %q accepted", bad)
		}
	}
}

func TestChooseDataRoot(t *testing.T) {
	t.Run("no scratch: in the state folder, removed on stop", func(t *testing.T) {
		state := t.TempDir()
		dr, err := chooseDataRoot(filepath.Join(t.TempDir(), "scratch"), state)
		if err != nil {
			t.Fatal(err)
		}
		if dr.path != filepath.Join(state, "data") || !dr.owned || dr.lock != nil {
			t.Fatalf("got %+v", dr)
		}
	})
	t.Run("scratch: scratch/docker kept, a second daemon gets its own", func(t *testing.T) {
		scratch := t.TempDir()
		first, err := chooseDataRoot(scratch, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if first.path != filepath.Join(scratch, "docker") || first.owned || first.lock == nil {
			t.Fatalf("first = %+v", first)
		}
		second, err := chooseDataRoot(scratch, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(second.path, filepath.Join(scratch, "docker-")) || !second.owned || second.lock != nil {
			t.Fatalf("second = %+v", second)
		}
		first.lock.Close()
		third, err := chooseDataRoot(scratch, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		defer third.lock.Close()
		if third.path != first.path || third.owned {
			t.Fatalf("after release = %+v", third)
		}
	})
}

func TestMakeStateDir(t *testing.T) {
	dir, err := makeStateDir("")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if len(dir) > maxStateDirLen || !strings.Contains(dir, "/dkd-") {
		t.Errorf("state dir %q", dir)
	}
	// The deepest socket must fit the 108-byte limit.
	if n := len(dir + "/x/libnetwork/0123456789ab.sock"); n >= 108 {
		t.Errorf("socket path of %d bytes", n)
	}
	if _, err := makeStateDir("/tmp/" + strings.Repeat("a", 60)); err == nil {
		t.Error("a parent too long for sockets was accepted")
	}
	t.Setenv("TMPDIR", "/tmp/"+strings.Repeat("b", 60))
	dir2, err := makeStateDir("")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir2)
	if !strings.HasPrefix(dir2, "/tmp/dkd-") {
		t.Errorf("long TMPDIR: state dir %q, want /tmp fallback", dir2)
	}
}
