package logging

import (
	"bytes"
	"strings"
	"testing"
)

func TestRedactorMasksSecrets(t *testing.T) {
	var buf bytes.Buffer
	r := NewRedactor(&buf, "hunter2", "", "ab", "hunter2-longer")
	log := New(r, true)
	log.Infof("password is hunter2-longer and hunter2")
	log.Debugf("debug too: hunter2")
	out := buf.String()
	if strings.Contains(out, "hunter2") {
		t.Fatalf("secret in log: %s", out)
	}
	if strings.Count(out, "***") != 3 || !strings.Contains(out, "debug too") {
		t.Errorf("log: %s", out)
	}
	// Short "secrets" are not masked: masking "ab" would garble every line.
	log.Info("about")
	if !strings.Contains(buf.String(), "about") {
		t.Error("a two-letter secret was masked")
	}
	if got := r.Redact("x hunter2 y"); got != "x *** y" {
		t.Errorf("Redact: %q", got)
	}
}

func TestDebugOffByDefault(t *testing.T) {
	var buf bytes.Buffer
	log := New(NewRedactor(&buf), false)
	log.Debug("hidden")
	log.Warn("shown")
	if strings.Contains(buf.String(), "hidden") || !strings.Contains(buf.String(), "shown") {
		t.Errorf("log: %s", buf.String())
	}
}
