package resource

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
)

func TestAbortMessage(t *testing.T) {
	term := &AbortedError{Signal: syscall.SIGTERM}
	for _, c := range []struct {
		phase string
		err   error
		want  string
	}{
		{"build", fmt.Errorf("build: reading engine messages: %w", context.Canceled), "aborted (SIGTERM) during build"},
		{"push", context.Canceled, "aborted (SIGTERM) during push"},
		{"download", fmt.Errorf("download x: %w", term), "aborted (SIGTERM) during download"},
		{"", errors.New("stopping dockerd: processes still running"), "aborted (SIGTERM) (stopping dockerd: processes still running)"},
		// A cancellation is known by its type, not its words.
		{"load", errors.New("the daemon said: context canceled"), "aborted (SIGTERM) during load (the daemon said: context canceled)"},
	} {
		if got := abortMessage(term, c.phase, c.err); got != c.want {
			t.Errorf("abortMessage(%q, %v) = %q, want %q", c.phase, c.err, got, c.want)
		}
	}
	if got := abortMessage(&AbortedError{Signal: syscall.SIGINT}, "load", context.Canceled); got != "aborted (SIGINT) during load" {
		t.Errorf("SIGINT: %q", got)
	}
}

// A request cut short by the abort fails with the context's cause; code
// that asks whether it was cancelled must still hear yes.
func TestAbortedIsCanceled(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(&AbortedError{Signal: syscall.SIGTERM})
	err := fmt.Errorf("push: %w", context.Cause(ctx))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("errors.Is(%v, context.Canceled) = false", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("an abort is no deadline")
	}
}

func TestEnterPhase(t *testing.T) {
	enterPhase(context.Background(), "ignored") // no note: nothing happens
	ctx, n := withPhaseNote(context.Background())
	enterPhase(ctx, "daemon start")
	enterPhase(ctx, "build")
	if n.get() != "build" {
		t.Errorf("phase %q", n.get())
	}
}
