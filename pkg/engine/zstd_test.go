package engine

import (
	"context"
	"testing"

	"github.com/docker/docker/api/types"
)

// versioned is a Client that only answers ServerVersion.
type versioned struct {
	Client
	version string
	err     error
}

func (v versioned) ServerVersion(context.Context) (types.Version, error) {
	return types.Version{Version: v.version}, v.err
}

// TestZstdLoads: zstd layers go to Docker 23 and later as they are; older
// daemons, and daemons whose version is unknown, get them decompressed.
func TestZstdLoads(t *testing.T) {
	for _, c := range []struct {
		cli  Client
		want bool
	}{
		{versioned{version: "20.10.24+dfsg1"}, false},
		{versioned{version: "23.0.0"}, true},
		{versioned{version: "26.1.5+dfsg1"}, true},
		{versioned{version: "dev"}, false},
		{versioned{err: context.DeadlineExceeded}, false},
		{nil, false},
	} {
		if got := zstdLoads(t.Context(), c.cli); got != c.want {
			t.Errorf("%+v: %v, want %v", c.cli, got, c.want)
		}
	}
}
