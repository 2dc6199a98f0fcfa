package testenv

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TagPager is a loopback proxy in front of a real, plain-http registry that
// pages tag listings the way Docker Hub, ECR and distribution 3 do: at most
// `n` (and at most PageSize) tags per page, with a `Link: <...>; rel="next"`
// header to the next one (`last=<the page's last tag>`). Debian's
// distribution 2.8 ignores `n` and sends every tag in one answer, so paging
// cannot be tested against it alone. Everything else (ping, auth, manifests,
// blobs) passes through unchanged; the tags come from the real registry.
type TagPager struct {
	Host     string // use it as the repository's registry
	PageSize int    // the most tags a page holds, whatever n asks

	target string
	mu     sync.Mutex
	pages  []string // the tags/list request URIs answered
	srv    *http.Server
}

// StartTagPager proxies to reg, answering tag listings in pages of at most
// pageSize tags. It is stopped on test cleanup.
func StartTagPager(t testing.TB, reg *Registry, pageSize int) *TagPager {
	t.Helper()
	if reg.opts.TLS {
		t.Fatal("testenv: the tag pager proxies plain-http registries only")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: tag pager listen: %v", err)
	}
	p := &TagPager{Host: l.Addr().String(), PageSize: pageSize, target: reg.Host}
	tu := &url.URL{Scheme: "http", Host: reg.Host}
	rp := &httputil.ReverseProxy{
		Rewrite:  func(pr *httputil.ProxyRequest) { pr.SetURL(tu); pr.Out.Host = pr.In.Host },
		ErrorLog: log.New(io.Discard, "", 0),
	}
	p.srv = &http.Server{ReadHeaderTimeout: 30 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v2/") && strings.HasSuffix(r.URL.Path, "/tags/list") {
			p.page(w, r)
			return
		}
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = p.srv.Serve(l) }()
	t.Cleanup(func() { _ = p.srv.Close() })
	return p
}

// Pages are the tags/list request URIs the pager answered, in order.
func (p *TagPager) Pages() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.pages)
}

// page answers one page from the registry's full, sorted list.
func (p *TagPager) page(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.pages = append(p.pages, r.URL.RequestURI())
	p.mu.Unlock()
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://"+p.target+r.URL.Path, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK { // 401, 404 NAME_UNKNOWN: as the registry said
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		return
	}
	var all struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&all); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	slices.Sort(all.Tags)
	n := p.PageSize
	if q, err := strconv.Atoi(r.URL.Query().Get("n")); err == nil && q > 0 && (n <= 0 || q < n) {
		n = q
	}
	start := 0
	if last := r.URL.Query().Get("last"); last != "" {
		start, _ = slices.BinarySearch(all.Tags, last)
		if start < len(all.Tags) && all.Tags[start] == last {
			start++
		}
	}
	end := len(all.Tags)
	if n > 0 && start+n < end {
		end = start + n
		next := url.Values{"n": {strconv.Itoa(n)}, "last": {all.Tags[end-1]}}
		w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.Path, next.Encode()))
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"name": all.Name, "tags": all.Tags[start:end]})
}
