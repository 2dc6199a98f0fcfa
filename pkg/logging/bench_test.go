package logging

import (
	"crypto/rand"
	"encoding/base64"
	"io"
	"strings"
	"testing"
)

// BenchmarkRedactorWrite measures what masking costs per log line: a put's
// usual secrets (a password, AWS keys, a PEM key of 27 lines), and
// BuildKit's largest secret, 500 KiB of 64-character lines (8000 lines,
// each masked on its own).
func BenchmarkRedactorWrite(b *testing.B) {
	pem := func(n int) string {
		raw := make([]byte, n)
		rand.Read(raw)
		enc := base64.StdEncoding.EncodeToString(raw)
		var sb strings.Builder
		sb.WriteString("-----BEGIN PRIVATE KEY-----\n")
		for len(enc) > 64 {
			sb.WriteString(enc[:64] + "\n")
			enc = enc[64:]
		}
		sb.WriteString(enc + "\n-----END PRIVATE KEY-----\n")
		return sb.String()
	}
	line := []byte("\x1b[36mINFO\x1b[0m #7 npm WARN deprecated some-package@1.2.3: this library is no longer supported\n")
	for _, c := range []struct {
		name    string
		secrets []string
	}{
		{"usual secrets", []string{"registry-password-1", "AKIDEXAMPLE000", "aws-secret-key-example/abc", pem(1190)}},
		{"a 500 KiB secret", []string{pem(375 * 1024)}},
	} {
		b.Run(c.name, func(b *testing.B) {
			r := NewRedactor(io.Discard, c.secrets...)
			n := 0
			for _, l := range r.byPrefix {
				n += len(l)
			}
			b.SetBytes(int64(len(line)))
			for b.Loop() {
				r.Write(line)
			}
			b.ReportMetric(float64(n), "masked-texts")
		})
	}
}
