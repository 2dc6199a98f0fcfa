package platformcheck

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/platforms"
)

var amd64 = platforms.MustParse("linux/amd64")

// crossCompile builds on the build platform and only copies into the target.
const crossCompile = `FROM --platform=$BUILDPLATFORM golang:1.22 AS build
RUN go build -o /app .
FROM alpine
COPY --from=build /app /app
`

func TestNeedsEmulation(t *testing.T) {
	tests := []struct {
		name       string
		dockerfile string
		buildArgs  map[string]string
		target     string // stage
		build      string // default linux/amd64
		// want maps a target platform to the steps, "stage:line:instruction@platform".
		want map[string][]string
	}{
		{
			name:       "cross-compiling: the RUN is on the build platform, the target stage only copies",
			dockerfile: crossCompile,
			want:       map[string][]string{"linux/arm64": nil, "linux/amd64": nil, "linux/arm/v7": nil},
		},
		{
			name:       "a RUN in the final stage runs on the target platform",
			dockerfile: "FROM alpine\nRUN apk add curl\n",
			want: map[string][]string{
				"linux/arm64":    {"stage 0:2:RUN apk add curl@linux/arm64"},
				"linux/amd64":    nil,
				"linux/amd64/v3": nil, // amd64 variants run natively on amd64
			},
		},
		{
			name:       "the build platform's variant is normalised: arm64 is arm64/v8",
			dockerfile: "FROM alpine\nRUN apk add curl\n",
			build:      "linux/arm64/v8",
			want: map[string][]string{
				"linux/arm64":  nil,
				"linux/amd64":  {"stage 0:2:RUN apk add curl@linux/amd64"},
				"linux/arm/v7": {"stage 0:2:RUN apk add curl@linux/arm/v7"},
			},
		},
		{
			name: "COPY-only stages need nothing",
			dockerfile: `FROM alpine AS files
COPY etc /etc/app
FROM files
COPY --from=files /etc/app /opt/app
COPY --from=0 /etc/app /srv/app
`,
			want: map[string][]string{"linux/arm64": nil},
		},
		{
			name: "a stage the target does not need is not built",
			dockerfile: `FROM alpine AS unused
RUN make
FROM --platform=$BUILDPLATFORM golang AS build
RUN go build
FROM scratch
COPY --from=build /app /app
`,
			want: map[string][]string{"linux/arm64": nil},
		},
		{
			name: "params.target picks the stage, and only what it needs",
			dockerfile: `FROM alpine AS test
RUN make test
FROM alpine
RUN make install
`,
			target: "TEST", // stage names ignore case
			want:   map[string][]string{"linux/arm64": {"test:2:RUN make test@linux/arm64"}},
		},
		{
			name: "FROM <stage> inherits --platform=$BUILDPLATFORM",
			dockerfile: `FROM --platform=$BUILDPLATFORM golang AS base
RUN go mod download
FROM base AS build
RUN go build
FROM alpine
COPY --from=build /app /app
`,
			want: map[string][]string{"linux/arm64": nil},
		},
		{
			name: "FROM <stage> takes the stage's platform over its own --platform, as BuildKit does",
			dockerfile: `FROM --platform=$BUILDPLATFORM golang AS base
FROM --platform=$TARGETPLATFORM base
RUN go build
`,
			want: map[string][]string{"linux/arm64": nil},
		},
		{
			name:       "--platform=$TARGETPLATFORM is the target platform",
			dockerfile: "FROM --platform=$TARGETPLATFORM alpine AS app\nRUN apk add curl\n",
			want: map[string][]string{
				"linux/arm64": {"app:2:RUN apk add curl@linux/arm64"},
				"linux/amd64": nil,
			},
		},
		{
			name:       "--platform built from TARGETOS and TARGETARCH",
			dockerfile: "FROM --platform=${TARGETOS}/${TARGETARCH} alpine\nRUN true\n",
			want:       map[string][]string{"linux/arm64": {"stage 0:2:RUN true@linux/arm64"}},
		},
		{
			name:       "a --platform naming another platform needs its emulator even for the build platform's image",
			dockerfile: "FROM --platform=linux/arm64 alpine AS tool\nRUN make\nFROM alpine\nCOPY --from=tool /x /x\n",
			want: map[string][]string{
				"linux/amd64": {"tool:2:RUN make@linux/arm64"},
				"linux/arm64": {"tool:2:RUN make@linux/arm64"},
			},
		},
		{
			name:       "--platform equal to the build platform runs natively",
			dockerfile: "FROM --platform=linux/amd64 alpine\nRUN make\n",
			want:       map[string][]string{"linux/arm64": nil},
		},
		{
			name: "ARG-expanded FROM image names and platforms, build args win over defaults",
			dockerfile: `ARG BUILDER=golang:1.22
ARG HOST=$BUILDPLATFORM
ARG BASE=alpine
FROM --platform=$HOST ${BUILDER} AS build
RUN go build
FROM ${BASE}
RUN apk add ca-certificates
`,
			buildArgs: map[string]string{"BASE": "debian"},
			want:      map[string][]string{"linux/arm64": {"stage 1:7:RUN apk add ca-certificates@linux/arm64"}},
		},
		{
			name: "an ARG naming a stage makes FROM follow that stage",
			dockerfile: `ARG FROM_STAGE=build
FROM --platform=$BUILDPLATFORM golang AS build
FROM $FROM_STAGE AS again
RUN go build
`,
			want: map[string][]string{"linux/arm64": nil},
		},
		{
			name: "the same ARG set by a build arg to an image",
			dockerfile: `ARG FROM_STAGE=build
FROM --platform=$BUILDPLATFORM golang AS build
FROM $FROM_STAGE AS again
RUN go build
`,
			buildArgs: map[string]string{"FROM_STAGE": "golang"},
			want:      map[string][]string{"linux/arm64": {"again:4:RUN go build@linux/arm64"}},
		},
		{
			name: "RUN --mount=from=<stage> makes that stage needed",
			dockerfile: `FROM alpine AS tools
RUN apk add protoc
FROM alpine AS unused
RUN make
FROM --platform=$BUILDPLATFORM golang
RUN --mount=from=tools,source=/usr/bin/protoc,target=/usr/bin/protoc make
`,
			want: map[string][]string{"linux/arm64": {"tools:2:RUN apk add protoc@linux/arm64"}},
		},
		{
			name: "COPY --from=<index> makes that stage needed; --from=<image> needs none",
			dockerfile: `FROM alpine
RUN make
FROM alpine AS other
RUN make other
FROM scratch
COPY --from=0 /x /x
COPY --from=busybox /bin/busybox /bin/
`,
			want: map[string][]string{"linux/arm64": {"stage 0:2:RUN make@linux/arm64"}},
		},
		{
			name:       "an ONBUILD RUN of a stage runs in the stage built FROM it",
			dockerfile: "FROM alpine AS base\nONBUILD RUN make\nFROM base\nCOPY x /x\n",
			want:       map[string][]string{"linux/arm64": {"stage 1:2:ONBUILD RUN make@linux/arm64"}},
		},
		{
			name:       "FROM scratch runs on the target platform even with --platform (BuildKit v0.13)",
			dockerfile: "FROM --platform=$BUILDPLATFORM scratch\nCOPY --from=busybox /bin/busybox /bin/sh\nRUN echo\n",
			want:       map[string][]string{"linux/arm64": {"stage 0:3:RUN echo@linux/arm64"}},
		},
		{
			name:       "a --platform that expands to nothing is taken as the target platform",
			dockerfile: "FROM --platform=$NOPE alpine\nRUN make\n",
			want: map[string][]string{
				"linux/arm64": {"stage 0:2:RUN make@linux/arm64"},
				"linux/amd64": nil,
			},
		},
		{
			// BuildKit v0.13 (checked with its dockerfile2llb) fails this
			// build: "failed to parse platform : \"\" is an invalid component".
			name:       "a global ARG BUILDPLATFORM without a default empties it, as in BuildKit v0.13",
			dockerfile: "ARG BUILDPLATFORM\nFROM --platform=$BUILDPLATFORM golang\nRUN go build\n",
			want:       map[string][]string{"linux/arm64": {"stage 0:3:RUN go build@linux/arm64"}},
		},
		{
			name:       "a build arg replaces an automatic platform ARG",
			dockerfile: "FROM --platform=$BUILDPLATFORM golang\nRUN go build\n",
			buildArgs:  map[string]string{"BUILDPLATFORM": "linux/arm64"},
			want:       map[string][]string{"linux/amd64": {"stage 0:2:RUN go build@linux/arm64"}},
		},
		{
			name:       "a multi-line RUN is named as written, by its first line",
			dockerfile: "FROM alpine\n\nRUN apk add \\\n  curl\n",
			want:       map[string][]string{"linux/arm64": {"stage 0:3:RUN apk add   curl@linux/arm64"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			build := amd64
			if tt.build != "" {
				build = platforms.MustParse(tt.build)
			}
			for target, want := range tt.want {
				steps, err := NeedsEmulation(Options{Dockerfile: []byte(tt.dockerfile), BuildArgs: tt.buildArgs, Target: tt.target, BuildPlatform: build}, platforms.MustParse(target))
				if err != nil {
					t.Fatalf("%s: %v", target, err)
				}
				if got := format(steps); !reflect.DeepEqual(got, want) {
					t.Errorf("%s: got %q, want %q", target, got, want)
				}
			}
		})
	}
}

func format(steps []Step) []string {
	var out []string
	for _, s := range steps {
		out = append(out, fmt.Sprintf("%s:%d:%s@%s", s.Stage, s.Line, s.Original, s.Platform))
	}
	return out
}

func TestNeedsEmulationErrors(t *testing.T) {
	tests := []struct {
		name, dockerfile, target, want string
	}{
		{"an unknown instruction", "FROM alpine\nFRM alpine\n", "", "unknown instruction"},
		{"no FROM", "ARG VERSION=1\n", "", "no FROM"},
		{"an empty Dockerfile", "# just a comment\n", "", "parsing the Dockerfile"},
		{"an instruction before FROM", "RUN make\n", "", "parsing the Dockerfile"},
		{"a bad stage name", "FROM alpine AS 1st\n", "", "parsing the Dockerfile"},
		{"an unknown target", "FROM alpine AS app\n", "test", `no stage "test"`},
		{"a FROM that expands to nothing", "ARG BASE\nFROM $BASE\n", "", "expands to nothing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			steps, err := NeedsEmulation(Options{Dockerfile: []byte(tt.dockerfile), Target: tt.target, BuildPlatform: amd64}, platforms.MustParse("linux/arm64"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, %v; want an error containing %q", steps, err, tt.want)
			}
		})
	}
}

func TestNative(t *testing.T) {
	tests := []struct {
		build, p string
		want     bool
	}{
		{"linux/amd64", "linux/amd64", true},
		{"linux/amd64", "linux/amd64/v2", true},
		{"linux/amd64", "linux/amd64/v4", true},
		{"linux/arm64", "linux/arm64/v8", true},
		{"linux/arm64/v8", "linux/arm64", true},
		{"linux/arm64", "linux/amd64", false},
		{"linux/amd64", "linux/arm64", false},
		{"linux/amd64", "linux/386", false},
		{"linux/arm64", "linux/arm/v7", false},
		{"linux/arm/v7", "linux/arm", true},
		{"linux/amd64", "windows/amd64", false},
	}
	for _, tt := range tests {
		if got := Native(platforms.MustParse(tt.build), platforms.MustParse(tt.p)); got != tt.want {
			t.Errorf("Native(%s, %s) = %v, want %v", tt.build, tt.p, got, tt.want)
		}
	}
}
