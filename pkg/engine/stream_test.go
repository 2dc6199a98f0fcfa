package engine

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/retry"
)

func TestReadStreamBuildOutputAndAux(t *testing.T) {
	log, hook := testLog(t)
	stream := `{"stream":"Step 1/2 : FROM base\n"}
{"stream":" ---\u003e 0123456789ab\n"}
{"stream":"Step 2/2 : RUN echo hi\n"}
{"stream":"partial "}{"stream":"line\nsecond\r\n"}
{"stream":"\n"}
{"stream":"50%\r100%\n"}
{"aux":{"ID":"sha256:aaaa"}}
{"stream":"Successfully built aaaa\n"}
{"stream":"no newline at the end"}`
	res, err := ReadStream(context.Background(), strings.NewReader(stream), log)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"Step 1/2 : FROM base", " ---> 0123456789ab", "Step 2/2 : RUN echo hi",
		"partial line", "second", "100%", "Successfully built aaaa", "no newline at the end",
	}
	if got := messages(hook); !reflect.DeepEqual(got, want) {
		t.Fatalf("logged %q\nwant   %q", got, want)
	}
	if len(res.Aux) != 1 || string(res.Aux[0]) != `{"ID":"sha256:aaaa"}` {
		t.Fatalf("aux %s", res.Aux)
	}
	if want := []string{"Step 2/2 : RUN echo hi", "partial line", "second", "100%", "Successfully built aaaa", "no newline at the end"}; !reflect.DeepEqual(res.Output, want) {
		t.Fatalf("output %q", res.Output)
	}
}

func TestReadStreamErrorInside200(t *testing.T) {
	log, _ := testLog(t)
	var lines []string
	for i := 0; i < 30; i++ {
		lines = append(lines, `{"stream":"line `+string(rune('a'+i%26))+`\n"}`)
	}
	stream := `{"stream":"Step 3/3 : RUN make\n"}` + "\n" + strings.Join(lines, "\n") +
		"\n" + `{"errorDetail":{"code":2,"message":"The command '/bin/sh -c make' returned a non-zero code: 2"},"error":"The command '/bin/sh -c make' returned a non-zero code: 2"}` +
		"\n" + `{"stream":"never read\n"}`
	_, err := ReadStream(context.Background(), strings.NewReader(stream), log)
	var se *StreamError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T), want *StreamError", err, err)
	}
	if se.Code != 2 || !strings.Contains(se.Message, "non-zero code: 2") {
		t.Fatalf("StreamError %+v", se)
	}
	if len(se.Output) != 1+tailLines || se.Output[0] != "Step 3/3 : RUN make" || se.Output[len(se.Output)-1] != "line d" {
		t.Fatalf("output tail %q", se.Output)
	}
	if msg := err.Error(); !strings.Contains(msg, "Step 3/3 : RUN make") || !strings.Contains(msg, "\n  line d") {
		t.Fatalf("error text %q", msg)
	}
}

func TestReadStreamPlainErrorAndGarbage(t *testing.T) {
	_, err := ReadStream(context.Background(), strings.NewReader(`{"status":"x"}{"error":"unauthorized: authentication required"}`), nil)
	var se *StreamError
	if !errors.As(err, &se) || se.Message != "unauthorized: authentication required" || err.Error() != se.Message {
		t.Fatalf("error %v", err)
	}
	_, err = ReadStream(context.Background(), strings.NewReader(`{"status":"x"} not json`), nil)
	if err == nil || errors.As(err, &se) {
		t.Fatalf("garbage gave %v", err)
	}
}

func TestReadStreamCompactsProgress(t *testing.T) {
	log, hook := testLog(t)
	stream := `{"status":"The push refers to repository [r/x]"}
{"status":"Preparing","progressDetail":{},"id":"l1"}
{"status":"Preparing","progressDetail":{},"id":"l2"}
{"status":"Pushing","progressDetail":{"current":512,"total":2048},"id":"l1"}
{"status":"Pushing","progressDetail":{"current":1024,"total":2048},"id":"l1"}
{"status":"Pushing","progressDetail":{"current":2048,"total":2048},"id":"l1"}
{"status":"Layer already exists","progressDetail":{},"id":"l2"}
{"status":"Pushed","progressDetail":{},"id":"l1"}
{"status":"1: digest: sha256:abc size: 528"}
{"progressDetail":{},"aux":{"Tag":"1","Digest":"sha256:abc","Size":528}}`
	res, err := ReadStream(context.Background(), strings.NewReader(stream), log)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"The push refers to repository [r/x]", "l1: Preparing", "l2: Preparing", "l1: Pushing 2.048kB",
		"l2: Layer already exists", "l1: Pushed", "1: digest: sha256:abc size: 528",
	}
	if got := messages(hook); !reflect.DeepEqual(got, want) {
		t.Fatalf("logged %q\nwant   %q", got, want)
	}
	if len(res.Aux) != 1 || len(res.Output) != 0 {
		t.Fatalf("result %+v", res)
	}
}

func TestIsNotFound(t *testing.T) {
	for msg, want := range map[string]bool{
		"manifest for r/x:1 not found: manifest unknown: manifest unknown": true,
		"repository name not known to registry: name unknown":              true,
		"unauthorized: authentication required":                            false,
		"blob unknown: blob unknown to registry":                           false,
		"filesystem layer verification failed: not found":                  false,
	} {
		// As the stream reader makes it from dockerd's error message.
		if got := isNotFound(streamError(message{Error: msg}, nil)); got != want {
			t.Errorf("isNotFound(%q) = %v", msg, got)
		}
	}
	if isNotFound(errors.New("manifest unknown")) {
		t.Error("a plain error counted as a miss")
	}
}

// TestReadStreamRateLimit: dockerd passes a registry's 429 on as text
// (errorDetail.code 0); the stream reader makes it a status once, which
// retry.IsRateLimit sees through the push's wrapping.
func TestReadStreamRateLimit(t *testing.T) {
	for msg, want := range map[string]bool{
		"toomanyrequests: injected by testenv fault proxy":          true,
		"received unexpected HTTP status: 429 Too Many Requests":    true,
		"received unexpected HTTP status: 503 Service Unavailable":  false,
		"unauthorized: authentication required":                     false,
		"The command '/bin/sh -c make' returned a non-zero code: 2": false,
	} {
		stream := `{"status":"The push refers to repository [r/x]"}` + "\n" +
			`{"errorDetail":{"message":` + strconv.Quote(msg) + `},"error":` + strconv.Quote(msg) + `}`
		_, err := ReadStream(context.Background(), strings.NewReader(stream), nil)
		err = fmt.Errorf("push r/x:1: %w", err)
		var se *StreamError
		if !errors.As(err, &se) || se.Message != msg {
			t.Fatalf("%q: error %v", msg, err)
		}
		if got := retry.IsRateLimit(err); got != want {
			t.Errorf("%q: IsRateLimit %v (status %d), want %v", msg, got, se.Status, want)
		}
	}
}
