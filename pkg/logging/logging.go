// Package logging sets up the logs a person reads on a Concourse build page:
// coloured logrus lines on stderr, with every known secret masked before it
// is written.
package logging

import (
	"bytes"
	"io"
	"sort"
	"sync"

	"github.com/sirupsen/logrus"
)

// New returns a logger writing through r, so its secrets are masked. Debug
// turns on debug lines.
func New(r *Redactor, debug bool) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(r)
	// Concourse renders ANSI colours and stamps its own times.
	l.SetFormatter(&logrus.TextFormatter{ForceColors: true, DisableTimestamp: true, PadLevelText: true})
	if debug {
		l.SetLevel(logrus.DebugLevel)
	}
	return logrus.NewEntry(l)
}

// Redactor is an io.Writer that replaces secrets with "***". Log lines are
// written whole, so a secret never straddles two writes.
type Redactor struct {
	mu      sync.Mutex
	w       io.Writer
	secrets [][]byte
}

// NewRedactor masks secrets (empty ones and those under 3 bytes are ignored:
// masking "a" would garble every line) in what is written to w.
func NewRedactor(w io.Writer, secrets ...string) *Redactor {
	r := &Redactor{w: w}
	r.Add(secrets...)
	return r
}

// Add registers more secrets.
func (r *Redactor) Add(secrets ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range secrets {
		if len(s) >= 3 {
			r.secrets = append(r.secrets, []byte(s))
		}
	}
	// Longest first, so a secret containing another is masked whole.
	sort.Slice(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
}

func (r *Redactor) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := p
	for _, s := range r.secrets {
		if bytes.Contains(out, s) {
			out = bytes.ReplaceAll(out, s, []byte("***"))
		}
	}
	if _, err := r.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Redact masks the secrets in s.
func (r *Redactor) Redact(s string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := []byte(s)
	for _, sec := range r.secrets {
		b = bytes.ReplaceAll(b, sec, []byte("***"))
	}
	return string(b)
}
