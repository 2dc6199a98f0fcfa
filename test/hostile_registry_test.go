package test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// hostileRegistry is a loopback HTTP server posing as a registry: it serves
// whatever manifests and blobs a test gives it, at any size, with or
// without Content-Length, generated while they are sent. The real registry
// refuses manifests over 4 MiB and stores what it serves; this one lets a
// test send a 200 MiB manifest or a 3 GiB blob without a byte on disk.
type hostileRegistry struct {
	*httptest.Server
	Host string // "127.0.0.1:port": plain http, as go-containerregistry talks to loopback

	mu      sync.Mutex
	objects map[string]*hostileObject // "manifests/<digest>" or "blobs/<digest>"
	log     []string
}

// hostileObject is one manifest or blob: write produces its bytes.
type hostileObject struct {
	mediaType string
	size      int64
	write     func(io.Writer) error
	// chunked leaves Content-Length out: the client learns the size only
	// from the stream.
	chunked bool
	// sent counts the bytes the server managed to write.
	sent atomic.Int64
}

func startHostileRegistry(t *testing.T) *hostileRegistry {
	t.Helper()
	h := &hostileRegistry{objects: map[string]*hostileObject{}}
	h.Server = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.Close)
	h.Host = strings.TrimPrefix(h.URL, "http://")
	return h
}

func (h *hostileRegistry) serve(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.log = append(h.log, r.Method+" "+r.URL.Path)
	h.mu.Unlock()
	if r.URL.Path == "/v2/" {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		fmt.Fprint(w, "{}")
		return
	}
	var key string
	for _, kind := range []string{"/manifests/", "/blobs/"} {
		if i := strings.LastIndex(r.URL.Path, kind); i >= 0 {
			key = strings.Trim(kind, "/") + "/" + r.URL.Path[i+len(kind):]
		}
	}
	h.mu.Lock()
	o := h.objects[key]
	h.mu.Unlock()
	if o == nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}`)
		return
	}
	w.Header().Set("Content-Type", o.mediaType)
	w.Header().Set("Docker-Content-Digest", strings.SplitN(key, "/", 2)[1])
	if !o.chunked {
		w.Header().Set("Content-Length", fmt.Sprint(o.size))
	}
	if r.Method == http.MethodHead {
		return
	}
	w.WriteHeader(http.StatusOK)
	_ = o.write(&countingWriter{w: w, n: &o.sent})
}

// requests lists "METHOD path" of every request so far.
func (h *hostileRegistry) requests() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.log...)
}

// add serves the bytes write produces as kind ("manifests" or "blobs")
// under their digest, which it computes by running write once.
func (h *hostileRegistry) add(t *testing.T, kind, mediaType string, chunked bool, write func(io.Writer) error) (v1.Hash, *hostileObject) {
	t.Helper()
	sum := sha256.New()
	cw := &countingWriter{w: sum, n: new(atomic.Int64)}
	if err := write(cw); err != nil {
		t.Fatal(err)
	}
	d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum.Sum(nil))}
	o := &hostileObject{mediaType: mediaType, size: cw.n.Load(), write: write, chunked: chunked}
	h.mu.Lock()
	h.objects[kind+"/"+d.String()] = o
	h.mu.Unlock()
	return d, o
}

// addBytes serves b.
func (h *hostileRegistry) addBytes(t *testing.T, kind, mediaType string, b []byte) (v1.Hash, *hostileObject) {
	t.Helper()
	return h.add(t, kind, mediaType, false, func(w io.Writer) error { _, err := w.Write(b); return err })
}

// addImage serves an OCI manifest over config and layers (each a
// descriptor of a blob already added, or made up) and returns its digest.
// annotations pad the manifest to any size.
func (h *hostileRegistry) addImage(t *testing.T, config v1.Descriptor, layers []v1.Descriptor, annotations map[string]string, chunked bool) v1.Hash {
	t.Helper()
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: config, Layers: layers, Annotations: annotations}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := h.add(t, "manifests", string(types.OCIManifestSchema1), chunked, func(w io.Writer) error { _, err := w.Write(b); return err })
	return d
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}
