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
// the registry answered for each blob of each repository: already there (HEAD 200), mounted
// from another repository (POST ?mount= answered 201), or uploaded (PUT
// ?digest= answered 201). It also counts the request body bytes sent.
type observer struct {
	next http.RoundTripper

	sent atomic.Int64

	// What each repository ("host/path", see repoOf) answered, by blob
	// digest, and its manifest PUTs; manifests counts them all.
	mu        sync.Mutex
	existing  map[string]map[string]bool
	mounted   map[string]map[string]bool
	uploaded  map[string]map[string]bool
	repoPuts  map[string]int
	manifests int
}

func newObserver(next http.RoundTripper) *observer {
	return &observer{next: next, existing: map[string]map[string]bool{}, mounted: map[string]map[string]bool{},
		uploaded: map[string]map[string]bool{}, repoPuts: map[string]int{}}
}

// repoOf is the repository a registry API path is about, with the host:
// "host:5000/team/app" for /v2/team/app/blobs/... or /manifests/...
func repoOf(host, path string) string {
	p, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return ""
	}
	for _, sep := range []string{"/blobs/", "/manifests/"} {
		if i := strings.LastIndex(p, sep); i >= 0 {
			return host + "/" + p[:i]
		}
	}
	return ""
}

func mark(m map[string]map[string]bool, repo, digest string) {
	if m[repo] == nil {
		m[repo] = map[string]bool{}
	}
	m[repo][digest] = true
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
	repo := repoOf(req.URL.Host, p)
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case req.Method == http.MethodHead && status == http.StatusOK:
		if m := blobPath.FindStringSubmatch(p); m != nil {
			mark(o.existing, repo, m[1])
		}
	case req.Method == http.MethodPost && status == http.StatusCreated && strings.HasSuffix(p, "/blobs/uploads/"):
		if d := q.Get("mount"); d != "" && q.Get("digest") == "" {
			mark(o.mounted, repo, d)
		} else if d := q.Get("digest"); d != "" {
			mark(o.uploaded, repo, d) // a monolithic upload
		}
	case req.Method == http.MethodPut && status == http.StatusCreated && strings.Contains(p, "/blobs/uploads/"):
		if d := q.Get("digest"); d != "" {
			mark(o.uploaded, repo, d)
		}
	case req.Method == http.MethodPut && status < 300 && strings.Contains(p, "/manifests/"):
		o.manifests++
		o.repoPuts[repo]++
	}
}

// tally sums what happened to blobs (digest → size) in every repository.
func (o *observer) tally(blobs map[string]int64) (uploaded, existing, mounted BlobStats) {
	o.mu.Lock()
	repos := map[string]bool{}
	for _, m := range []map[string]map[string]bool{o.uploaded, o.mounted, o.existing} {
		for r := range m {
			repos[r] = true
		}
	}
	o.mu.Unlock()
	for r := range repos {
		u, e, m := o.tallyRepo(r, blobs)
		uploaded, existing, mounted = uploaded.plus(u), existing.plus(e), mounted.plus(m)
	}
	return uploaded, existing, mounted
}

// tallyRepo sums what happened to blobs in repo ("host/path").
func (o *observer) tallyRepo(repo string, blobs map[string]int64) (uploaded, existing, mounted BlobStats) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for d, size := range blobs {
		switch {
		case o.uploaded[repo][d]:
			uploaded.add(size)
		case o.mounted[repo][d]:
			mounted.add(size)
		case o.existing[repo][d]:
			existing.add(size)
		}
	}
	return uploaded, existing, mounted
}

func (o *observer) manifestsOf(repo string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.repoPuts[repo]
}

func (s BlobStats) plus(o BlobStats) BlobStats {
	return BlobStats{Blobs: s.Blobs + o.Blobs, Bytes: s.Bytes + o.Bytes}
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
