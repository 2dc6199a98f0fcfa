package engine

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	controlapi "github.com/moby/buildkit/api/services/control"
	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// traceMessage encodes st the way dockerd sends it: a moby.buildkit.trace
// aux whose payload is a JSON string of the protobuf bytes.
func traceMessage(t *testing.T, st *controlapi.StatusResponse) string {
	t.Helper()
	b, err := proto.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	aux, _ := json.Marshal(b)
	m, _ := json.Marshal(map[string]any{"id": auxBuildKitTrace, "aux": json.RawMessage(aux)})
	return string(m) + "\n"
}

func TestBuildKitProgressIsReadable(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	ts := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(t0.Add(d)) }
	stream := traceMessage(t, &controlapi.StatusResponse{Vertexes: []*controlapi.Vertex{
		{Digest: "sha256:a", Name: "[1/3] FROM base", Started: ts(0), Completed: ts(0), Cached: true},
		{Digest: "sha256:b", Name: "[2/3] RUN make", Started: ts(0)},
	}}) + traceMessage(t, &controlapi.StatusResponse{Logs: []*controlapi.VertexLog{
		{Vertex: "sha256:b", Stream: 1, Msg: []byte("compiling\npart")},
		{Vertex: "sha256:b", Stream: 2, Msg: []byte("a warning on stderr\n")},
		{Vertex: "sha256:b", Stream: 1, Msg: []byte("ial line\n")},
	}}) + traceMessage(t, &controlapi.StatusResponse{
		Vertexes: []*controlapi.Vertex{{Digest: "sha256:b", Name: "[2/3] RUN make", Started: ts(0), Completed: ts(1500 * time.Millisecond)}},
		Statuses: []*controlapi.VertexStatus{{ID: "sha256:0123456789abcdef0123", Vertex: "sha256:c", Total: 2048, Completed: ts(2 * time.Second)}},
	}) + traceMessage(t, &controlapi.StatusResponse{Vertexes: []*controlapi.Vertex{
		{Digest: "sha256:d", Name: "[3/3] RUN false", Started: ts(2 * time.Second)},
	}, Logs: []*controlapi.VertexLog{{Vertex: "sha256:d", Msg: []byte("about to fail\n")}}}) +
		traceMessage(t, &controlapi.StatusResponse{Vertexes: []*controlapi.Vertex{
			{Digest: "sha256:d", Name: "[3/3] RUN false", Started: ts(2 * time.Second), Completed: ts(3 * time.Second), Error: "exit code: 1"},
		}}) +
		`{"id":"moby.image.id","aux":{"ID":"sha256:feed"}}` + "\n" +
		`{"errorDetail":{"message":"executor failed running [/bin/sh -c false]: exit code: 1"}}` + "\n"

	var logs bytes.Buffer
	l := logrus.New()
	l.SetOutput(&logs)
	l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true, DisableQuote: true})
	sr := newStreamReader(logrus.NewEntry(l))
	p := newBKProgress(sr.log)
	sr.outputFn = p.output
	imageID := ""
	sr.onAux = func(id string, aux json.RawMessage) bool {
		switch id {
		case auxBuildKitTrace:
			p.trace(aux)
			return true
		case auxImageID:
			imageID = buildKitImageID(aux)
			return true
		}
		return false
	}
	_, err := readStream(t.Context(), strings.NewReader(stream), sr)
	for _, want := range []string{
		"#1 [1/3] FROM base", "#1 CACHED", "#2 [2/3] RUN make", "#2 compiling", "#2 a warning on stderr", "#2 partial line", "#2 DONE 1.5s",
		"#3 layer 0123456789ab 2.048kB done", "#4 [3/3] RUN false", "#4 about to fail", "level=error msg=#4 exit code: 1\n",
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	// A line split across messages is one line even when the other stream
	// wrote in between; the error level is not repeated in the text.
	if strings.Contains(logs.String(), "parta warning") || strings.Contains(logs.String(), "ERROR") {
		t.Errorf("split or doubled lines:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "moby.buildkit") {
		t.Errorf("raw trace messages in the log:\n%s", logs.String())
	}
	var se *StreamError
	if !asStreamError(err, &se) || !strings.Contains(se.Error(), "#4 [3/3] RUN false\n  about to fail") {
		t.Errorf("error %v should carry the failing step and its output", err)
	}
	if imageID != "sha256:feed" {
		t.Errorf("image ID %q", imageID)
	}
}

func asStreamError(err error, se **StreamError) bool {
	e, ok := err.(*StreamError)
	*se = e
	return ok
}
