package registry

import (
	"fmt"
	"io"
	"net/http"
	"strings"
)

// The largest manifest (or index) and image config the get reads: both are
// held in memory whole, so a hostile registry must not choose their size.
// distribution refuses manifest uploads over 4 MiB and containerd resolves
// manifests up to 4 MiB (remotes/docker MaxManifestSize); real configs are
// kilobytes. go-containerregistry alone would read a 100 MiB manifest and a
// config of whatever size the manifest declares.
const (
	MaxManifestSize int64 = 8 << 20
	MaxConfigSize   int64 = 8 << 20
)

// TooLargeError is a manifest or config over its cap, refused before it is
// read (Size is what the registry or the manifest declared), or as soon as
// the stream passed the cap (Size 0).
type TooLargeError struct {
	What  string // "manifest", "config"
	Size  int64
	Limit int64
}

func (e *TooLargeError) Error() string {
	why := "containerd refuses manifests over 4 MiB, and so do registries on upload"
	if e.What != "manifest" {
		why = "an image's config is a few kilobytes"
	}
	if e.Size > 0 {
		return fmt.Sprintf("the image's %s is %d bytes, more than the %d MiB this resource reads (%s): refused without reading it", e.What, e.Size, e.Limit>>20, why)
	}
	return fmt.Sprintf("the image's %s is larger than the %d MiB this resource reads (%s): refused once %d MiB had arrived", e.What, e.Limit>>20, why, e.Limit>>20)
}

// manifestCap caps the bodies of manifest responses at MaxManifestSize: a
// declared Content-Length over it fails before the body is read, and a body
// that goes on past it fails at that point, whatever it declared.
type manifestCap struct{ next http.RoundTripper }

func (t manifestCap) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || resp.StatusCode != http.StatusOK || !isManifestPath(req.URL.Path) {
		return resp, err
	}
	if resp.ContentLength > MaxManifestSize {
		resp.Body.Close()
		return nil, &TooLargeError{What: "manifest", Size: resp.ContentLength, Limit: MaxManifestSize}
	}
	resp.Body = &cappedBody{rc: resp.Body, left: MaxManifestSize, what: "manifest"}
	return resp, nil
}

// isManifestPath matches /v2/<name>/manifests/<reference>.
func isManifestPath(p string) bool {
	i := strings.LastIndex(p, "/manifests/")
	return strings.HasPrefix(p, "/v2/") && i > 0 && !strings.Contains(p[i+len("/manifests/"):], "/")
}

// cappedBody fails a read that would take the body past its cap.
type cappedBody struct {
	rc   io.ReadCloser
	left int64
	what string
}

func (b *cappedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, &TooLargeError{What: b.what, Limit: MaxManifestSize}
	}
	// Read one byte past the cap so a body of exactly the cap still ends.
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, &TooLargeError{What: b.what, Limit: MaxManifestSize}
	}
	return n, err
}

func (b *cappedBody) Close() error { return b.rc.Close() }
