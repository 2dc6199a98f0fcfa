package scalebench

import (
	"strings"
	"testing"
)

// The registry's own lines (distribution 2.8, Debian's docker-registry):
// the log check finds a manifest of the base served in either form, and
// nothing in a refusal, another repository's manifest or a blob.
func TestManifestsServed(t *testing.T) {
	const (
		access404   = `127.0.0.1 - - [04/Dec/2026:21:56:36 +0000] "HEAD /v2/bench/scale-30m/manifests/1 HTTP/1.1" 404 91 "" "curl/7.88.1"`
		logfmt404   = `time="2026-12-04T21:56:36.911Z" level=error msg="response completed with error" err.code="manifest unknown" http.request.method=HEAD http.request.uri=/v2/bench/scale-30m/manifests/1 http.response.status=404 vars.name=bench/scale-30m`
		access200   = `172.18.0.3 - - [04/Dec/2026:21:56:36 +0000] "GET /v2/bench/scale-30m/manifests/sha256:0123abcd HTTP/1.1" 200 1234 "" "docker/26.1.5"`
		logfmt200   = `time="2026-12-04T21:56:36.911Z" level=info msg="response completed" http.request.method=HEAD http.request.uri="/v2/bench/scale-30m/manifests/1" http.response.status=200`
		otherRepo   = `127.0.0.1 - - [04/Dec/2026:21:56:36 +0000] "GET /v2/bench/scale-30m-lb-0/manifests/latest HTTP/1.1" 200 91 "" "go"`
		blob        = `127.0.0.1 - - [04/Dec/2026:21:56:36 +0000] "HEAD /v2/bench/scale-30m/blobs/sha256:0123abcd HTTP/1.1" 200 0 "" "go"`
		putManifest = `time="2026-12-04T21:56:36.911Z" level=info msg="response completed" http.request.method=PUT http.request.uri="/v2/bench/scale-30m/manifests/1" http.response.status=201`
	)
	refused := strings.Join([]string{access404, logfmt404, otherRepo, blob, putManifest}, "\n")
	if got := manifestsServed(refused, "bench/scale-30m"); len(got) != 0 {
		t.Errorf("served in a log without a served GET or HEAD: %q", got)
	}
	if got := manifestsServed(refused+"\n"+access200+"\n"+logfmt200, "bench/scale-30m"); len(got) != 2 {
		t.Errorf("served = %q, want the two lines of 200", got)
	}
	if got := newLines("a\nb\n", "a\nb\nc\n"); got != "c\n" {
		t.Errorf("newLines = %q", got)
	}
}
