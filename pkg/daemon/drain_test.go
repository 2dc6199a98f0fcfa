package daemon

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// apiConns sees dockerd's end of a connection until dockerd closes it,
// also after the client closed its own: what Stop waits for.
func TestAPIConns(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	want := func(n int) {
		t.Helper()
		got, err := apiConns(os.Getpid(), sock)
		if err != nil || got != n {
			t.Fatalf("apiConns = %d, %v; want %d", got, err, n)
		}
	}
	want(0)
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	want(1)
	c.Close()
	want(1)
	s.Close()
	want(0)
}

func TestWaitsForRequests(t *testing.T) {
	for v, want := range map[string]bool{
		"20.10.24+dfsg1": false, "23.0.6": true, "24.0.0": true, "26.1.5+dfsg1": true, "28.5.2": true, "": true,
	} {
		if got := waitsForRequests(v); got != want {
			t.Errorf("waitsForRequests(%q) = %v, want %v", v, got, want)
		}
	}
}
