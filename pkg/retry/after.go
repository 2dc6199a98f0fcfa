package retry

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxAfter bounds a wait a server asks for: longer than any budget, and far
// from overflowing time.Duration in the sums it takes part in. Seconds used
// to be multiplied unchecked: 2^63-1 of them wrapped around to a negative
// wait, an immediate retry.
const MaxAfter = 24 * time.Hour

// After is the wait a server asked for in a Retry-After header.
type After struct {
	OK   bool          // the header held seconds or an HTTP date
	Wait time.Duration // what it asked for, clamped to [0, MaxAfter]
	raw  string
}

// ParseAfter reads a Retry-After value: seconds or an HTTP date. Anything
// else ("-5", "1.5") is no request at all.
func ParseAfter(v string) After {
	v = strings.TrimSpace(v)
	if v == "" {
		return After{}
	}
	if strings.Trim(v, "0123456789") == "" {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(MaxAfter/time.Second) {
			return After{OK: true, Wait: MaxAfter, raw: v} // more digits than int64 holds: "never"
		}
		return After{OK: true, Wait: time.Duration(secs) * time.Second, raw: v}
	}
	if t, err := http.ParseTime(v); err == nil {
		return After{OK: true, Wait: min(max(time.Until(t), 0), MaxAfter), raw: v}
	}
	return After{}
}

// String is what the server asked for, in its own words when the wait was
// clamped.
func (a After) String() string {
	if a.Wait < MaxAfter {
		return a.Wait.String()
	}
	if strings.Trim(a.raw, "0123456789") == "" {
		return a.raw + "s"
	}
	return "more than " + MaxAfter.String() + " (until " + a.raw + ")"
}
