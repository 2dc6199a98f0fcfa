package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/containerd/platforms"
	controlapi "github.com/moby/buildkit/api/services/control"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/secrets/secretsprovider"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
	"github.com/tonistiigi/fsutil"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// SolveOptions describe a Dockerfile build through BuildKit's control API
// (dockerd's /grpc), for what the Engine API's /build cannot do: a
// registry build cache, and a result written as an OCI image layout that
// the put pushes itself. dockerd must run the containerd image store: on
// the classic store its BuildKit has neither the registry cache exporter
// nor the oci exporter (docs/issue16-research.md).
type SolveOptions struct {
	// Build: context, Dockerfile, target, build args, labels, secrets,
	// credentials, certs.d and network mode, as for Build. CacheFrom,
	// Tags, PullParent and NoCache are not used.
	Build BuildOptions
	// CacheImports are references BuildKit reads cache from: a registry
	// cache, or an image with inline cache metadata.
	CacheImports []string
	// CacheExport, when set, is where the cache goes after the build.
	CacheExport *CacheExport
	// OutputDir receives the image as an OCI image layout (index.json
	// naming the one image manifest, or the index of Platforms).
	OutputDir string
	// Platforms, when set, are built in one solve into one index
	// ("linux/amd64", "linux/arm64").
	Platforms []string
	// Unsupported, when set, is called before the build with the
	// Platforms dockerd's BuildKit cannot run (no emulator on the worker);
	// its error stops the build.
	Unsupported func(platforms []string) error
}

// CacheExport is a registry cache to write.
type CacheExport struct {
	Ref  string // repository:tag
	Mode string // "max" or "min"
	// Required makes a failed export fail the build; otherwise it is
	// reported in SolveResult.CacheExportError.
	Required bool
}

// CacheExportError is a failed export of a required registry cache: the
// image was built but must not be pushed.
type CacheExportError struct {
	Ref    string
	Reason string // BuildKit's
}

func (e *CacheExportError) Error() string {
	return fmt.Sprintf("exporting the build cache to %s failed, and params.cache_required is set, so nothing is pushed: %s", e.Ref, e.Reason)
}

// SolveResult is what a solve made.
type SolveResult struct {
	// Digest is the image manifest's digest ("sha256:..."), as the layout
	// names it.
	Digest string
	// Config is the image config's digest.
	Config string
	// CacheImportErrors are the cache imports BuildKit could not read
	// (a first build, a wrong name), one line each; the build ran without.
	CacheImportErrors []string
	// CacheExportError says why the cache export failed when it was not
	// Required; empty when it worked.
	CacheExportError string
}

// Vertex names BuildKit gives its cache steps (buildkit v0.13's
// solver/llbsolver and cache/remotecache).
const (
	importCachePrefix = "importing cache manifest from "
	exportCachePrefix = "exporting cache to "
)

// ErrBuildKitStore is returned when dockerd's BuildKit is not the
// containerd image store's: it lacks the registry cache and oci exporters.
var ErrBuildKitStore = errors.New("dockerd's BuildKit does not run on the containerd image store")

// Solve builds o.Build's Dockerfile with BuildKit's Dockerfile frontend
// over /grpc, reads FROM images from dockerd's image store first (loaded
// bases are not pulled), imports and exports the cache as asked, and
// writes the image into o.OutputDir.
func Solve(ctx context.Context, cli Client, o SolveOptions, log *logrus.Entry) (SolveResult, error) {
	log = logging.OrDiscard(log)
	dfName, mounts, err := solveInputs(o.Build)
	if err != nil {
		return SolveResult{}, fmt.Errorf("build: %w", err)
	}
	// Inline cache is a cache export here, not /build's build arg.
	shown := o.Build
	shown.InlineCache = false
	opts, _ := imageBuildOptions(shown, "")
	logBuild(log, o.Build, opts)

	bk, err := buildKitClient(ctx, cli)
	if err != nil {
		return SolveResult{}, err
	}
	defer bk.Close()
	native, err := checkStore(ctx, bk)
	if err != nil {
		return SolveResult{}, err
	}
	if missing := unsupported(o.Platforms, native); len(missing) > 0 && o.Unsupported != nil {
		if err := o.Unsupported(missing); err != nil {
			return SolveResult{}, err
		}
	}

	so := solveOpt(o, dfName, mounts, log)
	progress := newBKProgress(log)
	var res SolveResult
	var exportErr *CacheExportError
	progress.soft = cacheSteps(o.CacheExport, &res, &exportErr)
	resp, err := runSolve(ctx, bk, so, progress)
	if err != nil {
		if ctx.Err() != nil {
			return SolveResult{}, fmt.Errorf("build: %w", ctx.Err())
		}
		if exportErr != nil {
			return SolveResult{}, exportErr
		}
		return SolveResult{}, fmt.Errorf("build: %w", &StreamError{Message: solveMessage(err), Output: progress.output()})
	}
	res.Digest = resp.ExporterResponse[exptypes.ExporterImageDigestKey]
	res.Config = resp.ExporterResponse[exptypes.ExporterImageConfigDigestKey]
	if !strings.HasPrefix(res.Digest, "sha256:") {
		return SolveResult{}, fmt.Errorf("build: BuildKit reported no image digest (exporter response %v)", slices.Sorted(maps.Keys(resp.ExporterResponse)))
	}
	if err := checkLayout(o.OutputDir, res.Digest); err != nil {
		return SolveResult{}, fmt.Errorf("build: %w", err)
	}
	log.Infof("built image %s", logging.ShortID(res.Digest))
	return res, nil
}

// solveInputs are the build context and the Dockerfile's folder as the
// frontend reads them (it applies .dockerignore itself), and the
// Dockerfile's name in its folder.
func solveInputs(b BuildOptions) (string, map[string]fsutil.FS, error) {
	ctxDir, err := contextDir(b.ContextDir)
	if err != nil {
		return "", nil, err
	}
	df := b.Dockerfile
	if df == "" {
		df = filepath.Join(b.ContextDir, "Dockerfile")
	}
	dfPath, _, err := dockerfileOf(df)
	if err != nil {
		return "", nil, err
	}
	ctxFS, err := fsutil.NewFS(ctxDir)
	if err != nil {
		return "", nil, fmt.Errorf("context %s: %w", b.ContextDir, err)
	}
	dfFS, err := fsutil.NewFS(filepath.Dir(dfPath))
	if err != nil {
		return "", nil, fmt.Errorf("the folder of the Dockerfile %s: %w", df, err)
	}
	return filepath.Base(dfPath), map[string]fsutil.FS{"context": ctxFS, "dockerfile": dfFS}, nil
}

// solveOpt is the solve's request: the frontend and its inputs, the
// session's credentials and secrets, the OCI layout export, the caches.
func solveOpt(o SolveOptions, dfName string, mounts map[string]fsutil.FS, log *logrus.Entry) bkclient.SolveOpt {
	b := o.Build
	attachables := []session.Attachable{newSessionAuth(b.Auth, sessionTLS(b.CertsDir))}
	if len(b.Secrets) > 0 {
		m := make(map[string][]byte, len(b.Secrets))
		for _, sec := range b.Secrets {
			m[sec.ID] = sec.Value
		}
		attachables = append(attachables, secretsprovider.FromMap(m))
	}
	so := bkclient.SolveOpt{
		Frontend:      "dockerfile.v0",
		FrontendAttrs: frontendAttrs(b, dfName, o.Platforms),
		LocalMounts:   mounts,
		Session:       attachables,
		Exports: []bkclient.ExportEntry{{
			Type: bkclient.ExporterOCI, OutputDir: o.OutputDir,
			// tar=false: blobs go into OutputDir's content store, not a tarball.
			Attrs: map[string]string{"tar": "false", "oci-mediatypes": "true"},
		}},
	}
	if b.NetworkMode == "host" {
		// BuildKit refuses RUN --network=host (and a forced host
		// network) without this entitlement; dockerd grants it.
		so.AllowedEntitlements = []string{"network.host"}
	}
	for _, ref := range o.CacheImports {
		so.CacheImports = append(so.CacheImports, bkclient.CacheOptionsEntry{Type: "registry", Attrs: map[string]string{"ref": ref}})
		log.Infof("cache: BuildKit reads build cache from %s", ref)
	}
	if e := o.CacheExport; e != nil {
		so.CacheExports = []bkclient.CacheOptionsEntry{{Type: "registry", Attrs: map[string]string{
			"ref": e.Ref, "mode": e.Mode,
			// The OCI image-manifest form: registries that refuse the
			// default (an index whose config is no image config; ECR,
			// moby/buildkit#1143) take it, and so does distribution.
			"image-manifest": "true", "oci-mediatypes": "true",
			"ignore-error": strconv.FormatBool(!e.Required),
		}}}
		log.Infof("cache: BuildKit exports the build cache (mode=%s) to %s after the build", e.Mode, e.Ref)
	}
	if b.InlineCache {
		// As BUILDKIT_INLINE_CACHE does on /build: the image's config
		// carries its cache, for a later cache: true or cache_from.
		so.CacheExports = append(so.CacheExports, bkclient.CacheOptionsEntry{Type: "inline"})
	}
	return so
}

// cacheSteps is the progress printer's soft hook: a cache import that
// found nothing goes into res, so does a failed export that may fail; a
// required export's failure goes into *exportErr and fails the build.
func cacheSteps(export *CacheExport, res *SolveResult, exportErr **CacheExportError) func(name, why string) bool {
	return func(name, why string) bool {
		switch {
		case strings.HasPrefix(name, importCachePrefix):
			// A miss shows as a warning and, on some versions, as the
			// step's error too: said once.
			if e := fmt.Sprintf("%s (%s)", strings.TrimPrefix(name, importCachePrefix), why); !slices.Contains(res.CacheImportErrors, e) {
				res.CacheImportErrors = append(res.CacheImportErrors, e)
			}
			return true
		case strings.HasPrefix(name, exportCachePrefix) && export != nil:
			if export.Required {
				*exportErr = &CacheExportError{Ref: export.Ref, Reason: why}
				return false
			}
			res.CacheExportError = why
			return true
		}
		return false
	}
}

// runSolve runs the solve, its progress printed as it comes.
func runSolve(ctx context.Context, bk *bkclient.Client, so bkclient.SolveOpt, progress *bkProgress) (*bkclient.SolveResponse, error) {
	ch := make(chan *bkclient.SolveStatus)
	g, gctx := errgroup.WithContext(ctx)
	var resp *bkclient.SolveResponse
	g.Go(func() error {
		var err error
		resp, err = bk.Solve(gctx, nil, so, ch)
		return err
	})
	g.Go(func() error {
		for st := range ch {
			progress.solveStatus(st)
		}
		return nil
	})
	return resp, g.Wait()
}

// frontendAttrs are the Dockerfile frontend's options for b.
func frontendAttrs(b BuildOptions, filename string, platforms []string) map[string]string {
	a := map[string]string{
		"filename": filename,
		// dockerd's image store first: loaded bases satisfy FROM without a
		// pull (the default asks the registry first on this store).
		"image-resolve-mode": "local",
	}
	if b.Target != "" {
		a["target"] = b.Target
	}
	if len(platforms) > 0 {
		// The frontend builds each in parallel; the exporter writes an
		// index of them.
		a["platform"] = strings.Join(platforms, ",")
	}
	for k, v := range b.BuildArgs {
		a["build-arg:"+k] = v
	}
	for k, v := range b.Labels {
		a["label:"+k] = v
	}
	if b.NetworkMode != "" {
		a["force-network-mode"] = b.NetworkMode
	}
	return a
}

// solveMessage is BuildKit's error without its gRPC wrapping.
func solveMessage(err error) string {
	msg := err.Error()
	for _, p := range []string{"rpc error: code = Unknown desc = ", "failed to solve: "} {
		msg = strings.ReplaceAll(msg, p, "")
	}
	return msg
}

// buildKitClient is a BuildKit client over dockerd's /grpc endpoint, with
// sessions over /session, as buildx's docker driver dials them.
func buildKitClient(ctx context.Context, cli Client) (*bkclient.Client, error) {
	c, err := bkclient.New(ctx, "",
		bkclient.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return cli.DialHijack(ctx, "/grpc", "h2c", nil)
		}),
		bkclient.WithSessionDialer(func(ctx context.Context, proto string, meta map[string][]string) (net.Conn, error) {
			return cli.DialHijack(ctx, "/session", proto, meta)
		}))
	if err != nil {
		return nil, fmt.Errorf("build: connecting to dockerd's BuildKit: %w", err)
	}
	return c, nil
}

// snapshotterLabel is set on the workers of dockerd's containerd image
// store only (buildx's docker driver reads it the same way).
const snapshotterLabel = "org.mobyproject.buildkit.worker.snapshotter"

// checkStore fails unless dockerd's BuildKit runs on the containerd store,
// and returns the platforms its worker runs: natively or through an
// emulator the worker has (BuildKit probes each by running a binary).
func checkStore(ctx context.Context, bk *bkclient.Client) ([]ocispecs.Platform, error) {
	ws, err := bk.ListWorkers(ctx)
	if err != nil {
		return nil, fmt.Errorf("build: asking dockerd's BuildKit for its workers: %w", err)
	}
	for _, w := range ws {
		if w.Labels[snapshotterLabel] != "" {
			return w.Platforms, nil
		}
	}
	return nil, fmt.Errorf("build: %w", ErrBuildKitStore)
}

// unsupported are the wanted platforms none of the worker's matches.
func unsupported(wanted []string, worker []ocispecs.Platform) []string {
	var out []string
	for _, w := range wanted {
		p, err := platforms.Parse(w)
		if err != nil {
			out = append(out, w)
			continue
		}
		if !slices.ContainsFunc(worker, func(n ocispecs.Platform) bool { return platforms.Only(n).Match(p) }) {
			out = append(out, w)
		}
	}
	return out
}

// checkLayout makes sure the OCI layout in dir names the image digest.
func checkLayout(dir, digest string) error {
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		return fmt.Errorf("BuildKit wrote no OCI layout: %w", err)
	}
	var idx struct {
		Manifests []struct {
			Digest string `json:"digest"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return fmt.Errorf("the OCI layout's index.json: %w", err)
	}
	for _, m := range idx.Manifests {
		if m.Digest == digest {
			return nil
		}
	}
	return fmt.Errorf("the OCI layout's index.json does not name the image %s BuildKit reported", digest)
}

// solveStatus feeds one status update of a /grpc solve to the printer /build's
// trace messages use.
func (p *bkProgress) solveStatus(st *bkclient.SolveStatus) {
	for _, v := range st.Vertexes {
		p.vertex(&controlapi.Vertex{Digest: string(v.Digest), Name: v.Name, Started: stamp(v.Started),
			Completed: stamp(v.Completed), Cached: v.Cached, Error: v.Error})
	}
	for _, s := range st.Statuses {
		p.status(&controlapi.VertexStatus{ID: s.ID, Vertex: string(s.Vertex), Name: s.Name, Total: s.Total,
			Current: s.Current, Started: stamp(s.Started), Completed: stamp(s.Completed)})
	}
	for _, l := range st.Logs {
		p.logs(&controlapi.VertexLog{Vertex: string(l.Vertex), Stream: int64(l.Stream), Msg: l.Data})
	}
	for _, w := range st.Warnings {
		p.warning(string(w.Vertex), w.Short)
	}
}

func stamp(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}
