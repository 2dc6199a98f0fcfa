package push

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
)

// observer sits under go-containerregistry's auth transport and notes what
// the registry answered for each blob: already there (HEAD 200), mounted
// from another repository (POST ?mount= answered 201), or uploaded (PUT
// ?digest= answered 201). It also counts the request body bytes sent.
type observer struct {
	next http.RoundTripper

	sent atomic.Int64

	mu        sync.Mutex
	existing  map[string]bool
	mounted   map[string]bool
	uploaded  map[string]bool
	manifests int
}

func newObserver(next http.RoundTripper) *observer {
	return &observer{next: next, existing: map[string]bool{}, mounted: map[string]bool{}, uploaded: map[string]bool{}}
}

var blobPath = regexp.MustCompile(`/v2/.+/blobs/(sha256:[0-9a-f]{64})$`)

func (o *observer) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && req.Body != http.NoBody {
		// A RoundTripper must not change the request it was given.
		r := req.Clone(req.Context())
		r.Body = &countingBody{rc: req.Body, n: &o.sent}
		if getBody := req.GetBody; getBody != nil {
			// The original's: req is reassigned below, and a closure over
			// it would call itself for ever on a retry.
			r.GetBody = func() (io.ReadCloser, error) {
				rc, err := getBody()
				if err != nil {
					return nil, err
				}
				return &countingBody{rc: rc, n: &o.sent}, nil
			}
		}
		req = r
	}
	resp, err := o.next.RoundTrip(req)
	if err == nil {
		o.note(req, resp.StatusCode)
	}
	return resp, err
}

func (o *observer) note(req *http.Request, status int) {
	p, q := req.URL.Path, req.URL.Query()
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case req.Method == http.MethodHead && status == http.StatusOK:
		if m := blobPath.FindStringSubmatch(p); m != nil {
			o.existing[m[1]] = true
		}
	case req.Method == http.MethodPost && status == http.StatusCreated && strings.HasSuffix(p, "/blobs/uploads/"):
		if d := q.Get("mount"); d != "" && q.Get("digest") == "" {
			o.mounted[d] = true
		} else if d := q.Get("digest"); d != "" {
			o.uploaded[d] = true // a monolithic upload
		}
	case req.Method == http.MethodPut && status == http.StatusCreated && strings.Contains(p, "/blobs/uploads/"):
		if d := q.Get("digest"); d != "" {
			o.uploaded[d] = true
		}
	case req.Method == http.MethodPut && status < 300 && strings.Contains(p, "/manifests/"):
		o.manifests++
	}
}

// tally sums what happened to blobs (digest → size).
func (o *observer) tally(blobs map[string]int64) (uploaded, existing, mounted BlobStats) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for d, size := range blobs {
		switch {
		case o.uploaded[d]:
			uploaded.add(size)
		case o.mounted[d]:
			mounted.add(size)
		case o.existing[d]:
			existing.add(size)
		}
	}
	return uploaded, existing, mounted
}

type countingBody struct {
	rc io.ReadCloser
	n  *atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingBody) Close() error { return c.rc.Close() }
