package testenv

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// FaultKind is what the fault proxy does instead of forwarding a request.
type FaultKind int

const (
	Fault429   FaultKind = iota + 1 // 429 Too Many Requests
	Fault503                        // 503 Service Unavailable
	Fault500                        // 500 Internal Server Error
	FaultReset                      // close the connection with RST (SO_LINGER 0)
	FaultStall                      // never answer until the client gives up or the proxy stops
	Fault502                        // 502 Bad Gateway
	// FaultResetMidBody sends AfterBytes of the body, then resets the
	// connection: of the response for a GET, of the request for an upload
	// (PATCH, PUT with a body), which then never reaches the registry.
	FaultResetMidBody
	// FaultStallMidBody sends AfterBytes of the body (as FaultResetMidBody),
	// then sends nothing until the client gives up or the proxy stops.
	FaultStallMidBody
)

func (k FaultKind) String() string {
	switch k {
	case Fault429:
		return "429"
	case Fault503:
		return "503"
	case Fault500:
		return "500"
	case FaultReset:
		return "reset"
	case FaultStall:
		return "stall"
	case Fault502:
		return "502"
	case FaultResetMidBody:
		return "reset mid-body"
	case FaultStallMidBody:
		return "stall mid-body"
	}
	return "FaultKind(" + strconv.Itoa(int(k)) + ")"
}

// Fault is applied to the next Count matching requests (-1: forever).
type Fault struct {
	Kind       FaultKind
	Count      int
	RetryAfter string // Retry-After header for 429/503, optional
	// PathContains limits the fault to requests whose path contains it;
	// other requests pass through without using the fault up.
	PathContains string
	// Method, when set, limits the fault to requests of that method in the
	// same way ("GET", "PATCH", ...).
	Method string
	// AfterBytes is how much of the body FaultResetMidBody and
	// FaultStallMidBody let through first.
	AfterBytes int64
}

// FaultProxy is a plain-http reverse proxy to one registry that injects
// faults. Faults apply in order: the first until its Count is used up, then
// the next; with none left requests pass through.
type FaultProxy struct {
	Host string // "127.0.0.1:40123"

	target string
	srv    *http.Server
	rp     *httputil.ReverseProxy
	tr     *http.Transport
	stopCh chan struct{}

	mu       sync.Mutex
	faults   []Fault
	requests int
	faulted  int
	log      []string
	records  []Request
	stopOnce sync.Once
}

// Request is one request the proxy saw.
type Request struct {
	Method, Path string
	At           time.Time
	Fault        FaultKind // 0 when passed through
}

// StartFaultProxy proxies to target (host:port of a plain-http registry).
// The Host header is kept, so the registry's upload Location URLs point back
// at the proxy and every request of a push goes through it.
func StartFaultProxy(t testing.TB, target string, faults ...Fault) *FaultProxy {
	t.Helper()
	th, _, err := net.SplitHostPort(target)
	if err != nil {
		t.Fatalf("testenv: fault proxy target %q: %v", target, err)
	}
	if ip := net.ParseIP(th); th != "localhost" && (ip == nil || !ip.IsLoopback()) {
		t.Fatalf("testenv: fault proxy target %q is not a loopback address", target)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: fault proxy listen: %v", err)
	}
	p := &FaultProxy{Host: l.Addr().String(), target: target, stopCh: make(chan struct{})}
	p.SetFaults(faults...)

	// The transport can only ever dial the target, whatever the request says.
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	p.tr = &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", target)
		},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	tu := &url.URL{Scheme: "http", Host: target}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(tu)
			pr.Out.Host = pr.In.Host
		},
		Transport:     p.tr,
		FlushInterval: -1,
		ErrorLog:      log.New(io.Discard, "", 0), // client aborts are expected in fault tests
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second}
	go func() { _ = p.srv.Serve(l) }()
	t.Cleanup(p.Stop)
	return p
}

// SetFaults replaces the remaining faults.
func (p *FaultProxy) SetFaults(faults ...Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append([]Fault(nil), faults...)
}

// Requests is the number of requests seen, faulted or not.
func (p *FaultProxy) Requests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests
}

// Log lists every request seen as "METHOD /path".
func (p *FaultProxy) Log() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.log...)
}

// Faulted is the number of requests that got a fault.
func (p *FaultProxy) Faulted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faulted
}

// Stop closes the listener, releases stalled requests and drops all
// connections; safe to call more than once.
func (p *FaultProxy) Stop() {
	p.stopOnce.Do(func() {
		close(p.stopCh)
		_ = p.srv.Close()
		p.tr.CloseIdleConnections()
	})
}

// next picks the fault for r, using one of its Count.
func (p *FaultProxy) next(r *http.Request) (Fault, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	p.log = append(p.log, r.Method+" "+r.URL.Path)
	for len(p.faults) > 0 && p.faults[0].Count == 0 {
		p.faults = p.faults[1:]
	}
	if len(p.faults) == 0 {
		p.records = append(p.records, Request{Method: r.Method, Path: r.URL.Path, At: time.Now()})
		return Fault{}, false
	}
	f := &p.faults[0]
	if f.PathContains != "" && !strings.Contains(r.URL.Path, f.PathContains) ||
		f.Method != "" && f.Method != r.Method {
		p.records = append(p.records, Request{Method: r.Method, Path: r.URL.Path, At: time.Now()})
		return Fault{}, false
	}
	if f.Count > 0 {
		f.Count--
	}
	p.faulted++
	p.records = append(p.records, Request{Method: r.Method, Path: r.URL.Path, At: time.Now(), Fault: f.Kind})
	return *f, true
}

// Requests lists the requests seen whose method is method ("" any) and
// whose path contains pathContains, in order.
func (p *FaultProxy) RequestsMatching(method, pathContains string) []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Request
	for _, r := range p.records {
		if (method == "" || r.Method == method) && strings.Contains(r.Path, pathContains) {
			out = append(out, r)
		}
	}
	return out
}

func (p *FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f, ok := p.next(r)
	if !ok {
		p.rp.ServeHTTP(w, r)
		return
	}
	switch f.Kind {
	case Fault429, Fault503, Fault500, Fault502:
		status, code := http.StatusInternalServerError, "UNKNOWN"
		switch f.Kind {
		case Fault429:
			status, code = http.StatusTooManyRequests, "TOOMANYREQUESTS"
		case Fault503:
			status, code = http.StatusServiceUnavailable, "UNAVAILABLE"
		case Fault502:
			status = http.StatusBadGateway
		}
		if f.RetryAfter != "" && f.Kind != Fault500 {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"injected by testenv fault proxy"}]}`+"\n", code)
	case FaultReset:
		hj, ok := w.(http.Hijacker)
		if !ok {
			panic("testenv: fault proxy response cannot be hijacked")
		}
		conn, _, err := hj.Hijack()
		if err != nil {
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close sends RST: the client sees ECONNRESET
		}
		_ = conn.Close()
	case FaultStall:
		select {
		case <-r.Context().Done():
		case <-p.stopCh:
		}
		// Drop the connection rather than answer, so nothing looks like success.
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	case FaultResetMidBody, FaultStallMidBody:
		p.midBody(w, r, f)
	default:
		http.Error(w, "testenv: unknown fault kind "+f.Kind.String(), http.StatusInternalServerError)
	}
}

// midBody lets f.AfterBytes of a body through, then resets or stalls the
// client's connection. An upload's body is cut on its way in (the registry
// never sees the request); any other request is forwarded and its
// response's body cut.
func (p *FaultProxy) midBody(w http.ResponseWriter, r *http.Request, f Fault) {
	upload := r.Body != nil && r.Body != http.NoBody && (r.Method == http.MethodPatch || r.Method == http.MethodPut || r.Method == http.MethodPost)
	if upload {
		_, _ = io.CopyN(io.Discard, r.Body, f.AfterBytes)
	} else {
		out := r.Clone(r.Context())
		out.URL.Scheme, out.URL.Host, out.RequestURI = "http", p.target, ""
		out.Host = r.Host
		resp, err := p.tr.RoundTrip(out)
		if err != nil {
			http.Error(w, "testenv: fault proxy: "+err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.CopyN(w, resp.Body, f.AfterBytes)
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("testenv: fault proxy response cannot be hijacked")
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		return
	}
	if f.Kind == FaultStallMidBody {
		// Hijacked connections are not closed by the server: wait for the
		// client to go away (a read error) or the proxy to stop.
		done := make(chan struct{})
		go func() {
			_, _ = io.Copy(io.Discard, conn)
			close(done)
		}()
		select {
		case <-done:
		case <-p.stopCh:
		}
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
