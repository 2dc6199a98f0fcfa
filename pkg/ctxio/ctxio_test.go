package ctxio

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestStopsWhenTheContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := Reader(ctx, strings.NewReader("abcdef"))
	var out bytes.Buffer
	w := Writer(ctx, &out)
	b := make([]byte, 3)
	if n, err := r.Read(b); n != 3 || err != nil {
		t.Fatalf("read %d, %v", n, err)
	}
	if n, err := w.Write(b); n != 3 || err != nil {
		t.Fatalf("write %d, %v", n, err)
	}
	cancel()
	if _, err := r.Read(b); !errors.Is(err, context.Canceled) {
		t.Errorf("read after cancel: %v", err)
	}
	if _, err := w.Write(b); !errors.Is(err, context.Canceled) {
		t.Errorf("write after cancel: %v", err)
	}
	if _, err := io.Copy(w, r); !errors.Is(err, context.Canceled) {
		t.Errorf("copy after cancel: %v", err)
	}
	if out.String() != "abc" {
		t.Errorf("written %q", out.String())
	}
}
