package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/resource"
	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

// BenchmarkCheck measures what a check costs against the real registry on
// loopback, in requests and time: for a tag that exists, and for a tag or
// repository the registry says it does not know, which check confirms (a
// GET for the 404's body and a GET /v2/, issue 12 item 3) before it
// reports []. Run with
//
//	go test -run '^$' -bench BenchmarkCheck -benchtime 200x ./test/bench/
func BenchmarkCheck(b *testing.B) {
	reg := testenv.StartRegistry(b, testenv.RegistryOptions{})
	reg.Push(b, "team/app:1", testenv.BusyboxImage(b, testenv.ImageOptions{}))
	for _, c := range []struct{ name, repo, tag, want string }{
		{"known tag", "team/app", "1", `"digest"`},
		{"unknown tag", "team/app", "nope", "[]"},
		{"unknown repository", "team/none", "1", "[]"},
	} {
		b.Run(c.name, func(b *testing.B) {
			// A pass-through proxy counts the requests.
			p := testenv.StartFaultProxy(b, reg.Host)
			req, _ := json.Marshal(map[string]any{"source": map[string]any{
				"repository": p.Host + "/" + c.repo, "tag": c.tag, "username": reg.Username, "password": reg.Password,
			}})
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var out, errb bytes.Buffer
				env := resource.Env{Stdin: bytes.NewReader(req), Stdout: &out, Stderr: &errb, Args: []string{"check"}}
				if err := resource.Check(context.Background(), env); err != nil || !strings.Contains(out.String(), c.want) {
					b.Fatalf("check: %v, stdout %q", err, out.String())
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(p.Requests())/float64(b.N), "requests/op")
		})
	}
}
