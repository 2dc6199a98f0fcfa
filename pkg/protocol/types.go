// Package protocol owns the Concourse wire format of this resource: the
// request and response types of check, in and out, their strict decoding,
// defaults and validation. It is the only package that knows the JSON names of
// source and params fields, but for the ca_certs and client_certs entries:
// their one type is pkg/certs's, which the registry client and the put's
// dockerd take as they are.
package protocol

import "github.com/concourse-docker/docker-image-resource/pkg/certs"

// Source is the resource's `source` configuration, shared by all three verbs.
type Source struct {
	Repository string  `json:"repository"`
	Tag        Literal `json:"tag"`
	Username   string  `json:"username"`
	Password   string  `json:"password"`

	AdditionalPrivateRegistries []PrivateRegistry `json:"additional_private_registries"`

	AWSAccessKeyID     string `json:"aws_access_key_id"`
	AWSSecretAccessKey string `json:"aws_secret_access_key"`
	AWSSessionToken    string `json:"aws_session_token"`

	InsecureRegistries []string           `json:"insecure_registries"`
	RegistryMirror     string             `json:"registry_mirror"`
	CACerts            []certs.CA         `json:"ca_certs"`
	ClientCerts        []certs.ClientCert `json:"client_certs"`

	// Pointers tell "not set" (default) from an explicit, invalid 0.
	MaxConcurrentDownloads *int `json:"max_concurrent_downloads"`
	MaxConcurrentUploads   *int `json:"max_concurrent_uploads"`
	StartupTimeout         *int `json:"startup_timeout"`

	Platform *Platform `json:"platform"`
	Debug    Bool      `json:"debug"`

	// Tag tracking, with registry-image-resource's names (tagtracking.go).
	TagRegex           string   `json:"tag_regex"`
	CreatedAtSort      Bool     `json:"created_at_sort"`
	SemverConstraint   string   `json:"semver_constraint"`
	PreReleases        Bool     `json:"pre_releases"`
	PreReleasePrefixes []string `json:"pre_release_prefixes"`
	Variant            string   `json:"variant"`

	Email Retired `json:"email" retired:"registries stopped using an email address for login; remove it"`
}

// PrivateRegistry is an entry of additional_private_registries.
type PrivateRegistry struct {
	Registry string `json:"registry"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// Platform selects one image of a multi-platform index.
type Platform struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant"`
}

// Version is the resource's version: the digest the registry holds, and
// with tag tracking (tagtracking.go) the tag that names it.
type Version struct {
	Tag    string `json:"tag,omitempty"`
	Digest string `json:"digest"`
}

// InParams are the params of a get.
type InParams struct {
	Save         Bool      `json:"save"`
	Rootfs       Bool      `json:"rootfs"`
	SkipDownload Bool      `json:"skip_download"`
	Platform     *Platform `json:"platform"`
	// Platforms, with save: true, saves each listed platform's image of an
	// index into oci/ (inplatforms.go).
	Platforms []string `json:"platforms"`
}

// OutParams are the params of a put.
type OutParams struct {
	Build          string            `json:"build"`
	Dockerfile     string            `json:"dockerfile"`
	TargetName     string            `json:"target_name"`
	BuildArgs      map[string]Scalar `json:"build_args"`
	BuildArgsFile  string            `json:"build_args_file"`
	Labels         map[string]Scalar `json:"labels"`
	LabelsFile     string            `json:"labels_file"`
	DockerBuildkit *Switch           `json:"docker_buildkit"` // nil: the default builder
	Secrets        map[string]Secret `json:"secrets"`

	LoadBase  BaseEntry   `json:"load_base"`
	LoadBases []BaseEntry `json:"load_bases"`
	CacheFrom []BaseEntry `json:"cache_from"`
	Cache     Bool        `json:"cache"`
	CacheTag  Literal     `json:"cache_tag"`

	Load           string  `json:"load"`
	LoadFile       string  `json:"load_file"`
	LoadRepository string  `json:"load_repository"`
	LoadTag        Literal `json:"load_tag"`
	ImportFile     string  `json:"import_file"`
	PullRepository string  `json:"pull_repository"`
	PullTag        Literal `json:"pull_tag"`

	TagFile        string `json:"tag_file"`
	Tag            string `json:"tag"`
	TagPrefix      string `json:"tag_prefix"`
	AdditionalTags string `json:"additional_tags"`
	TagAsLatest    Bool   `json:"tag_as_latest"`

	// The semver the put pushes when source tracks semver (tagtracking.go).
	Version     Literal `json:"version"`
	VersionFile string  `json:"version_file"`
	BumpAliases Bool    `json:"bump_aliases"`

	// Fan-out push (fanout.go).
	AdditionalRepositories []string `json:"additional_repositories"`

	// Registry build cache and multi-platform builds (buildcache.go).
	CacheRepository string   `json:"cache_repository"`
	CacheMode       string   `json:"cache_mode"`
	CacheRequired   Bool     `json:"cache_required"`
	Platforms       []string `json:"platforms"`

	Rootfs Retired `json:"rootfs" retired:"the put no longer exports a rootfs; use get_params: {rootfs: true} on the put step"`
}

// BaseEntry is a load_base, load_bases or cache_from entry: a folder path
// (a string), or an object that also names the image for FROM, for folders
// whose files do not (oci-build-task's output).
type BaseEntry struct {
	Path       string  `json:"path"`
	Repository string  `json:"repository"`
	Tag        Literal `json:"tag"`
}

// Secret is a build secret: exactly one of Value (the secret itself,
// usually a ((var)) Concourse fills from its credential manager), Source (a
// file among the put's inputs) or Env (a variable of the put's own
// environment, which Concourse fills only with BUILD_*, ATC_EXTERNAL_URL and
// the resource type image's variables).
type Secret struct {
	Value  string `json:"value"`
	Source string `json:"source"`
	Env    string `json:"env"`
}

// String never shows the value: a request is never printed whole, but a %v
// of params must not leak it either.
func (s Secret) String() string {
	v := ""
	if s.Value != "" {
		v = "***"
	}
	return "{Value:" + v + " Source:" + s.Source + " Env:" + s.Env + "}"
}

// GoString is String for %#v.
func (s Secret) GoString() string { return s.String() }

// CheckRequest is what check reads on stdin.
type CheckRequest struct {
	Source  Source   `json:"source"`
	Version *Version `json:"version"`
}

// InRequest is what in reads on stdin.
type InRequest struct {
	Source  Source   `json:"source"`
	Version *Version `json:"version"`
	Params  InParams `json:"params"`
}

// OutRequest is what out reads on stdin.
type OutRequest struct {
	Source Source    `json:"source"`
	Params OutParams `json:"params"`
}

// MetadataField is one name/value pair Concourse shows on the build page.
type MetadataField struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Response is what in and out print on stdout.
type Response struct {
	Version  Version         `json:"version"`
	Metadata []MetadataField `json:"metadata,omitempty"`
}

// Metadata builds metadata fields from name/value pairs, dropping empty
// values (Concourse shows them as blank rows otherwise).
func Metadata(pairs ...string) []MetadataField {
	var out []MetadataField
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] != "" {
			out = append(out, MetadataField{Name: pairs[i], Value: pairs[i+1]})
		}
	}
	return out
}
