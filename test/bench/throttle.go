package bench

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Link is a TCP proxy in front of a target (a registry on loopback) that
// emulates a network link between client and target: each direction is
// limited to Rate bytes per second, shared by all connections as on one
// link, and every byte from the target reaches the client Latency after the
// target sent it (responses are delayed; throughput is not lowered by it).
// It counts the bytes that cross it in each direction.
type Link struct {
	Addr string // "127.0.0.1:port": what clients dial instead of the target

	target  string
	latency time.Duration
	up      *pacer // client → target
	down    *pacer // target → client
	ln      net.Listener

	sent, received atomic.Int64 // client → target, target → client

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// StartLink listens on a free loopback port and forwards every connection
// to target. rate is bytes per second per direction (0: unlimited).
func StartLink(target string, rate float64, latency time.Duration) (*Link, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &Link{Addr: ln.Addr().String(), target: target, latency: latency,
		up: newPacer(rate), down: newPacer(rate), ln: ln, conns: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.accept()
	return l, nil
}

// Counts returns the bytes sent from clients to the target and back since
// the start or the last Reset.
func (l *Link) Counts() (sent, received int64) { return l.sent.Load(), l.received.Load() }

// Reset zeroes the counters.
func (l *Link) Reset() { l.sent.Store(0); l.received.Store(0) }

// Close stops listening, closes every connection and waits for them.
func (l *Link) Close() {
	l.mu.Lock()
	l.closed = true
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.ln.Close()
	l.wg.Wait()
}

func (l *Link) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *Link) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	c.Close()
}

func (l *Link) accept() {
	defer l.wg.Done()
	for {
		client, err := l.ln.Accept()
		if err != nil {
			return
		}
		if !l.track(client) {
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer l.untrack(client)
			server, err := net.DialTimeout("tcp", l.target, 10*time.Second)
			if err != nil {
				return
			}
			if !l.track(server) {
				return
			}
			defer l.untrack(server)
			var done sync.WaitGroup
			done.Add(2)
			go func() { defer done.Done(); l.pipe(server, client, l.up, 0, &l.sent) }()
			go func() { defer done.Done(); l.pipe(client, server, l.down, l.latency, &l.received) }()
			done.Wait()
		}()
	}
}

type chunk struct {
	b  []byte
	at time.Time // when to deliver it
}

// pipe copies src to dst through the link: a chunk is read only when the
// link has had time to carry the previous ones (so a fast sender is slowed
// down by TCP back-pressure), and written latency later.
func (l *Link) pipe(dst, src net.Conn, p *pacer, latency time.Duration, count *atomic.Int64) {
	q := make(chan chunk, 256) // more than the bandwidth-delay product
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				count.Add(int64(n))
				done := p.reserve(n)
				if d := time.Until(done); d > 0 {
					time.Sleep(d)
				}
				q <- chunk{buf[:n], done.Add(latency)}
			}
			if err != nil {
				return
			}
		}
	}()
	var werr error
	for c := range q {
		if werr != nil {
			continue // drain, so the reader can finish
		}
		if d := time.Until(c.at); d > 0 {
			time.Sleep(d)
		}
		_, werr = dst.Write(c.b)
	}
	if werr != nil {
		src.Close()
		dst.Close()
		return
	}
	// The sender is done: pass the half-close on.
	if tc, ok := dst.(*net.TCPConn); ok {
		if err := tc.CloseWrite(); err != nil && !errors.Is(err, net.ErrClosed) {
			dst.Close()
		}
	}
}

// pacer hands out transmission slots on a link of a given rate.
type pacer struct {
	rate float64 // bytes per second; 0 = unlimited
	mu   sync.Mutex
	next time.Time // when the link is free again
}

func newPacer(rate float64) *pacer { return &pacer{rate: rate} }

// reserve books n bytes on the link and returns when they have been sent.
func (p *pacer) reserve(n int) time.Time {
	now := time.Now()
	if p.rate <= 0 {
		return now
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	start := p.next
	if start.Before(now) {
		start = now
	}
	p.next = start.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
	return p.next
}
