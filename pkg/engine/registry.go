package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"

	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/sirupsen/logrus"
)

// ErrNotFound matches (errors.Is) a pull of a tag or repository the registry
// does not have, so a caller can treat a cache miss as a warning.
var ErrNotFound = errors.New("not found in the registry")

// Pull pulls ref ("repo:tag") with the credentials auth has for its registry
// and returns the pulled image's ID.
func Pull(ctx context.Context, cli Client, ref string, auth RegistryAuth, log *logrus.Entry) (string, error) {
	log = logging.OrDiscard(log)
	header, err := auth.Header(ref)
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", ref, err)
	}
	log.Infof("pulling %s", ref)
	body, err := cli.ImagePull(ctx, ref, image.PullOptions{RegistryAuth: header})
	if err == nil {
		_, err = readBody(ctx, body, log)
	}
	if err != nil {
		if isNotFound(err) {
			return "", fmt.Errorf("pull %s: %w: %w", ref, ErrNotFound, err)
		}
		return "", fmt.Errorf("pull %s: %w", ref, err)
	}
	ins, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("pull %s: inspecting the pulled image: %w", ref, err)
	}
	return ins.ID, nil
}

// isNotFound tells a missing tag or repository from other pull failures. The
// daemon answers 404 before it starts streaming; the stream text is the
// fallback for a failure after the stream started.
func isNotFound(err error) bool {
	if cerrdefs.IsNotFound(err) {
		return true
	}
	var se *StreamError
	return errors.As(err, &se) && se.Status == http.StatusNotFound
}

// PushResult is what the registry holds for one pushed tag.
type PushResult struct {
	Tag string
	// Digest is the pushed manifest's digest, from the push's result
	// message, never from text.
	Digest string
	Size   int
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// Push names image (an ID or a name) repo:tag for each tag and pushes them
// in order, with the credentials auth has for repo's registry. A push that
// reports no digest fails.
func Push(ctx context.Context, cli Client, img, repo string, tags []string, auth RegistryAuth, log *logrus.Entry) ([]PushResult, error) {
	log = logging.OrDiscard(log)
	if len(tags) == 0 {
		return nil, fmt.Errorf("push %s: no tags given", repo)
	}
	results := make([]PushResult, 0, len(tags))
	for _, tag := range tags {
		ref := repo + ":" + tag
		if err := Tag(ctx, cli, img, repo, tag); err != nil {
			return results, fmt.Errorf("push %s: %w", ref, err)
		}
		r, err := pushTag(ctx, cli, ref, tag, auth, log)
		if err != nil {
			return results, fmt.Errorf("push %s: %w", ref, err)
		}
		log.Infof("pushed %s: %s", ref, r.Digest)
		results = append(results, r)
	}
	return results, nil
}

func pushTag(ctx context.Context, cli Client, ref, tag string, auth RegistryAuth, log *logrus.Entry) (PushResult, error) {
	header, err := auth.Header(ref)
	if err != nil {
		return PushResult{}, err
	}
	log.Infof("pushing %s", ref)
	body, err := cli.ImagePush(ctx, ref, image.PushOptions{RegistryAuth: header})
	if err != nil {
		return PushResult{}, err
	}
	res, err := readBody(ctx, body, log)
	if err != nil {
		return PushResult{}, err
	}
	var found *PushResult
	for _, raw := range res.Aux {
		var r PushResult
		if json.Unmarshal(raw, &r) == nil && r.Digest != "" {
			found = &r
		}
	}
	if found == nil {
		return PushResult{}, errors.New("the push finished without reporting a digest")
	}
	if !digestRE.MatchString(found.Digest) {
		return PushResult{}, fmt.Errorf("the push reported a malformed digest %q", found.Digest)
	}
	if found.Tag != tag {
		return PushResult{}, fmt.Errorf("the push reported the digest of tag %q, not of %q", found.Tag, tag)
	}
	return *found, nil
}

// Import makes an image of a root filesystem tarball (plain or compressed)
// named repo:tag, and returns its ID.
func Import(ctx context.Context, cli Client, rootfsTar, repo, tag string, log *logrus.Entry) (string, error) {
	log = logging.OrDiscard(log)
	ref := repo + ":" + tag
	f, err := os.Open(rootfsTar)
	if err != nil {
		return "", fmt.Errorf("import %s as %s: %w", rootfsTar, ref, err)
	}
	defer f.Close()
	log.Infof("importing %s as %s", rootfsTar, ref)
	body, err := cli.ImageImport(ctx, image.ImportSource{Source: f, SourceName: "-"}, repo, image.ImportOptions{Tag: tag})
	if err == nil {
		_, err = readBody(ctx, body, log)
	}
	if err != nil {
		return "", fmt.Errorf("import %s as %s: %w", rootfsTar, ref, err)
	}
	ins, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("import %s as %s: inspecting the imported image: %w", rootfsTar, ref, err)
	}
	return ins.ID, nil
}
