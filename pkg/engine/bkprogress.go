package engine

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/docker/go-units"
	controlapi "github.com/moby/buildkit/api/services/control"
	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/proto"
)

// bkProgress turns BuildKit's trace messages into lines a person watching a
// Concourse build can follow, in the style of `docker buildx --progress
// plain`: "#3 [2/4] RUN make" when a step starts, its output as "#3 ..."
// lines, and "#3 DONE 1.2s", "#3 CACHED" or, at error level, "#3 <why it
// failed>" when it ends.
type bkProgress struct {
	log   *logrus.Entry
	steps map[string]*bkStep // by vertex digest
	n     int
	last  *bkStep // most recently started: the error's context if none failed
	fail  *bkStep
	bad   int // trace messages that could not be decoded
	// soft, when set, is asked about a failed step (by name and error):
	// true makes it a warning, not the build's failure (a cache import
	// that found nothing, a cache export allowed to fail).
	soft func(name, err string) bool
}

type bkStep struct {
	n              int
	name           string
	started, ended bool
	// partial is the log text after the last newline, per stream (1
	// stdout, 2 stderr): a line split across progress messages is logged
	// whole, so a secret in it is masked, even when the other stream
	// writes in between.
	partial map[int64]string
	tail    []string
	shown   map[string]bool // status IDs already reported done
}

func newBKProgress(log *logrus.Entry) *bkProgress {
	return &bkProgress{log: log, steps: map[string]*bkStep{}}
}

// trace handles one moby.buildkit.trace aux payload: a JSON string holding a
// base64 protobuf StatusResponse.
func (p *bkProgress) trace(aux json.RawMessage) {
	var raw []byte
	var st controlapi.StatusResponse
	if json.Unmarshal(aux, &raw) != nil || proto.Unmarshal(raw, &st) != nil {
		p.bad++
		if p.bad == 1 {
			p.log.Debug("buildkit: a progress message could not be decoded")
		}
		return
	}
	for _, v := range st.Vertexes {
		p.vertex(v)
	}
	for _, s := range st.Statuses {
		p.status(s)
	}
	for _, l := range st.Logs {
		p.logs(l)
	}
	for _, w := range st.Warnings {
		p.warning(w.Vertex, w.Short)
	}
}

// warning is a step's warning (a Dockerfile lint, a deprecated option,
// a cache import that found nothing); soft sees it too.
func (p *bkProgress) warning(vertex string, short []byte) {
	s := p.step(vertex, "")
	msg := strings.TrimSpace(string(short))
	p.log.Warnf("#%d %s", s.n, msg)
	if p.soft != nil {
		p.soft(s.name, msg)
	}
}

func (p *bkProgress) step(digest, name string) *bkStep {
	s, ok := p.steps[digest]
	if !ok {
		p.n++
		s = &bkStep{n: p.n, name: name, shown: map[string]bool{}, partial: map[int64]string{}}
		p.steps[digest] = s
	}
	if s.name == "" {
		s.name = name
	}
	return s
}

func (p *bkProgress) vertex(v *controlapi.Vertex) {
	s := p.step(v.Digest, v.Name)
	if (v.Started != nil || v.Completed != nil) && !s.started {
		s.started = true
		p.last = s
		p.log.Infof("#%d %s", s.n, s.name)
	}
	if v.Completed == nil || s.ended {
		return
	}
	s.ended = true
	p.flush(s)
	switch {
	case v.Error != "" && p.soft != nil && p.soft(s.name, v.Error):
		p.log.Warnf("#%d %s", s.n, v.Error)
	case v.Error != "":
		p.fail = s
		// The level already says ERROR; buildx's "#3 ERROR: ..." would
		// repeat it.
		p.log.Errorf("#%d %s", s.n, v.Error)
	case v.Cached:
		p.log.Infof("#%d CACHED", s.n)
	default:
		took := time.Duration(0)
		if v.Started != nil {
			took = v.Completed.AsTime().Sub(v.Started.AsTime())
		}
		p.log.Infof("#%d DONE %.1fs", s.n, took.Seconds())
	}
}

// status reports layer transfers and exports once each, when done.
func (p *bkProgress) status(vs *controlapi.VertexStatus) {
	if vs.Completed == nil {
		return
	}
	s := p.step(vs.Vertex, "")
	if s.shown[vs.ID] {
		return
	}
	s.shown[vs.ID] = true
	// The ID says what moved (a layer digest, "exporting layers"); Name is
	// only the transfer's state.
	what := vs.ID
	if short := logging.ShortID(what); short != what {
		what = "layer " + short
	}
	if vs.Total > 0 {
		p.log.Infof("#%d %s %s done", s.n, what, units.HumanSize(float64(vs.Total)))
		return
	}
	p.log.Infof("#%d %s done", s.n, what)
}

func (p *bkProgress) logs(l *controlapi.VertexLog) {
	s := p.step(l.Vertex, "")
	text := s.partial[l.Stream] + string(l.Msg)
	for {
		i := strings.IndexByte(text, '\n')
		if i < 0 {
			break
		}
		p.line(s, text[:i])
		text = text[i+1:]
	}
	s.partial[l.Stream] = text
}

func (p *bkProgress) flush(s *bkStep) {
	streams := make([]int64, 0, len(s.partial))
	for st, text := range s.partial {
		if text != "" {
			streams = append(streams, st)
		}
	}
	slices.Sort(streams) // stdout before stderr
	for _, st := range streams {
		p.line(s, s.partial[st])
		delete(s.partial, st)
	}
}

func (p *bkProgress) line(s *bkStep, l string) {
	if i := strings.LastIndexByte(strings.TrimRight(l, "\r"), '\r'); i >= 0 {
		l = l[i+1:]
	}
	l = strings.TrimRight(l, "\r\n \t")
	if l == "" {
		return
	}
	p.log.Infof("#%d %s", s.n, l)
	if len(s.tail) == tailLines {
		s.tail = append(s.tail[:0], s.tail[1:]...)
	}
	s.tail = append(s.tail, l)
}

// output is the failing step's header and output tail, for the error.
func (p *bkProgress) output() []string {
	s := p.fail
	if s == nil {
		s = p.last
	}
	if s == nil {
		return nil
	}
	p.flush(s)
	return append([]string{fmt.Sprintf("#%d %s", s.n, s.name)}, s.tail...)
}
