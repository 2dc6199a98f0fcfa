package engine

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/moby/buildkit/session/auth/authprovider"
)

func TestSessionTLSReadsCertsD(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"reg.example:5000/ca.crt":      "ca",
		"reg.example:5000/client.cert": "c", "reg.example:5000/client.key": "k",
		"reg.example:5000/orphan.cert": "no key", // no pair: skipped
		"other.example/ca.crt":         "ca2",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(content), 0o600)
	}
	got := sessionTLS(dir)
	r := filepath.Join(dir, "reg.example:5000")
	want := map[string]*authprovider.AuthTLSConfig{
		"reg.example:5000": {RootCAs: []string{filepath.Join(r, "ca.crt")},
			KeyPairs: []authprovider.TLSKeyPair{{Certificate: filepath.Join(r, "client.cert"), Key: filepath.Join(r, "client.key")}}},
		"other.example": {RootCAs: []string{filepath.Join(dir, "other.example", "ca.crt")}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if sessionTLS("") != nil || len(sessionTLS(filepath.Join(dir, "missing"))) != 0 {
		t.Error("no folder should give no TLS settings")
	}
}
