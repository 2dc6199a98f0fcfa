package logging

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestRedactorMasksSecrets(t *testing.T) {
	var buf bytes.Buffer
	r := NewRedactor(&buf, "hunter2", "", "abc", "hunter2-longer")
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
	// A whole secret of MinSecretLength bytes is masked; shorter ones are
	// not: masking "a" would garble every line.
	r.Add("xyz", "q")
	log.Info("pw xyz, quiet")
	if got := buf.String(); !strings.Contains(got, "pw ***, quiet") {
		t.Errorf("a three-byte secret was not masked, or a one-byte one was: %s", got)
	}
	if got := r.Redact("x hunter2 y"); got != "x *** y" {
		t.Errorf("Redact: %q", got)
	}
}

// TestRedactorMasksEveryShape: a file secret arrives in the log line by
// line, without its newline and with trailing white space dropped.
func TestRedactorMasksEveryShape(t *testing.T) {
	const pem = "-----BEGIN PRIVATE KEY-----\r\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\r\nBKcwggSjAgEAAoIBAQC7\r\n-----END PRIVATE KEY-----\r\n"
	var buf bytes.Buffer
	r := NewRedactor(&buf, "tok-1234567\n", pem, "{\n  \"user\": \"ci\",\n  \"key\": \"k-998877\"\n}\n")
	log := New(r, false)
	for _, l := range []string{
		"#5 tok-1234567", "#5 MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "#5 BKcwggSjAgEAAoIBAQC7",
		"#5 -----END PRIVATE KEY-----", `#5 "key": "k-998877"`, "#5 {", "#5 }",
	} {
		log.Info(l)
	}
	out := buf.String()
	for _, leak := range []string{"tok-1234567", "MIIEvQ", "BKcwgg", "END PRIVATE", "k-998877"} {
		if strings.Contains(out, leak) {
			t.Errorf("%q leaked:\n%s", leak, out)
		}
	}
	// Lines shorter than MinLineLength ("{", "}") are left alone, and a
	// mask never swallows the line break after it.
	if !strings.Contains(out, "#5 {\n") || !strings.Contains(out, "#5 }\n") || strings.Count(out, "***\n") != 5 {
		t.Errorf("log:\n%s", out)
	}
	// An error quoting the secret whole, or its lines joined another way.
	for _, s := range []string{"read: " + pem, "excerpt:\n  tok-1234567\n  MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"} {
		if got := r.Redact(s); strings.Contains(got, "tok-") || strings.Contains(got, "MIIEvQ") || !strings.Contains(got, "***") {
			t.Errorf("Redact(%q) = %q", s, got)
		}
	}
}

// TestLogLinesAreNotPadded: a line is the coloured level word, one space
// and the message, with no trailing spaces.
func TestLogLinesAreNotPadded(t *testing.T) {
	var buf bytes.Buffer
	log := New(NewRedactor(&buf), true)
	log.Info("short")
	log.Warn("careful")
	log.Error("#3 exit code: 1")
	log.Debug("detail")
	want := "\x1b[36mINFO\x1b[0m short\n" +
		"\x1b[33mWARNING\x1b[0m careful\n" +
		"\x1b[31mERROR\x1b[0m #3 exit code: 1\n" +
		"\x1b[2;36mDEBUG\x1b[0m detail\n"
	if buf.String() != want {
		t.Errorf("log\n%q\nwant\n%q", buf.String(), want)
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

// TestRedactorOverlaps: overlapping or adjacent secrets are masked as one
// run, so no byte of either shows, and text around them is kept.
func TestRedactorOverlaps(t *testing.T) {
	r := NewRedactor(nil, "abcdef", "defghij", "xyzw")
	for in, want := range map[string]string{
		"1abcdefghij2":     "1***2",
		"abcdef":           "***",
		"xyzwxyzw end":     "*** end",
		"no secrets here.": "no secrets here.",
		"ab cd abcde xyz":  "ab cd abcde xyz",
		"tail xyzw":        "tail ***",
	} {
		if got := r.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRedactorLeavesNoSecret: text stitched from pieces of secrets and
// noise never keeps a whole secret after masking.
func TestRedactorLeavesNoSecret(t *testing.T) {
	secrets := []string{"tok-1234567", "4567-tail", "-----BEGIN KEY-----", "MIIEvQIBADANBg", "aaaa", "aaab"}
	r := NewRedactor(nil, secrets...)
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := append([]string{"x", " ", "\n", "a", "ab", "tok-", "1234", "--", "MIIE"}, secrets...)
	for range 20000 {
		var sb strings.Builder
		for range rng.IntN(8) {
			sb.WriteString(pieces[rng.IntN(len(pieces))])
		}
		out := r.Redact(sb.String())
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Fatalf("Redact(%q) = %q keeps %q", sb.String(), out, s)
			}
		}
	}
}

func TestCaptureStandard(t *testing.T) {
	var out bytes.Buffer
	r := NewRedactor(&out, "s3cret-value")
	CaptureStandard(New(r, true))
	defer CaptureStandard(Discard())
	logrus.WithField("ref", "layer-sha256:abc").Error("(*service).Write failed: s3cret-value")
	got := out.String()
	if !strings.Contains(got, "DEBUG") || !strings.Contains(got, "error: (*service).Write failed") || strings.Contains(got, "s3cret-value") {
		t.Errorf("captured %q: want it at debug level, masked", got)
	}
}
