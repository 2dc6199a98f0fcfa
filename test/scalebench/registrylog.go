package scalebench

import (
	"regexp"
	"strings"
)

// newLines is what the log gained since before; the log only grows, so
// anything else ("" when it was rotated or restarted from scratch) keeps
// every line, which can only make the load_base check stricter.
func newLines(before, after string) string {
	if rest, ok := strings.CutPrefix(after, before); ok {
		return rest
	}
	return after
}

// manifestsServed are the registry's log lines of a GET or HEAD of one of
// repo's manifests (by tag or digest) that it answered with 2xx or 3xx.
// The registry logs each request twice: an access-log line
// (`"GET /v2/<repo>/manifests/1 HTTP/1.1" 200 ...`) and a "response
// completed" line (http.request.uri=/v2/... http.response.status=200,
// logfmt: quoted only when need be); either counts.
func manifestsServed(log, repo string) []string {
	uri := `/v2/` + regexp.QuoteMeta(repo) + `/manifests/[^ "]+`
	access := regexp.MustCompile(`"(?:GET|HEAD) ` + uri + ` HTTP/[0-9.]+" ([0-9]{3}) `)
	completed := regexp.MustCompile(`http\.request\.uri="?` + uri)
	status := regexp.MustCompile(`http\.response\.status=([0-9]{3})`)
	method := regexp.MustCompile(`http\.request\.method=(?:GET|HEAD)\b`)
	var served []string
	for _, l := range strings.Split(log, "\n") {
		code := ""
		if m := access.FindStringSubmatch(l); m != nil {
			code = m[1]
		} else if completed.MatchString(l) && method.MatchString(l) {
			if m := status.FindStringSubmatch(l); m != nil {
				code = m[1]
			}
		}
		if code != "" && (code[0] == '2' || code[0] == '3') {
			served = append(served, l)
		}
	}
	return served
}
