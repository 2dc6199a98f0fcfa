// Package logging sets up the logs a person reads on a Concourse build page:
// coloured logrus lines on stderr, with every known secret masked before it
// is written.
package logging

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"
)

// New returns a logger writing through r, so its secrets are masked. Debug
// turns on debug lines.
func New(r *Redactor, debug bool) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(r)
	l.SetFormatter(formatter{})
	if debug {
		l.SetLevel(logrus.DebugLevel)
	}
	return logrus.NewEntry(l)
}

// formatter writes "LEVEL message": the level word coloured (Concourse
// renders ANSI colours and stamps its own times), then the message as
// given. logrus's TextFormatter pads every coloured message to 44 columns
// with trailing spaces, which a build page shows as ragged blank runs.
type formatter struct{}

// levelColours are logrus's own (cyan info, dim cyan debug, yellow warning,
// red error), so the look stays what users know.
var levelColours = map[logrus.Level]string{
	logrus.TraceLevel: "2;37",
	logrus.DebugLevel: "2;36",
	logrus.InfoLevel:  "36",
	logrus.WarnLevel:  "33",
	logrus.ErrorLevel: "31",
	logrus.FatalLevel: "31",
	logrus.PanicLevel: "31",
}

func (formatter) Format(e *logrus.Entry) ([]byte, error) {
	var b bytes.Buffer
	colour, ok := levelColours[e.Level]
	if !ok {
		colour = "36"
	}
	fmt.Fprintf(&b, "\x1b[%sm%s\x1b[0m %s", colour, strings.ToUpper(e.Level.String()), strings.TrimSuffix(e.Message, "\n"))
	keys := make([]string, 0, len(e.Data))
	for k := range e.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%v", k, e.Data[k])
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}

// The shortest texts the redactor masks. A whole secret (trimmed) of
// MinSecretLength bytes or more is masked, as it always was: a short password
// is still a password. A line of a multi-line secret must have
// MinLineLength bytes: masking "{", "}," or "---" (a YAML file's first line,
// and part of every " ---> " line of the classic builder) would blank the log
// without protecting anything. Shorter secrets ("a") are left alone for the
// same reason.
const (
	MinSecretLength = 3
	MinLineLength   = 4
)

// Redactor is an io.Writer that replaces secrets with "***". Log lines are
// written whole, so a secret line never straddles two writes.
type Redactor struct {
	mu sync.Mutex
	w  io.Writer
	// byPrefix holds every masked text by its first MinSecretLength bytes,
	// longest first: a line is scanned once whatever the number of
	// secrets (a 500 KiB secret file has thousands of lines).
	byPrefix map[string][][]byte
	// pairs has a bit for every masked text's first two bytes: most
	// positions of a line are ruled out without a map lookup.
	pairs [1 << 16 / 64]uint64
}

// NewRedactor masks secrets in what is written to w (see Add).
func NewRedactor(w io.Writer, secrets ...string) *Redactor {
	r := &Redactor{w: w}
	r.Add(secrets...)
	return r
}

// Add registers more secrets. Each is masked whole and line by line, both
// trimmed of surrounding white space: build output and the logs arrive a
// line at a time without the newline, so a file that ends in one (`echo tok
// > f`, an .npmrc, a PEM key) or holds several lines would otherwise never
// match, and the log drops trailing white space and a CRLF file's carriage
// returns. Masking the untrimmed value would swallow the line break after
// it. A whole secret shorter than MinSecretLength, and a line shorter than
// MinLineLength, is skipped.
func (r *Redactor) Add(secrets ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byPrefix == nil {
		r.byPrefix = map[string][][]byte{}
	}
	touched := map[string]bool{}
	for _, s := range secrets {
		for i, f := range append([]string{s}, strings.Split(s, "\n")...) {
			f = strings.TrimSpace(f)
			if min := MinLineLength; len(f) < min && (i > 0 || len(f) < MinSecretLength) {
				continue // i == 0 is the whole secret, the others its lines
			}
			k := f[:MinSecretLength]
			if slices.ContainsFunc(r.byPrefix[k], func(b []byte) bool { return string(b) == f }) {
				continue
			}
			r.byPrefix[k] = append(r.byPrefix[k], []byte(f))
			touched[k] = true
			p := pair(f[0], f[1])
			r.pairs[p/64] |= 1 << (p % 64)
		}
	}
	for k := range touched {
		slices.SortStableFunc(r.byPrefix[k], func(a, b []byte) int { return len(b) - len(a) })
	}
}

func (r *Redactor) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.w.Write(r.mask(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Redact masks the secrets in s.
func (r *Redactor) Redact(s string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(r.mask([]byte(s)))
}

// mask replaces every run of bytes covered by secrets with one "***":
// overlapping or adjacent secrets are masked as their union, so no byte of
// either shows.
func (r *Redactor) mask(b []byte) []byte {
	var out []byte
	done := 0 // b[:done] is in out already
	for i := 0; i+MinSecretLength <= len(b); {
		end := i + r.longestAt(b, i)
		if end == i {
			i++
			continue
		}
		for j := i + 1; j <= end && j+MinSecretLength <= len(b); j++ {
			end = max(end, j+r.longestAt(b, j))
		}
		out = append(append(out, b[done:i]...), "***"...)
		done, i = end, end
	}
	if out == nil {
		return b
	}
	return append(out, b[done:]...)
}

// longestAt is the length of the longest secret at b[i:], or 0.
func (r *Redactor) longestAt(b []byte, i int) int {
	if p := pair(b[i], b[i+1]); r.pairs[p/64]&(1<<(p%64)) == 0 {
		return 0
	}
	for _, s := range r.byPrefix[string(b[i:i+MinSecretLength])] {
		if bytes.HasPrefix(b[i:], s) {
			return len(s)
		}
	}
	return 0
}

func pair(a, b byte) uint32 { return uint32(a)<<8 | uint32(b) }
