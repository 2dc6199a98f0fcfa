package engine

import (
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

// testLog is a logger that writes to the test's log and records entries.
func testLog(t *testing.T) (*logrus.Entry, *test.Hook) {
	t.Helper()
	l := logrus.New()
	l.SetOutput(testWriter{t})
	l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true, DisableColors: true})
	return logrus.NewEntry(l), test.NewLocal(l)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// messages returns the recorded log messages.
func messages(h *test.Hook) []string {
	var out []string
	for _, e := range h.AllEntries() {
		out = append(out, e.Message)
	}
	return out
}

func countContaining(lines []string, sub string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

// assertNoSecret fails when any log entry shows secret.
func assertNoSecret(t *testing.T, h *test.Hook, secret string) {
	t.Helper()
	for _, e := range h.AllEntries() {
		if line, _ := e.String(); strings.Contains(line, secret) {
			t.Errorf("a log line shows a secret: %q", line)
		}
	}
}
