package registry

import (
	"net/http"
	"os"
	"os/exec"
	"testing"
)

// TestProxyFromEnvironment checks, without sending anything, that requests
// to a registry would go through HTTPS_PROXY and that NO_PROXY is honoured.
// net/http reads the proxy variables once per process, so the assertions run
// in a child process started with them set.
func TestProxyFromEnvironment(t *testing.T) {
	if os.Getenv("REGISTRY_PROXY_CHILD") == "1" {
		c, err := New(Options{})
		if err != nil {
			t.Fatal(err)
		}
		def := c.transport.(*retryTransport).next.(*stallTransport).next.(*hostTransports).def
		for target, want := range map[string]string{
			"https://registry.example.com/v2/": "http://127.0.0.1:3128",
			"https://internal.example.com/v2/": "",
		} {
			req, _ := http.NewRequest(http.MethodGet, target, nil)
			u, err := def.Proxy(req)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if u != nil {
				got = u.String()
			}
			if got != want {
				t.Errorf("proxy for %s = %q, want %q", target, got, want)
			}
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestProxyFromEnvironment$", "-test.v")
	cmd.Env = append(os.Environ(), "REGISTRY_PROXY_CHILD=1", "HTTPS_PROXY=http://127.0.0.1:3128", "NO_PROXY=internal.example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
