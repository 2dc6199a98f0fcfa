package imagefs

import (
	"encoding/json"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// InspectJSON returns docker_inspect.json: a JSON array with one object
// shaped like `docker image inspect` (Docker 20.10) output for img, so
// scripts reading e.g. `.[0].Config.Labels` keep working.
//
// Id is the config digest (the ID `docker load` gives on the classic image
// store). repoTag ("repo:tag") and repoDigest ("repo@sha256:…", written as
// given) fill RepoTags and RepoDigests; empty ones give []. Config and
// ContainerConfig come verbatim from the image config. Size and VirtualSize
// are the sum of the compressed layer sizes from the manifest: docker counts
// uncompressed bytes, which are only known after decompressing every layer.
// GraphDriver is empty: there is no daemon storage.
func InspectJSON(img v1.Image, repoTag string, repoDigest string) ([]byte, error) {
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read image config: %w", err)
	}
	var cf rawConfigFile
	if err := json.Unmarshal(raw, &cf); err != nil {
		return nil, fmt.Errorf("parse image config: %w", err)
	}
	id, err := img.ConfigName()
	if err != nil {
		return nil, fmt.Errorf("config digest: %w", err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	var size int64
	for _, l := range m.Layers {
		size += l.Size
	}

	out := inspectImage{
		ID:            id.String(),
		RepoTags:      nonNil(repoTag),
		RepoDigests:   nonNil(repoDigest),
		Comment:       cf.Comment,
		Created:       formatCreated(cf.Created),
		Container:     cf.Container,
		DockerVersion: cf.DockerVersion,
		Author:        cf.Author,
		Architecture:  cf.Architecture,
		Variant:       cf.Variant,
		Os:            cf.OS,
		OsVersion:     cf.OSVersion,
		Size:          size,
		VirtualSize:   size,
		RootFS:        inspectRootFS{Type: "layers", Layers: cf.RootFS.DiffIDs},
	}
	if cf.Config != nil {
		out.Config = *cf.Config
	}
	if cf.ContainerConfig != nil {
		out.ContainerConfig = *cf.ContainerConfig
	}
	if out.RootFS.Layers == nil {
		out.RootFS.Layers = []string{}
	}
	out.Metadata.LastTagTime = time.Time{}.Format(time.RFC3339Nano)
	b, err := json.MarshalIndent([]inspectImage{out}, "", "    ")
	if err != nil {
		return nil, fmt.Errorf("encode inspect output: %w", err)
	}
	return append(b, '\n'), nil
}

func nonNil(s string) []string {
	if s == "" {
		return []string{}
	}
	return []string{s}
}

// formatCreated reformats as docker does (RFC 3339, nanoseconds trimmed).
func formatCreated(s string) string {
	if s == "" {
		return time.Time{}.Format(time.RFC3339Nano)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return s
	}
	return t.Format(time.RFC3339Nano)
}

// rawConfigFile reads the image config keeping docker's fields that
// v1.ConfigFile drops (comment, container_config).
type rawConfigFile struct {
	Architecture    string           `json:"architecture"`
	Author          string           `json:"author"`
	Comment         string           `json:"comment"`
	Container       string           `json:"container"`
	ContainerConfig *containerConfig `json:"container_config"`
	Config          *containerConfig `json:"config"`
	Created         string           `json:"created"`
	DockerVersion   string           `json:"docker_version"`
	OS              string           `json:"os"`
	OSVersion       string           `json:"os.version"`
	Variant         string           `json:"variant"`
	RootFS          struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// containerConfig has the JSON of docker's container.Config: fields docker
// always prints have no omitempty.
type containerConfig struct {
	Hostname        string              `json:"Hostname"`
	Domainname      string              `json:"Domainname"`
	User            string              `json:"User"`
	AttachStdin     bool                `json:"AttachStdin"`
	AttachStdout    bool                `json:"AttachStdout"`
	AttachStderr    bool                `json:"AttachStderr"`
	ExposedPorts    map[string]struct{} `json:"ExposedPorts,omitempty"`
	Tty             bool                `json:"Tty"`
	OpenStdin       bool                `json:"OpenStdin"`
	StdinOnce       bool                `json:"StdinOnce"`
	Env             []string            `json:"Env"`
	Cmd             []string            `json:"Cmd"`
	Healthcheck     json.RawMessage     `json:"Healthcheck,omitempty"`
	ArgsEscaped     bool                `json:"ArgsEscaped,omitempty"`
	Image           string              `json:"Image"`
	Volumes         map[string]struct{} `json:"Volumes"`
	WorkingDir      string              `json:"WorkingDir"`
	Entrypoint      []string            `json:"Entrypoint"`
	NetworkDisabled bool                `json:"NetworkDisabled,omitempty"`
	MacAddress      string              `json:"MacAddress,omitempty"`
	OnBuild         []string            `json:"OnBuild"`
	Labels          map[string]string   `json:"Labels"`
	StopSignal      string              `json:"StopSignal,omitempty"`
	StopTimeout     *int                `json:"StopTimeout,omitempty"`
	Shell           []string            `json:"Shell,omitempty"`
}

type inspectRootFS struct {
	Type   string   `json:"Type"`
	Layers []string `json:"Layers"`
}

type inspectImage struct {
	ID              string          `json:"Id"`
	RepoTags        []string        `json:"RepoTags"`
	RepoDigests     []string        `json:"RepoDigests"`
	Parent          string          `json:"Parent"`
	Comment         string          `json:"Comment"`
	Created         string          `json:"Created"`
	Container       string          `json:"Container"`
	ContainerConfig containerConfig `json:"ContainerConfig"`
	DockerVersion   string          `json:"DockerVersion"`
	Author          string          `json:"Author"`
	Config          containerConfig `json:"Config"`
	Architecture    string          `json:"Architecture"`
	Variant         string          `json:"Variant,omitempty"`
	Os              string          `json:"Os"`
	OsVersion       string          `json:"OsVersion,omitempty"`
	Size            int64           `json:"Size"`
	VirtualSize     int64           `json:"VirtualSize"`
	GraphDriver     struct {
		Data map[string]string `json:"Data"`
		Name string            `json:"Name"`
	} `json:"GraphDriver"`
	RootFS   inspectRootFS `json:"RootFS"`
	Metadata struct {
		LastTagTime string `json:"LastTagTime"`
	} `json:"Metadata"`
}
