package push

import (
	"errors"
	"fmt"
	"testing"
)

// TestNeedsDaemonError: the reason to push through the daemon is a field,
// not text to cut out of the error, and the error still is ErrNeedsDaemon.
func TestNeedsDaemonError(t *testing.T) {
	err := fmt.Errorf("push: %w", needsDaemon("layer %s came from %s", "sha256:1", "base"))
	var nd *NeedsDaemonError
	if !errors.Is(err, ErrNeedsDaemon) || !errors.As(err, &nd) || nd.Reason != "layer sha256:1 came from base" {
		t.Fatalf("err %v (%T)", err, err)
	}
	if want := "push: the registry push cannot reuse this image's blobs: layer sha256:1 came from base"; err.Error() != want {
		t.Errorf("text %q, want %q", err, want)
	}
}
