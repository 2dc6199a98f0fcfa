package protocol

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Seeds shared by the request fuzz target: every shape the decoder has a
// branch for (nested lists, maps, literals, switches, retired keys, nulls).
var requestSeeds = []string{
	``,
	`null`,
	`[]`,
	`{"source":`,
	`{"source":{"repository":"alpine"}}`,
	`{"source":{"repository":"registry.example.com:5000/team/app","tag":1.10,"username":"u","password":"p-secret-123"},"version":{"digest":"sha256:` + strings.Repeat("a", 64) + `"}}`,
	`{"source":{"repository":"a","usrename":"u"}}`,
	`{"source":{"repository":"a","ca_certs":[{"domain":"h:5000","cert":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}]}}`,
	`{"source":{"repository":"a","client_certs":[{"domain":"h","cert":"x","key":"y"}]}}`,
	`{"source":{"repository":"a","additional_private_registries":[{"registry":"r","username":"u","password":"p"}]}}`,
	`{"source":{"repository":"a","insecure_registries":["10.0.0.0/8","h:5000"],"registry_mirror":"https://m:5000"}}`,
	`{"source":{"repository":"a","max_concurrent_downloads":"3","max_concurrent_uploads":0,"startup_timeout":-1}}`,
	`{"source":{"repository":"a","platform":{"os":"linux","architecture":"arm","variant":"v7"},"debug":"true","email":"x"}}`,
	`{"source":{"repository":"a"},"version":{"digest":"sha256:` + strings.Repeat("0", 64) + `"},"params":{"save":true,"rootfs":"false","skip_download":null,"platform":{"architecture":"arm64"}}}`,
	`{"source":{"repository":"a"},"params":{"build":"b","dockerfile":"d","build_args":{"A":1.10,"B":true,"C":"$BUILD_ID"},"labels":{"l":"v"},"docker_buildkit":1,"secrets":{"s":{"env":"E"},"t":{"source":"f"}}}}`,
	`{"source":{"repository":"a"},"params":{"load_file":"f","load_repository":"r","load_tag":2.0,"cache_tag":"c","pull_tag":"p","tag_as_latest":"true","rootfs":true}}`,
	`{"source":{"repository":"a"},"params":{"build_args":{"X":[1]},"labels":{"Y":{}}}}`,
	`{"source":{"repository":"a"},"params":{"load_bases":["a","b"],"cache_from":null,"cache":true}}`,
	`{"source":{"repository":"A/B:1@sha256:x"}}`,
	"{\"source\":{\"repository\":\"a\",\"build_args\":{\"\\n\":1}}}",
	`{"source":{"repository":"a"},"extra":1,"params":{}}`,
}

// FuzzParseRequest feeds arbitrary bytes to the three request parsers.
// Properties: no panic; a failure is one non-empty message and never the
// password of the request; an accepted request validates again and has a
// repository and tag that registries and dockerd accept.
func FuzzParseRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(verb string, src *Source, err error) {
			if err != nil {
				msg := err.Error()
				if strings.TrimSpace(msg) == "" {
					t.Fatalf("%s: empty error message", verb)
				}
				if pw := passwordOf(data); len(pw) >= 6 && bytes.Count(data, []byte(pw)) == 1 && strings.Contains(msg, pw) {
					t.Fatalf("%s: error echoes the password %q: %s", verb, pw, msg)
				}
				return
			}
			if err := src.Validate(); err != nil {
				t.Fatalf("%s: accepted source fails validation again: %v", verb, err)
			}
			assertRepositoryUsable(t, src.Repository)
			if _, err := name.NewTag(src.Repository + ":" + src.TagOrDefault()); err != nil {
				t.Fatalf("%s: accepted %q tag %q, go-containerregistry refuses it: %v", verb, src.Repository, src.TagOrDefault(), err)
			}
		}
		c, err := ParseCheck(bytes.NewReader(data))
		check("check", &c.Request.Source, err)
		if err == nil && c.Request.Version != nil && c.Request.Version.Digest != "" {
			if _, err := v1.NewHash(c.Request.Version.Digest); err != nil {
				t.Fatalf("check: accepted digest %q: %v", c.Request.Version.Digest, err)
			}
		}
		in, err := ParseIn(bytes.NewReader(data))
		check("in", &in.Request.Source, err)
		if err == nil {
			if _, err := v1.NewHash(in.Request.Version.Digest); err != nil {
				t.Fatalf("in: accepted digest %q: %v", in.Request.Version.Digest, err)
			}
		}
		out, err := ParseOut(bytes.NewReader(data))
		check("out", &out.Request.Source, err)
		if err == nil {
			if err := out.Request.Params.Validate(); err != nil {
				t.Fatalf("out: accepted params fail validation again: %v", err)
			}
		}
	})
}

// passwordOf digs source.password out of a request, leniently.
func passwordOf(data []byte) string {
	var req struct {
		Source struct {
			Password json.RawMessage `json:"password"`
		} `json:"source"`
	}
	if json.Unmarshal(data, &req) != nil {
		return ""
	}
	var s string
	if json.Unmarshal(req.Source.Password, &s) != nil {
		return ""
	}
	return s
}

// assertRepositoryUsable: a repository we accept must be accepted by
// go-containerregistry (check, in, direct push) and by the daemon's grammar
// (distribution/reference: tag, build FROM, push through the daemon).
func assertRepositoryUsable(t *testing.T, repo string) {
	t.Helper()
	if _, err := name.NewRepository(repo); err != nil {
		t.Fatalf("accepted repository %q, go-containerregistry refuses it: %v", repo, err)
	}
	if _, err := reference.ParseNormalizedNamed(repo); err != nil {
		t.Fatalf("accepted repository %q, dockerd's grammar refuses it: %v", repo, err)
	}
}

// FuzzValidateNames fuzzes the repository, tag and digest validators on
// their own (shorter inputs reach deeper than through JSON).
func FuzzValidateNames(f *testing.F) {
	for _, s := range []string{
		"alpine", "library/alpine", "registry.example.com:5000/team/app", "localhost/a", "127.0.0.1:5000/x/y/z",
		"Team/App", "team/app:1", "team/app@sha256:abc", "a..b", "host/-x", "host/x-", "host//x", "host:port/x",
		"a__b", "a___b", "a--b", "[::1]:5000/x", "UPPER.example.com/x", "x/" + strings.Repeat("a", 300),
		"latest", "1.10", "-bad", ".bad", "_ok", strings.Repeat("t", 129), "a b",
		"sha256:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("A", 64), "sha512:" + strings.Repeat("a", 128), "sha256:",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if err := ValidateRepository("r", s); err == nil {
			assertRepositoryUsable(t, s)
			if s == "" {
				t.Fatal("accepted an empty repository")
			}
		} else if !strings.HasPrefix(err.Error(), "r: ") {
			t.Fatalf("repository error does not name the field: %v", err)
		}
		if err := ValidateTag("t", s); err == nil {
			if len(s) > 128 {
				t.Fatalf("accepted a %d-character tag", len(s))
			}
			if _, err := name.NewTag("example.com/x:" + s); err != nil {
				t.Fatalf("accepted tag %q, go-containerregistry refuses it: %v", s, err)
			}
			if _, err := reference.WithTag(mustNamed(t, "example.com/x"), s); err != nil {
				t.Fatalf("accepted tag %q, dockerd's grammar refuses it: %v", s, err)
			}
		}
		if err := validateDigest("d", s); err == nil {
			h, err := v1.NewHash(s)
			if err != nil || h.String() != s {
				t.Fatalf("accepted digest %q: %v", s, err)
			}
		}
	})
}

func mustNamed(t *testing.T, s string) reference.Named {
	n, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
