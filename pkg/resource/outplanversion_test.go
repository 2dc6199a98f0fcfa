package resource

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/protocol"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestPlanTagsVersion(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "number"), []byte("2.0.1\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "empty"), []byte("\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "more"), []byte("extra\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "bad"), []byte("two\n"), 0o644)
	abs := inFolder(dir)
	plan := func(src protocol.Source, params protocol.OutParams) (tagPlan, string, error) {
		var logs bytes.Buffer
		s := newSession(Env{Stderr: &logs}, &src, nil)
		p, err := planTags(s, &src, &params, abs)
		return p, logs.String(), err
	}

	p, _, err := plan(protocol.Source{Repository: "r", Variant: "alpine"}, protocol.OutParams{Version: "v1.2.3", AdditionalTags: "more", TagAsLatest: true, BumpAliases: true})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(p.tags, " ") != "1.2.3-alpine extra latest" || !p.tagged || !p.bump || p.version.String() != "1.2.3" {
		t.Errorf("plan %+v", p)
	}
	if v := p.responseVersion("sha256:x"); v.Tag != "1.2.3-alpine" {
		t.Errorf("version %+v", v)
	}

	p, logs, err := plan(protocol.Source{Repository: "r", Tag: "stable"}, protocol.OutParams{VersionFile: "number", TagPrefix: "p-"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(p.tags, " ") != "2.0.1 stable" || p.tagged {
		t.Errorf("plan %+v: the version, then source.tag (as registry-image pushes it); no tag tracking", p)
	}
	if v := p.responseVersion("sha256:x"); v.Tag != "" {
		t.Errorf("without tag tracking the version is {digest}: %+v", v)
	}
	if !strings.Contains(logs, "params.tag_prefix only applies to a tag read from tag_file") {
		t.Errorf("no tag_prefix warning:\n%s", logs)
	}

	p, _, err = plan(protocol.Source{Repository: "r", SemverConstraint: ">= 0"}, protocol.OutParams{})
	if err != nil || strings.Join(p.tags, " ") != "latest" || !p.tagged || p.version != nil {
		t.Errorf("no version: %+v %v", p, err)
	}

	for file, want := range map[string]string{
		"nope":  "params.version_file: version file 'nope' does not exist",
		"empty": "params.version_file: version file 'empty' is empty",
		"bad":   `params.version_file (bad): "two" is not a semantic version`,
	} {
		if _, _, err := plan(protocol.Source{Repository: "r"}, protocol.OutParams{VersionFile: file}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", file, err, want)
		}
	}
	if _, _, err := plan(protocol.Source{Repository: "r"}, protocol.OutParams{Version: "1.2.3+build.1"}); err == nil || !strings.Contains(err.Error(), "not a valid tag") {
		t.Errorf("build metadata: %v, want the tag refused", err)
	}
}

func TestPlanAliases(t *testing.T) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	img, _ := random.Image(64, 1)
	for _, tag := range []string{"1.2.3", "1.3.0", "1.2.3-slim", "2.0.0-rc.1"} {
		ref, _ := name.ParseReference(host + "/team/app:" + tag)
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
	}
	aliases := func(repo, version, variant string) (string, string) {
		t.Helper()
		var logs bytes.Buffer
		src := protocol.Source{Repository: host + "/" + repo, Variant: variant}
		s := newSession(Env{Stderr: &logs}, &src, nil)
		p, err := planTags(s, &src, &protocol.OutParams{Version: protocol.Literal(version), BumpAliases: true}, inFolder(t.TempDir()))
		if err != nil {
			t.Fatal(err)
		}
		if err := planAliases(context.Background(), Env{}, s, &src, &p); err != nil {
			t.Fatal(err)
		}
		return strings.Join(p.tags, " "), logs.String()
	}
	if got, logs := aliases("team/app", "1.2.4", ""); got != "1.2.4 1.2" || !strings.Contains(logs, "bump_aliases: 1.2.4 also moves 1.2") {
		t.Errorf("1.2.4: %q\n%s", got, logs)
	}
	if got, _ := aliases("team/app", "2.0.0", ""); got != "2.0.0 2.0 2 latest" {
		t.Errorf("2.0.0 (an rc does not count): %q", got)
	}
	if got, logs := aliases("team/app", "1.2.2", ""); got != "1.2.2" || !strings.Contains(logs, "no alias moves") {
		t.Errorf("1.2.2: %q\n%s", got, logs)
	}
	if got, _ := aliases("team/app", "1.2.4", "slim"); got != "1.2.4-slim 1.2-slim 1-slim slim" {
		t.Errorf("variant: %q", got)
	}
	if got, logs := aliases("team/new", "0.1.0", ""); got != "0.1.0 0.1 0 latest" || !strings.Contains(logs, "has no tags yet") {
		t.Errorf("new repository: %q\n%s", got, logs)
	}
	if got, logs := aliases("team/app", "3.0.0-rc.1", ""); got != "3.0.0-rc.1" || !strings.Contains(logs, "is a pre-release; no alias moves") {
		t.Errorf("pre-release: %q\n%s", got, logs)
	}
}
