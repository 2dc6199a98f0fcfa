# The two commands a newcomer needs: `make demo` (the main job) and
# `make test` (every test). Both install missing Debian packages first.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/concourse-docker/docker-image-resource/pkg/resource.Version=$(VERSION)

.PHONY: all build deps test unit e2e demo bench-get bench-push bench-builders clean
.PHONY: bench bench-scale bench-platforms

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/check ./cmd/in ./cmd/out

deps:
	@bash scripts/install-deps.sh

# Every test: unit tests, then the end-to-end ones against a real registry
# and dockerd. -p 1 keeps packages from starting daemons at the same time.
test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -p 1 -timeout 60m ./...
	@$(MAKE) --no-print-directory fuzz-smoke

# Fuzzing (docs/reliability.md): `go test -fuzz` takes one package and one
# target per run. `make fuzz` runs each target for FUZZTIME; `make test`
# runs each briefly (fuzz-smoke). The seed corpora (f.Add and
# testdata/fuzz/) also run as plain tests in every `go test`.
FUZZTIME     ?= 60s
# Minimising a new interesting input stops the count of executions; the
# default 60 s per input starves short runs.
FUZZMINTIME  ?= 5s
FUZZ_TARGETS := ./pkg/protocol:FuzzParseRequest ./pkg/protocol:FuzzValidateNames \
                ./pkg/engine:FuzzReadSaveManifest ./pkg/baseimage:FuzzDetect \
                ./pkg/imagefs:FuzzExtractLayer ./pkg/imagefs:FuzzExtractEntries

.PHONY: fuzz fuzz-smoke
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz: $$name in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINTIME) $$pkg; \
	done

fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=3s

unit:
	$(GO) test -count=1 ./pkg/...

e2e: deps
	$(GO) test -count=1 -p 1 -timeout 60m ./test/...

# Benchmark of the get against the old resource's way (prints a table).
bench-get: deps
	BENCH_OUT=$(CURDIR)/docs/benchmark-get.md $(GO) test -run '^$$' -bench BenchmarkGet -benchtime 1x -timeout 30m ./test/bench/

# The benchmark suite (issue 6): daemon start, get against the old way, the
# seed scenario three ways, bytes uploaded, peak memory. Prints one table and
# writes it to docs/benchmarks.md. BENCH_SCALE=0.1 for a quick, smaller run.
bench: deps
	BENCH_OUT=$(CURDIR)/docs/benchmarks.md $(GO) test -run '^$$' -bench '^BenchmarkSuite$$' -benchtime 1x -timeout 30m -v ./test/bench/

# How the get and the put grow with the base (issue 14): bases of this
# machine's files of 100 MiB, 400 MiB and 1 GiB; the get, the floor of
# `tar -xzf` of its layers, puts with load_base, pulling FROM and with
# cache: true; ten puts on one base. On the host's dockerd, then in the
# resource image on its own (builds the image first, or takes it from the
# cache). Writes both tables into docs/benchmarks.md, next to `make bench`'s.
# Takes about 40 minutes (image ~20, host ~20); a quick look, a few
# minutes in all:
#   BENCH_SCALE_SIZES=30 BENCH_RUNS=1 BENCH_SCALE_TEN_MIB=30 make bench-scale
BENCH_SCALE_ENV = BENCH_OUT=$(CURDIR)/docs/benchmarks.md BENCH_SCALE_SIZES='$(BENCH_SCALE_SIZES)' \
                  BENCH_RUNS='$(BENCH_RUNS)' BENCH_SCALE_TEN_MIB='$(BENCH_SCALE_TEN_MIB)'
# Runs on a journaled ext4 made for it (scripts/journaled-fs.sh says why;
# BENCH_FS=root runs on the root filesystem). BENCH_SCALE_PARTS=image runs
# only the image's part; BENCH_SCALE_PARTS=stages only its multi-stage puts
# (registry cache against inline cache, issue 16) on the first size.
BENCH_SCALE_PARTS ?= host image
bench-scale: deps
	$(if $(filter host,$(BENCH_SCALE_PARTS)),$(BENCH_SCALE_ENV) scripts/journaled-fs.sh $(GO) test -run '^$$' -bench '^BenchmarkScale$$' -benchtime 1x -timeout 90m -v ./test/bench/)
	$(if $(filter image,$(BENCH_SCALE_PARTS)),$(BENCH_SCALE_ENV) scripts/journaled-fs.sh $(GO) test -run '^$$' -bench '^BenchmarkScaleImage$$' -benchtime 1x -timeout 90m -v ./test/image/)
	$(if $(filter stages,$(BENCH_SCALE_PARTS)),$(BENCH_SCALE_ENV) BENCH_SCALE_STAGES_ONLY=1 scripts/journaled-fs.sh $(GO) test -run '^$$' -bench '^BenchmarkScaleImage$$' -benchtime 1x -timeout 90m -v ./test/image/)

# The main job, narrated: a registry, a base fetched once, three builds on it.
# The put's direct push against the Engine API push (prints a table).
bench-push: deps
	BENCH_OUT=$(CURDIR)/docs/benchmark-push.md $(GO) test -run '^$$' -bench BenchmarkPush -benchtime 1x -timeout 30m ./test/bench/

# Classic builder against BuildKit on a load_base put, without and with a
# cache hit (issue 7's evidence for the default builder).
bench-builders: deps
	BENCH_OUT=$(CURDIR)/docs/benchmark-builders.md $(GO) test -run '^$$' -bench BenchmarkBuilders -benchtime 1x -timeout 30m ./test/bench/

# Two platforms in one put (one BuildKit solve) against one put per platform,
# on the image's dockerd 26.1 (issue 16); writes its section of
# docs/benchmarks.md.
bench-platforms: deps
	BENCH_OUT=$(CURDIR)/docs/benchmarks.md $(GO) test -run '^$$' -bench '^BenchmarkImagePlatforms$$' -benchtime 1x -timeout 30m -v ./test/image/

demo: deps
	@DEMO=1 $(GO) test -count=1 -v -run '^TestDemo$$' ./test/demo/

# The resource's image from the top-level Dockerfile, built through the
# Engine API (scripts/build-image): in the daemon DOCKER_HOST names when one
# answers, else in a private dockerd (root), saved to bin/docker-image-resource.tar.
# LOCAL_BASES=1 makes the bases on this machine (debootstrap, local Go)
# instead of pulling them: for machines that cannot reach Docker Hub.
IMAGE       ?= docker-image-resource:$(VERSION)
REVISION    ?= $(shell git rev-parse HEAD 2>/dev/null)
IMAGE_FLAGS ?= $(if $(LOCAL_BASES),-local-bases)

.PHONY: image
image: $(if $(LOCAL_BASES),deps)
	$(GO) run ./scripts/build-image -tag '$(IMAGE)' -version '$(VERSION)' -revision '$(REVISION)' $(IMAGE_FLAGS)

# The ten most complex and the ten longest functions in pkg/ (issue 13:
# none over complexity 20 or 80 lines). gocyclo comes from the module proxy.
GOCYCLO ?= github.com/fzipp/gocyclo/cmd/gocyclo@v0.6.0
.PHONY: metrics
metrics:
	@echo "complexity (gocyclo):"; $(GO) run $(GOCYCLO) -top 10 pkg
	@echo "lines:"; $(GO) run ./scripts/funclen -top 10 pkg

clean:
	rm -rf bin
