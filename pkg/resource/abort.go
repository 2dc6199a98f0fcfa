package resource

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
)

// AbortedError is the cause of a command's context when Concourse aborts the
// build (SIGTERM) or a person presses Ctrl-C (SIGINT).
type AbortedError struct{ Signal os.Signal }

func (e *AbortedError) Error() string { return fmt.Sprintf("aborted (%s)", signalName(e.Signal)) }

// Is makes an abort a cancellation to errors.Is(err, context.Canceled):
// net/http fails a request with its context's cause, this error, where a
// plainly cancelled one gives context.Canceled.
func (e *AbortedError) Is(target error) bool { return target == context.Canceled }

func signalName(s os.Signal) string {
	switch s {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	}
	return s.String()
}

// phaseKey carries a *phaseNote: what the command is doing now, so an abort
// can say during what it came.
type phaseKey struct{}

type phaseNote struct{ v atomic.Value }

func withPhaseNote(ctx context.Context) (context.Context, *phaseNote) {
	n := &phaseNote{}
	return context.WithValue(ctx, phaseKey{}, n), n
}

func (n *phaseNote) get() string {
	s, _ := n.v.Load().(string)
	return s
}

// enterPhase records that the command now does name ("daemon start",
// "build", "download", ...). Without a note in ctx (tests calling commands
// in-process) it does nothing.
func enterPhase(ctx context.Context, name string) {
	if n, ok := ctx.Value(phaseKey{}).(*phaseNote); ok {
		n.v.Store(name)
	}
}

// abortMessage is what Main prints when a signal stopped the command: the
// signal and the phase, and the command's own error only when it says more
// than "cancelled".
func abortMessage(ab *AbortedError, phase string, err error) string {
	msg := ab.Error()
	if phase != "" {
		msg += " during " + phase
	}
	// An abort is a cancellation too (AbortedError.Is).
	if err != nil && !errors.Is(err, context.Canceled) {
		msg += fmt.Sprintf(" (%s)", err)
	}
	return msg
}
