package resource

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/concourse-docker/docker-image-resource/pkg/baseimage"
	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
)

// putPlan is a put request checked against SRC: every file read and every
// path resolved before a daemon is started, so bad input fails in
// milliseconds and nothing is pushed.
type putPlan struct {
	repository string
	tags       []string // the push tag first
	cacheTag   string
	source     string // load, build, load_file, import_file, pull_repository
	path       string // the source's file or folder, absolute
	dockerfile string
	buildArgs  map[string]string
	labels     map[string]string
	auth       engine.RegistryAuth

	// The folders of load_base/load_bases, cache_from and load, recognised
	// (pkg/baseimage) and named from their files or the entry's object form.
	baseFolders  []*baseimage.Folder
	cacheFolders []*baseimage.Folder
	loadFolder   *baseimage.Folder
	// folderParam names each folder's entry for messages, e.g.
	// "params.load_bases[1] (ubuntu)".
	folderParam map[*baseimage.Folder]string

	src *protocol.Source
	// buildkit and secrets are set by planBuilder (outbuilder.go).
	buildkit bool
	secrets  []engine.Secret
	certsDir string // the daemon's certs.d, once it runs
}

// buildArgVars may be referenced as $VAR or ${VAR} in build_args values;
// Concourse sets them for the put.
var buildArgVars = []string{"BUILD_ID", "BUILD_NAME", "BUILD_JOB_NAME", "BUILD_PIPELINE_NAME",
	"BUILD_TEAM_NAME", "ATC_EXTERNAL_URL", "BUILD_URL", "BUILD_CREATED_BY"}

func planPut(env Env, s *session, srcDir string, req *protocol.OutRequest) (*putPlan, error) {
	src, params := &req.Source, &req.Params
	if fi, err := os.Stat(srcDir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("source folder %s does not exist", srcDir)
	}
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(srcDir, p)
	}
	plan := &putPlan{repository: src.Repository, src: src}
	if err := planBuilder(s, plan, params, abs); err != nil {
		return nil, err
	}

	tag, err := pushTag(s, src, params, abs)
	if err != nil {
		return nil, err
	}
	plan.tags = []string{tag}
	if params.AdditionalTags != "" {
		path := abs(params.AdditionalTags)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("params.additional_tags: additional tags file '%s' does not exist (%s)", params.AdditionalTags, relativeHint)
		}
		for _, t := range strings.Fields(string(b)) {
			if err := protocol.ValidateTag("params.additional_tags ("+params.AdditionalTags+")", t); err != nil {
				return nil, err
			}
			plan.tags = appendUnique(plan.tags, t)
		}
	}
	if params.TagAsLatest {
		plan.tags = appendUnique(plan.tags, "latest")
	}
	plan.cacheTag = orDefault(string(params.CacheTag), tag)

	// The old priority: the first source present wins, the rest are ignored.
	sources := []struct{ name, value string }{
		{"load", params.Load}, {"build", params.Build}, {"load_file", params.LoadFile},
		{"import_file", params.ImportFile}, {"pull_repository", params.PullRepository},
	}
	var ignored []string
	for _, c := range sources {
		if c.value == "" {
			continue
		}
		if plan.source == "" {
			plan.source, plan.path = c.name, c.value
		} else {
			ignored = append(ignored, c.name)
		}
	}
	if plan.source == "" {
		return nil, errors.New("must specify build, load, load_file, import_file, or pull_repository params")
	}
	if len(ignored) > 0 {
		s.log.Warnf("using params.%s; ignoring params.%s (only one image source is used)", plan.source, strings.Join(ignored, ", params."))
	}
	if plan.source != "pull_repository" {
		plan.path = abs(plan.path)
	}
	switch plan.source {
	case "load":
		// The name does not matter: the image is pushed as source.repository.
		if plan.loadFolder, err = checkSavedImage("load", protocol.BaseEntry{Path: params.Load}, plan.path); err != nil {
			return nil, err
		}
	case "build":
		if fi, err := os.Stat(plan.path); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("params.build: the build context %s is not a folder", params.Build)
		}
		df := filepath.Join(plan.path, "Dockerfile")
		if params.Dockerfile != "" {
			df = abs(params.Dockerfile)
		}
		if fi, err := os.Stat(df); err != nil || !fi.Mode().IsRegular() {
			// The old resource's words, with the field and the reason.
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
			return nil, fmt.Errorf("%s: It doesn't appear that given Dockerfile: %q is a file: %s", field, df, why)
		}
		plan.dockerfile = df
		if plan.buildArgs, err = buildArgs(params, abs); err != nil {
			return nil, err
		}
		if plan.labels, err = labels(params, abs); err != nil {
			return nil, err
		}
	case "load_file":
		if params.LoadRepository == "" {
			return nil, errors.New("params.load_file: must specify load_repository param (the repository of the image inside the tarball, and load_tag when it is not latest)")
		}
		if err := regularFile("params.load_file", plan.path); err != nil {
			return nil, err
		}
	case "import_file":
		if err := regularFile("params.import_file", plan.path); err != nil {
			return nil, err
		}
		if err := checkRootfsTarball("params.import_file", params.ImportFile, plan.path); err != nil {
			return nil, err
		}
	case "pull_repository":
		s.log.Warn("params.pull_repository is deprecated: get the image with save: true and put it with params.load instead")
	}

	type entry struct {
		field string
		entry protocol.BaseEntry
	}
	bases := []entry{{"load_base", params.LoadBase}}
	for i, b := range params.LoadBases {
		bases = append(bases, entry{fmt.Sprintf("load_bases[%d]", i), b})
	}
	plan.folderParam = map[*baseimage.Folder]string{}
	for _, b := range bases {
		if b.entry.Path == "" {
			continue
		}
		f, err := checkSavedImage(b.field, b.entry, abs(b.entry.Path))
		if err != nil {
			return nil, err
		}
		plan.baseFolders = append(plan.baseFolders, f)
		plan.folderParam[f] = fmt.Sprintf("params.%s (%s)", b.field, b.entry.Path)
	}
	for i, c := range params.CacheFrom {
		field := fmt.Sprintf("cache_from[%d]", i)
		f, err := checkSavedImage(field, c, abs(c.Path))
		if err != nil {
			return nil, err
		}
		plan.cacheFolders = append(plan.cacheFolders, f)
		plan.folderParam[f] = fmt.Sprintf("params.%s (%s)", field, c.Path)
	}
	// Folders whose images are known from their files are checked now; the
	// rest once loaded (loadBases).
	var claims []nameClaim
	for _, f := range slices.Concat(plan.baseFolders, plan.cacheFolders) {
		if id := f.ID(); f.Named() && id != "" {
			claims = append(claims, nameClaim{ref: f.Ref(), param: plan.folderParam[f], id: id})
		}
	}
	if err := checkNameClaims(claims); err != nil {
		return nil, err
	}

	plan.auth = registryAuth(src) // ECR tokens are added by ecrLoginPut
	return plan, nil
}

// pushTag is tag_file's content (trimmed, with tag_prefix), else the
// deprecated params.tag file, else source.tag.
func pushTag(s *session, src *protocol.Source, params *protocol.OutParams, abs func(string) string) (string, error) {
	file, field := params.TagFile, "params.tag_file"
	if file == "" && params.Tag != "" {
		file, field = params.Tag, "params.tag"
		s.log.Warn("params.tag is deprecated: use params.tag_file")
	}
	if file == "" {
		if params.TagPrefix != "" {
			s.log.Warn("params.tag_prefix only applies to a tag read from tag_file; ignoring it")
		}
		return src.TagOrDefault(), nil
	}
	b, err := os.ReadFile(abs(file))
	if err != nil {
		return "", fmt.Errorf("%s: tag file '%s' does not exist (%s)", field, file, relativeHint)
	}
	tag := params.TagPrefix + strings.TrimSpace(string(b))
	if strings.TrimSpace(string(b)) == "" {
		return "", fmt.Errorf("%s: tag file '%s' is empty", field, file)
	}
	if err := protocol.ValidateTag(field+" ("+file+")", tag); err != nil {
		return "", err
	}
	return tag, nil
}

// checkSavedImage recognises a base folder's layout before the daemon
// starts (pkg/baseimage: a get with save: true, registry-image-resource's
// oci and oci-layout formats, oci-build-task's output) and applies the
// entry's name, if it gives one.
func checkSavedImage(param string, entry protocol.BaseEntry, dir string) (*baseimage.Folder, error) {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("params.%s: %s is not a folder (it should be the output of a get with save: true, or of registry-image-resource or oci-build-task)", param, dir)
	}
	if entry.Repository != "" {
		if err := protocol.ValidateRepository("params."+param+".repository", entry.Repository); err != nil {
			return nil, err
		}
		if entry.Tag != "" {
			if err := protocol.ValidateTag("params."+param+".tag", string(entry.Tag)); err != nil {
				return nil, err
			}
		}
	}
	f, err := baseimage.Detect(dir, baseimage.HostPlatform())
	if err != nil {
		return nil, fmt.Errorf("params.%s: %w", param, err)
	}
	f.Name(entry.Repository, string(entry.Tag))
	return f, nil
}

// relativeHint is what to do about a file that is not there.
const relativeHint = "paths are relative to the put's folder, which holds the job's inputs: start them with the input's name"

func regularFile(field, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %s does not exist", field, path)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: %s is not a file", field, path)
	}
	return nil
}

// buildArgs merges proxy variables, build_args_file and build_args (later
// ones win), expanding Concourse's build variables in build_args only.
func buildArgs(params *protocol.OutParams, abs func(string) string) (map[string]string, error) {
	out := map[string]string{}
	for _, k := range []string{"http_proxy", "https_proxy", "no_proxy"} {
		if v := os.Getenv(k); v != "" {
			out[k] = v
		}
	}
	if params.BuildArgsFile != "" {
		m, err := readScalarMap(abs(params.BuildArgsFile))
		if err != nil {
			return nil, fmt.Errorf("Failed to parse build_args_file (%s): %w", params.BuildArgsFile, err)
		}
		for k, v := range m {
			out[k] = v
		}
	}
	for k, v := range params.BuildArgs {
		out[k] = expandBuildVars(string(v))
	}
	return out, nil
}

var buildVarPattern = regexp.MustCompile(`\$\{(` + strings.Join(buildArgVars, "|") + `)\}|\$(` + strings.Join(buildArgVars, "|") + `)\b`)

// expandBuildVars replaces $VAR and ${VAR} for Concourse's build variables
// only; any other $ text is the user's and stays as written.
func expandBuildVars(v string) string {
	return buildVarPattern.ReplaceAllStringFunc(v, func(m string) string {
		return os.Getenv(strings.Trim(m, "${}"))
	})
}

func labels(params *protocol.OutParams, abs func(string) string) (map[string]string, error) {
	out := map[string]string{}
	if params.LabelsFile != "" {
		m, err := readScalarMap(abs(params.LabelsFile))
		if err != nil {
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

func appendUnique(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}
