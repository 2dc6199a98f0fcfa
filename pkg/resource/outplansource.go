package resource

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/ecr"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
)

// imageSource is the params field a put's image comes from; its value is
// the field's name, as messages, the log's phases and the metadata say it.
type imageSource string

const (
	sourceLoad     imageSource = "load"
	sourceBuild    imageSource = "build"
	sourceLoadFile imageSource = "load_file"
	sourceImport   imageSource = "import_file"
	sourcePull     imageSource = "pull_repository"
)

// imageSources is the old resource's priority: the first one a request
// gives wins, the rest are ignored.
var imageSources = []imageSource{sourceLoad, sourceBuild, sourceLoadFile, sourceImport, sourcePull}

// given is the request's value of the source's field.
func (src imageSource) given(params *protocol.OutParams) string {
	switch src {
	case sourceLoad:
		return params.Load
	case sourceBuild:
		return params.Build
	case sourceLoadFile:
		return params.LoadFile
	case sourceImport:
		return params.ImportFile
	case sourcePull:
		return params.PullRepository
	}
	return ""
}

// imagePlan is where the put's image comes from, checked.
type imagePlan struct {
	source imageSource
	given  string // the field's value as the request gives it, for messages
	path   string // the source's file or folder, absolute (pull_repository: "")

	// ref is the image to take: load_file's repository:tag inside the
	// tarball, pull_repository's repository:tag to pull.
	ref string
	// loadFolder is load's folder, recognised (pkg/baseimage).
	loadFolder *baseimage.Folder

	// build only
	dockerfile string // absolute
	buildArgs  map[string]string
	labels     map[string]string
	target     string // params.target_name
	cache      bool   // params.cache
}

// planImage chooses the image source and checks what it names.
func planImage(env Env, s *session, params *protocol.OutParams, abs func(string) string) (imagePlan, error) {
	img, err := chooseSource(s, params)
	if err != nil {
		return img, err
	}
	if img.source != sourcePull {
		img.path = abs(img.given)
	}
	switch img.source {
	case sourceLoad:
		// The name does not matter: the image is pushed as source.repository.
		img.loadFolder, err = checkSavedImage("load", protocol.BaseEntry{Path: params.Load}, img.path)
	case sourceBuild:
		err = planBuild(env, &img, params, abs)
	case sourceLoadFile:
		img.ref = params.LoadRepository + ":" + orDefault(string(params.LoadTag), "latest")
		err = checkLoadFile(params, img.path)
	case sourceImport:
		err = checkImportFile(params, img.path)
	case sourcePull:
		img.ref = params.PullRepository + ":" + orDefault(string(params.PullTag), "latest")
		s.log.Warn("params.pull_repository is deprecated: get the image with save: true and put it with params.load instead")
	}
	return img, err
}

func chooseSource(s *session, params *protocol.OutParams) (imagePlan, error) {
	var img imagePlan
	var ignored []string
	for _, src := range imageSources {
		switch {
		case src.given(params) == "":
		case img.source == "":
			img.source, img.given = src, src.given(params)
		default:
			ignored = append(ignored, string(src))
		}
	}
	if img.source == "" {
		return img, errors.New("must specify build, load, load_file, import_file, or pull_repository params")
	}
	if len(ignored) > 0 {
		s.log.Warnf("using params.%s; ignoring params.%s (only one image source is used)", img.source, strings.Join(ignored, ", params."))
	}
	return img, nil
}

// planBuild checks the build context and Dockerfile, and reads build args
// and labels.
func planBuild(env Env, img *imagePlan, params *protocol.OutParams, abs func(string) string) error {
	if fi, err := os.Stat(img.path); err != nil || !fi.IsDir() {
		return fmt.Errorf("params.build: the build context %s is not a folder", params.Build)
	}
	img.dockerfile = filepath.Join(img.path, "Dockerfile")
	if params.Dockerfile != "" {
		img.dockerfile = abs(params.Dockerfile)
	}
	if err := checkDockerfile(params, img.dockerfile); err != nil {
		return err
	}
	var err error
	if img.buildArgs, err = buildArgs(env, params, abs); err != nil {
		return err
	}
	if img.labels, err = labels(params, abs); err != nil {
		return err
	}
	img.target, img.cache = params.TargetName, bool(params.Cache)
	return nil
}

// checkDockerfile fails in the old resource's words, with the field and
// the reason, when the Dockerfile is not a file.
func checkDockerfile(params *protocol.OutParams, df string) error {
	fi, err := os.Stat(df)
	if err == nil && fi.Mode().IsRegular() {
		return nil
	}
	field, why := "params.dockerfile", "it does not exist; "+relativeHint
	if params.Dockerfile == "" {
		field, why = "params.build", "the build context has no Dockerfile; name the file with params.dockerfile"
	}
	if err == nil {
		why = "it is a folder"
		if !fi.IsDir() {
			why = "it is not a regular file"
		}
	}
	return fmt.Errorf("%s: It doesn't appear that given Dockerfile: %q is a file: %s", field, df, why)
}

func checkLoadFile(params *protocol.OutParams, path string) error {
	if params.LoadRepository == "" {
		return errors.New("params.load_file: must specify load_repository param (the repository of the image inside the tarball, and load_tag when it is not latest)")
	}
	return regularFile("params.load_file", path)
}

func checkImportFile(params *protocol.OutParams, path string) error {
	if err := regularFile("params.import_file", path); err != nil {
		return err
	}
	return checkRootfsTarball("params.import_file", params.ImportFile, path)
}

// ecrHosts lists the registries the image source pulls from, for ECR
// tokens: the Dockerfile's and build args' hosts, pull_repository's.
func (img imagePlan) ecrHosts() ([]string, error) {
	var hosts []string
	if img.dockerfile != "" {
		b, err := os.ReadFile(img.dockerfile)
		if err != nil {
			return nil, fmt.Errorf("reading %s for ECR registries: %w", img.dockerfile, err)
		}
		hosts = dockerfileECRHosts(string(b))
	}
	for _, k := range sortedKeys(img.buildArgs) {
		hosts = append(hosts, ecr.FindHosts(img.buildArgs[k])...)
	}
	if img.source == sourcePull {
		hosts = append(hosts, repoHost(img.given))
	}
	return hosts, nil
}

// buildArgVars may be referenced as $VAR or ${VAR} in build_args values;
// Concourse sets them for the put.
var buildArgVars = []string{"BUILD_ID", "BUILD_NAME", "BUILD_JOB_NAME", "BUILD_PIPELINE_NAME",
	"BUILD_TEAM_NAME", "ATC_EXTERNAL_URL", "BUILD_URL", "BUILD_CREATED_BY"}

// buildArgs merges proxy variables, build_args_file and build_args (later
// ones win), expanding Concourse's build variables in build_args only.
func buildArgs(env Env, params *protocol.OutParams, abs func(string) string) (map[string]string, error) {
	out := map[string]string{}
	for _, k := range []string{"http_proxy", "https_proxy", "no_proxy"} {
		if v := env.Getenv(k); v != "" {
			out[k] = v
		}
	}
	if params.BuildArgsFile != "" {
		m, err := readScalarMap(abs(params.BuildArgsFile))
		if err != nil {
			//lint:ignore ST1005 the old resource's words, which users search logs for
			return nil, fmt.Errorf("Failed to parse build_args_file (%s): %w", params.BuildArgsFile, err)
		}
		for k, v := range m {
			out[k] = v
		}
	}
	for k, v := range params.BuildArgs {
		out[k] = expandBuildVars(env, string(v))
	}
	return out, nil
}

var buildVarPattern = regexp.MustCompile(`\$\{(` + strings.Join(buildArgVars, "|") + `)\}|\$(` + strings.Join(buildArgVars, "|") + `)\b`)

// expandBuildVars replaces $VAR and ${VAR} for Concourse's build variables
// only; any other $ text is the user's and stays as written.
func expandBuildVars(env Env, v string) string {
	return buildVarPattern.ReplaceAllStringFunc(v, func(m string) string {
		return env.Getenv(strings.Trim(m, "${}"))
	})
}

func labels(params *protocol.OutParams, abs func(string) string) (map[string]string, error) {
	out := map[string]string{}
	if params.LabelsFile != "" {
		m, err := readScalarMap(abs(params.LabelsFile))
		if err != nil {
			//lint:ignore ST1005 the old resource's words, which users search logs for
			return nil, fmt.Errorf("Failed to parse labels_file (%s): %w", params.LabelsFile, err)
		}
		out = m
	}
	for k, v := range params.Labels {
		out[k] = string(v)
	}
	return out, nil
}

// readScalarMap reads a JSON object of strings, numbers and booleans.
func readScalarMap(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("it does not exist (%s)", relativeHint)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read it: %w", err)
	}
	var raw map[string]protocol.Scalar
	if err := json.Unmarshal(b, &raw); err != nil {
		// Say what is wrong without Go type names.
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			err = fmt.Errorf("invalid JSON at byte %d: %s", syn.Offset, syn)
		case errors.As(err, &typ) && typ.Field == "":
			err = fmt.Errorf("the file holds a JSON %s", typ.Value)
		case errors.As(err, &typ):
			err = fmt.Errorf("%q is a JSON %s", typ.Field, typ.Value)
		}
		return nil, fmt.Errorf("expected a JSON object of strings, numbers or booleans: %w", err)
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		out[k] = string(v)
	}
	return out, nil
}
