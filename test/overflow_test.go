package test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

// TestPutRetryAfterBeyondBudget: the put's direct push meets a 429 whose
// Retry-After is 2^63-1 seconds (issue 12, item 11). It used to overflow
// into a negative wait: the upload came again at once, against the
// registry's rate limit, and the put went on as if nothing had been asked.
// Now a wait beyond the retry budget is not waited for: the put fails at
// once, saying what the registry asked, and writes no manifest.
func TestPutRetryAfterBeyondBudget(t *testing.T) {
	reg := testenv.StartRegistry(t, testenv.RegistryOptions{})
	base := testenv.BusyboxImage(t, testenv.ImageOptions{RandomLayers: []int64{256 << 10}})
	baseDigest := reg.Push(t, "overflow/base:1", base).String()
	srcDir := t.TempDir()
	getOK(t, filepath.Join(srcDir, "base"), map[string]any{
		"source": source(reg, "overflow/base", map[string]any{"tag": "1"}), "version": map[string]any{"digest": baseDigest},
		"params": map[string]any{"save": true},
	})
	writeFiles(t, srcDir, map[string]string{
		"app/Dockerfile": "FROM " + reg.Host + "/overflow/base:1\nCOPY data /data\n",
		"app/data":       strings.Repeat("layer data\n", 20000),
	})
	// The proxy is a registry host of its own: every blob is uploaded
	// through it, one at a time.
	p := testenv.StartFaultProxy(t, reg.Host, testenv.Fault{Kind: testenv.Fault429, Count: 1, RetryAfter: "9223372036854775807", Method: "PATCH"})
	src := map[string]any{"repository": p.Host + "/overflow/app", "username": reg.Username, "password": reg.Password, "max_concurrent_uploads": 1}
	var took time.Duration
	r := runOutWith(t, srcDir, map[string]any{"source": src, "params": map[string]any{"build": "app", "load_base": "base"}}, faultHooks, &took)
	if r.err == nil {
		t.Fatalf("the put succeeded after the registry asked it to wait 2^63-1 s:\n%s", r.stderr)
	}
	t.Logf("failed after %s: %v", took.Round(time.Millisecond), r.err)
	for _, w := range []string{"429 Too Many Requests", "it asked to retry after 9223372036854775807s, beyond the 10s retry budget"} {
		if !strings.Contains(r.err.Error(), w) {
			t.Errorf("the error does not say %q", w)
		}
	}
	if !strings.Contains(r.stderr, "are original blobs of the bases") || p.Faulted() != 1 {
		t.Errorf("not the direct push through one 429 (faulted %d):\n%s", p.Faulted(), r.stderr)
	}
	// Other blobs' uploads may have been under way; the refused one was
	// not sent again.
	for _, rq := range p.RequestsMatching("PATCH", "/blobs/uploads/") {
		if rq.Fault != 0 {
			if n := len(p.RequestsMatching("PATCH", rq.Path)); n != 1 {
				t.Errorf("the upload refused with the 429 was sent %d times", n)
			}
		}
	}
	for _, rq := range p.RequestsMatching("PUT", "/manifests/") {
		t.Errorf("a manifest was written: %v", rq)
	}
	if strings.Contains(r.stderr, "retrying in -") {
		t.Errorf("a negative wait:\n%s", r.stderr)
	}
}
