package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/docker/go-units"
	"github.com/sirupsen/logrus"
)

// tailLines is how many output lines of the current build step an error keeps.
const tailLines = 20

// message is one message of an engine JSON stream (load, build, pull, push,
// import).
type message struct {
	Stream   string `json:"stream"`
	Status   string `json:"status"`
	ID       string `json:"id"`
	Progress *struct {
		Current int64 `json:"current"`
		Total   int64 `json:"total"`
	} `json:"progressDetail"`
	ErrorDetail *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"errorDetail"`
	Error string          `json:"error"`
	Aux   json.RawMessage `json:"aux"`
}

// StreamResult is what a stream carried besides progress.
type StreamResult struct {
	// Aux holds every aux payload, in order: push results, build image IDs.
	Aux []json.RawMessage
	// Output is the last text output: the current build step's header and up
	// to its last 20 lines.
	Output []string
}

// StreamError is a failure the engine reported inside a stream: load, build,
// pull and push answer HTTP 200 and then report errors as messages.
type StreamError struct {
	Message string
	Code    int
	// Status is the HTTP status of a registry's answer the engine passed on
	// in Message (see registryStatus); 0 when it names none.
	Status int
	// Output is the text output just before the error (the failing build
	// step's header and the tail of its output); empty for pull and push.
	Output []string
}

// HTTPStatus lets retry.IsRateLimit and retry.Transient see the
// registry's answer behind a pull or push failure.
func (e *StreamError) HTTPStatus() int { return e.Status }

func (e *StreamError) Error() string {
	if len(e.Output) == 0 {
		return e.Message
	}
	return e.Message + "\noutput of the failing step:\n  " + strings.Join(e.Output, "\n  ")
}

// ReadStream reads an engine JSON message stream to its end. Build output is
// logged line by line; layer progress once per layer state change, not per
// byte tick. An error message in the stream ends reading and is returned as a
// *StreamError.
func ReadStream(ctx context.Context, r io.Reader, log *logrus.Entry) (StreamResult, error) {
	return readStream(ctx, r, newStreamReader(log))
}

func readStream(ctx context.Context, r io.Reader, sr *streamReader) (StreamResult, error) {
	dec := json.NewDecoder(r)
	for {
		var m message
		if err := dec.Decode(&m); err != nil {
			sr.flush()
			if errors.Is(err, io.EOF) {
				return sr.result(), nil
			}
			if ctx.Err() != nil {
				return sr.result(), fmt.Errorf("reading engine messages: %w", ctx.Err())
			}
			return sr.result(), fmt.Errorf("reading engine messages: %w", err)
		}
		if err := sr.handle(m); err != nil {
			return sr.result(), err
		}
	}
}

type streamReader struct {
	log     *logrus.Entry
	aux     []json.RawMessage
	layers  map[string]string // layer ID → last status shown
	pending string            // stream text after the last newline
	step    string            // current build step's header
	tail    []string
	// onAux, when set, sees aux payloads first (BuildKit's trace and image
	// ID messages); true means it consumed the message.
	onAux func(id string, aux json.RawMessage) bool
	// output, when set, replaces the step header and tail in errors.
	outputFn func() []string
}

func newStreamReader(log *logrus.Entry) *streamReader {
	return &streamReader{log: logging.OrDiscard(log), layers: map[string]string{}}
}

func (s *streamReader) handle(m message) error {
	if m.ErrorDetail != nil || m.Error != "" {
		s.flush()
		return streamError(m, s.output())
	}
	if len(m.Aux) > 0 && (s.onAux == nil || !s.onAux(m.ID, m.Aux)) {
		s.aux = append(s.aux, m.Aux)
	}
	if m.Stream != "" {
		s.text(m.Stream)
	}
	if m.Status != "" {
		s.status(m)
	}
	return nil
}

// streamError is the error message m as a type: what the engine said, once.
func streamError(m message, output []string) *StreamError {
	e := &StreamError{Message: m.Error, Output: output}
	if m.ErrorDetail != nil {
		e.Code = m.ErrorDetail.Code
		if m.ErrorDetail.Message != "" {
			e.Message = m.ErrorDetail.Message
		}
	}
	if e.Message == "" {
		e.Message = "the engine reported an error without a message"
	}
	e.Status = registryStatus(e.Message)
	return e
}

// registryStatus is the HTTP status of a registry's answer as dockerd words
// it in a pull or push failure: dockerd passes the registry's error on as
// text (errorDetail.code stays 0), either its error code
// ("toomanyrequests: ...") or the status line ("received unexpected HTTP
// status: 429 Too Many Requests"). Two answers are recognised: a rate limit,
// the one answer dockerd gives up on at once (it retries 5xx and network
// errors itself) and the put retries; and a missing tag or repository
// (registry codes MANIFEST_UNKNOWN and NAME_UNKNOWN, or dockerd's own
// "manifest for <ref> not found"), which a pull reports as a miss. A missing
// blob is not a miss but a broken image, so it stays 0.
func registryStatus(msg string) int {
	m := strings.ToLower(msg)
	switch {
	case strings.Contains(m, "toomanyrequests") || strings.Contains(m, "429 too many requests"):
		return http.StatusTooManyRequests
	case strings.Contains(m, "manifest unknown") || strings.Contains(m, "name unknown") ||
		strings.HasPrefix(m, "manifest for ") && strings.Contains(m, " not found"):
		return http.StatusNotFound
	}
	return 0
}

// text splits stream text into lines; a line may span messages.
func (s *streamReader) text(t string) {
	s.pending += t
	for {
		i := strings.IndexByte(s.pending, '\n')
		if i < 0 {
			return
		}
		s.line(s.pending[:i])
		s.pending = s.pending[i+1:]
	}
}

func (s *streamReader) flush() {
	if s.pending != "" {
		s.line(s.pending)
		s.pending = ""
	}
}

func (s *streamReader) line(l string) {
	// A carriage return redraws a terminal line: keep what is shown last.
	if i := strings.LastIndexByte(strings.TrimRight(l, "\r"), '\r'); i >= 0 {
		l = l[i+1:]
	}
	l = strings.TrimRight(l, "\r\n \t")
	if l == "" {
		return
	}
	s.log.Info(l)
	if strings.HasPrefix(l, "Step ") && strings.Contains(l, " : ") {
		s.step, s.tail = l, s.tail[:0]
		return
	}
	if strings.HasPrefix(l, " ---> Running in ") || strings.HasPrefix(l, "Removing intermediate container ") {
		return // the builder's bookkeeping, not the step's output
	}
	if len(s.tail) == tailLines {
		s.tail = append(s.tail[:0], s.tail[1:]...)
	}
	s.tail = append(s.tail, l)
}

func (s *streamReader) status(m message) {
	if m.ID == "" {
		s.log.Info(m.Status)
		return
	}
	if s.layers[m.ID] == m.Status {
		return // a byte tick of a state already shown
	}
	s.layers[m.ID] = m.Status
	if m.Progress != nil && m.Progress.Total > 0 {
		s.log.Infof("%s: %s %s", m.ID, m.Status, units.HumanSize(float64(m.Progress.Total)))
		return
	}
	s.log.Infof("%s: %s", m.ID, m.Status)
}

func (s *streamReader) output() []string {
	if s.outputFn != nil {
		return s.outputFn()
	}
	var out []string
	if s.step != "" {
		out = append(out, s.step)
	}
	return append(out, s.tail...)
}

func (s *streamReader) result() StreamResult {
	return StreamResult{Aux: s.aux, Output: s.output()}
}

// readBody reads a stream body and closes it.
func readBody(ctx context.Context, body io.ReadCloser, log *logrus.Entry) (StreamResult, error) {
	defer body.Close()
	return ReadStream(ctx, body, log)
}
