package testenv

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// NetHost is a test host of our own: a network namespace joined to this one
// by a veth pair with a /30 from 198.18.0.0/15 (the range set aside for
// network tests). dockerd treats every 127.x address as an insecure registry
// and never reads certs.d for it, so daemon-side TLS tests need a registry
// at an address like this one.
type NetHost struct {
	Name   string // namespace name, for `ip netns exec`
	HostIP string // our end of the veth
	IP     string // the namespace's end: where its servers listen
}

// NewNetHost makes a namespace and veth pair, removed on cleanup.
func NewNetHost(t testing.TB) *NetHost {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("testenv: network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("testenv: ip (iproute2) not installed")
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("%08x", binary.BigEndian.Uint32(b[:]))
	// A random /30 inside 198.18.0.0/15, so parallel test hosts differ.
	n := binary.BigEndian.Uint32(b[:]) & 0x1fffc
	base := net.IPv4(198, 18+byte(n>>16), byte(n>>8), byte(n)).To4()
	h := &NetHost{
		Name:   "dirt-" + id,
		HostIP: net.IPv4(base[0], base[1], base[2], base[3]+1).String(),
		IP:     net.IPv4(base[0], base[1], base[2], base[3]+2).String(),
	}
	hostIf, peerIf := "vd"+id+"h", "vd"+id+"p"
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("testenv: ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", h.Name)
	t.Cleanup(func() {
		// Deleting the namespace deletes the peer end and with it our end.
		_ = exec.Command("ip", "netns", "del", h.Name).Run()
		_ = exec.Command("ip", "link", "del", hostIf).Run()
	})
	run("link", "add", hostIf, "type", "veth", "peer", "name", peerIf)
	run("link", "set", peerIf, "netns", h.Name)
	run("addr", "add", h.HostIP+"/30", "dev", hostIf)
	run("link", "set", hostIf, "up")
	run("netns", "exec", h.Name, "ip", "addr", "add", h.IP+"/30", "dev", peerIf)
	run("netns", "exec", h.Name, "ip", "link", "set", peerIf, "up")
	run("netns", "exec", h.Name, "ip", "link", "set", "lo", "up")
	return h
}
