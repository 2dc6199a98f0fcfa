package scalebench

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CacheTarget is a Target whose puts can use a registry build cache
// (params.cache_repository): the image's dockerd 26.1, not the host's
// 20.10.
type CacheTarget interface {
	Target
	RegistryCache() bool
}

// Stages: the builder stage takes builderSleep and makes an artifact of
// artifactMiB random bytes; the final stage copies a file that changes on
// every put, then the artifact, so the builder stage is what a cache can
// save, and only one that holds the builder stage's own layers.
const (
	builderSleep = 10 * time.Second
	artifactMiB  = 32
)

// StagesResult is a multi-stage put on a fresh worker (every put starts its
// own dockerd with nothing but the load_base folder), its builder stage
// unchanged since the put before, with inline cache (cache: true: only the
// final image's layers, so the builder stage runs again) and with a
// registry cache (cache_repository, mode max: every stage's layers).
type StagesResult struct {
	Base             *Base
	Inline, Registry []PutResult
}

// runStages measures the two caches on base, each after an untimed put
// that fills its cache.
func runStages(b *testing.B, cfg Config, base *Base, tg Target, logf func(string, ...any)) *StagesResult {
	r := &StagesResult{Base: base}
	work := b.TempDir()
	defer os.RemoveAll(work)
	app := filepath.Join(work, "stages")
	df := fmt.Sprintf(`FROM %[1]s/%[2]s:%[3]s AS builder
RUN sleep %[4]d && dd if=/dev/urandom of=/artifact bs=1M count=%[5]d
FROM %[1]s/%[2]s:%[3]s
COPY change /change
COPY --from=builder /artifact /artifact
`, tg.RegistryHost(), base.Repo, BaseTag, int(builderSleep.Seconds()), artifactMiB)
	if err := os.MkdirAll(app, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(app, "Dockerfile"), []byte(df), 0o644); err != nil {
		b.Fatal(err)
	}
	logf("%d MiB: multi-stage puts: get, then inline and registry cache", base.MiB)
	tg.Get(b, filepath.Join(work, "base"), base)
	tg.DeleteBase(b, base)
	defer tg.RestoreBase(b, base)
	n := 0
	put := func(repo string, params map[string]any) PutResult {
		n++
		if err := os.WriteFile(filepath.Join(app, "change"), []byte(fmt.Sprintf("put %d\n", n)), 0o644); err != nil {
			b.Fatal(err)
		}
		params["build"], params["load_base"] = "stages", "base"
		before := tg.RegistryLog(b)
		syncDisks(b)
		p := parsePut(b, repo, tg.Put(b, work, repo, params, false), "daemon start", "load", "build", "push")
		if served := manifestsServed(newLines(before, tg.RegistryLog(b)), base.Repo); len(served) > 0 {
			b.Fatalf("put %s: the registry served the deleted base's manifest:\n%s", repo, strings.Join(served, "\n"))
		}
		return p
	}
	inline := map[string]any{"cache": true}
	repo := base.Repo + "-stages-inline"
	put(repo, inline)
	for range cfg.Runs {
		r.Inline = append(r.Inline, put(repo, map[string]any{"cache": true}))
	}
	repo = base.Repo + "-stages-registry"
	cache := map[string]any{"cache_repository": tg.RegistryHost() + "/" + base.Repo + "-stages-cache"}
	put(repo, cache)
	for range cfg.Runs {
		r.Registry = append(r.Registry, put(repo, map[string]any{"cache_repository": cache["cache_repository"]}))
	}
	return r
}

// markdown is the stages table.
func (r *StagesResult) markdown() string {
	var t strings.Builder
	fmt.Fprintf(&t, "\nA multi-stage put on a fresh worker (issue 16), on the %d MiB base loaded by load_base: a builder stage "+
		"(`RUN sleep %d && dd` of %d MiB of random bytes: a %s compile with a %d MiB result) unchanged since the put before, "+
		"a final stage that copies a file changed on every put, then the artifact. Each cache was filled by an untimed put first:\n\n",
		r.Base.MiB, int(builderSleep.Seconds()), artifactMiB, builderSleep, artifactMiB)
	t.WriteString("| fresh-worker put | total | daemon start | load | build | push |\n|---|---|---|---|---|---|\n")
	row := func(name string, runs []PutResult) {
		fmt.Fprintf(&t, "| %s | **%s** | %s | %s | %s | %s |\n", name, dur(phase(runs, "total")), dur(phase(runs, "daemon start")),
			dur(phase(runs, "load")), dur(phase(runs, "build")), dur(phase(runs, "push")))
	}
	row("`cache: true` (inline cache: the builder stage runs again)", r.Inline)
	row("`cache_repository` (registry cache, mode max: the builder stage `CACHED`)", r.Registry)
	fmt.Fprintf(&t, "| registry / inline (totals) | %s | | | %s | |\n", ratio(phase(r.Registry, "total"), phase(r.Inline, "total")),
		ratio(phase(r.Registry, "build"), phase(r.Inline, "build")))
	return t.String()
}
