// Package engine owns everything a put says to the Docker Engine API: load,
// tag, build, pull, import and push, and the JSON message streams they answer
// with. It knows nothing of Concourse: plain Go values in, results out.
package engine

import (
	"context"
	"io"
	"net"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
)

// Client is the part of the Engine API client this package uses;
// *client.Client satisfies it. Create it with client.WithAPIVersionNegotiation:
// the daemon may be older than the client.
type Client interface {
	ImageLoad(ctx context.Context, input io.Reader, opts ...client.ImageLoadOption) (image.LoadResponse, error)
	ImageInspect(ctx context.Context, ref string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImageTag(ctx context.Context, source, target string) error
	ImageBuild(ctx context.Context, buildContext io.Reader, options build.ImageBuildOptions) (build.ImageBuildResponse, error)
	// BuildCancel cancels the BuildKit build with that BuildID.
	BuildCancel(ctx context.Context, id string) error
	ImagePull(ctx context.Context, ref string, options image.PullOptions) (io.ReadCloser, error)
	ImagePush(ctx context.Context, ref string, options image.PushOptions) (io.ReadCloser, error)
	ImageImport(ctx context.Context, source image.ImportSource, ref string, options image.ImportOptions) (io.ReadCloser, error)
	// DialHijack opens the /session endpoint for BuildKit.
	DialHijack(ctx context.Context, url, proto string, meta map[string][]string) (net.Conn, error)
}

var _ Client = (*client.Client)(nil)
