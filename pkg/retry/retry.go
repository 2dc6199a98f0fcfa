// Package retry owns how failures are retried: which failures are worth
// another attempt (Transient, Permanent, IsRateLimit), and how attempts are
// spaced (Policy: attempts, backoff, budget, and the waits a registry asks
// for in Retry-After). The registry transport (pkg/registry), the get's
// blob downloads (pkg/download) and the put's daemon push (pkg/resource)
// each name the Policy they use next to where they use it.
package retry

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// Policy says how often and how far apart an operation is tried. Max and
// Budget left at zero mean no cap of their own (one wait is still at most
// MaxAfter) and no budget; Jitter zero means none.
type Policy struct {
	Attempts int           // total tries, the first included
	Initial  time.Duration // wait before the second try; doubles for each further one
	Max      time.Duration // cap of one wait
	Jitter   float64       // up to this fraction of a wait is added at random
	// Budget bounds the time from the first try to the start of the last
	// (waits and failed tries alike): an answer that stalls every try still
	// ends within Budget plus one try.
	Budget time.Duration
}

// WithDefaults fills the fields p leaves at zero from def.
func (p Policy) WithDefaults(def Policy) Policy {
	if p.Attempts <= 0 {
		p.Attempts = def.Attempts
	}
	if p.Initial <= 0 {
		p.Initial = def.Initial
	}
	if p.Max <= 0 {
		p.Max = def.Max
	}
	if p.Jitter <= 0 {
		p.Jitter = def.Jitter
	}
	if p.Budget <= 0 {
		p.Budget = def.Budget
	}
	return p
}

// Cap is d shortened to the longest one wait may take.
func (p Policy) Cap(d time.Duration) time.Duration {
	if p.Max > 0 {
		return min(d, p.Max)
	}
	return min(d, MaxAfter)
}

// Tries follows one operation through its Policy: the attempt under way,
// the next backoff, and the time spent.
type Tries struct {
	p       Policy
	start   time.Time
	attempt int
	backoff time.Duration
	waited  time.Duration
}

// Start begins an operation's first attempt.
func (p Policy) Start() *Tries {
	return &Tries{p: p, start: time.Now(), attempt: 1, backoff: p.Initial}
}

// Attempt is the number of the attempt under way (or last made), from 1.
func (t *Tries) Attempt() int { return t.attempt }

// Elapsed is the time since the first attempt began.
func (t *Tries) Elapsed() time.Duration { return time.Since(t.start) }

// Next is called when the attempt under way failed in a way worth another
// one. It returns the wait before the next attempt (the backoff, or what
// the server asked for), or, when the policy allows none, why not: "giving
// up" after the last attempt, or a budget the wait would overrun. asked is
// the server's Retry-After (the zero After when there is none).
func (t *Tries) Next(asked After) (time.Duration, string) {
	wait := t.backoff
	if t.p.Jitter > 0 {
		wait += time.Duration(rand.Int64N(int64(float64(t.backoff)*t.p.Jitter) + 1))
	}
	t.backoff = t.p.Cap(t.backoff * 2)
	// Waits are counted as well as the clock, so a fake sleep (tests)
	// still meets the budget.
	used := max(t.waited, time.Since(t.start))
	if asked.OK {
		wait = asked.Wait
		if t.p.Budget > 0 && asked.Wait > t.p.Budget-used {
			return 0, fmt.Sprintf("it asked to retry after %s, beyond the %s retry budget (%s used)", asked, t.p.Budget, used.Round(100*time.Millisecond))
		}
	}
	if t.attempt >= t.p.Attempts {
		return 0, "giving up"
	}
	if t.p.Budget > 0 && used+wait > t.p.Budget {
		return 0, fmt.Sprintf("retry budget of %s used up", t.p.Budget)
	}
	t.attempt++
	t.waited += wait
	return wait, ""
}

// Sleep waits d, or less if ctx ends first; then it returns ctx.Err().
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
