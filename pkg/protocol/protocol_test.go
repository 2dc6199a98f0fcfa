package protocol

import (
	"strings"
	"testing"
)

func TestLiteralKeepsNumberText(t *testing.T) {
	for in, want := range map[string]string{
		`{"source":{"repository":"a","tag":1.10}}`:   "1.10",
		`{"source":{"repository":"a","tag":3.7}}`:    "3.7",
		`{"source":{"repository":"a","tag":"1.10"}}`: "1.10",
		`{"source":{"repository":"a","tag":20}}`:     "20",
		`{"source":{"repository":"a"}}`:              "latest",
	} {
		p, err := ParseCheck(strings.NewReader(in))
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if got := p.Request.Source.TagOrDefault(); got != want {
			t.Errorf("%s: tag %q, want %q", in, got, want)
		}
	}
}

func TestOutParamsLiterals(t *testing.T) {
	in := `{"source":{"repository":"a"},"params":{"cache_tag":1.10,"load_tag":2.0,"pull_tag":"x",
	  "build_args":{"V":1.10,"B":true,"S":"s"},"labels":{"L":007},"docker_buildkit":1,"tag_as_latest":"true"}}`
	// 007 is not valid JSON; use a valid number instead.
	in = strings.Replace(in, "007", "7.50", 1)
	p, err := ParseOut(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	q := p.Request.Params
	if q.CacheTag != "1.10" || q.LoadTag != "2.0" || q.BuildArgs["V"] != "1.10" || q.BuildArgs["B"] != "true" || q.Labels["L"] != "7.50" {
		t.Errorf("literals lost: %+v", q)
	}
	if q.DockerBuildkit == nil || !bool(*q.DockerBuildkit) || !bool(q.TagAsLatest) {
		t.Errorf("switches: %+v", q)
	}
}

func TestStrictErrors(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"typo", `{"source":{"repository":"a","usrename":"u"}}`, `unknown source key "usrename" — did you mean "username"?`},
		{"params typo", `{"source":{"repository":"a"},"params":{"additional_tag":"x"}}`, `unknown params key "additional_tag" — did you mean "additional_tags"?`},
		{"nested", `{"source":{"repository":"a","ca_certs":[{"domian":"x","cert":"y"}]}}`, `unknown key "domian" in source.ca_certs[0] — did you mean "domain"?`},
		{"no suggestion", `{"source":{"repository":"a","zzzzzzzz":1}}`, `known keys are:`},
		{"wrong type", `{"source":{"repository":"a","max_concurrent_downloads":"many"}}`, `source.max_concurrent_downloads: expected a whole number, got a string`},
		{"bool zero", `{"source":{"repository":"a"},"params":{"skip_download":0}}`, `params.skip_download: expected true or false, got the number 0`},
		{"buildkit 2", `{"source":{"repository":"a"},"params":{"docker_buildkit":2}}`, `params.docker_buildkit: expected true, false, 0 or 1`},
		{"object tag", `{"source":{"repository":"a","tag":{}}}`, `source.tag: expected a string or a number, got an object`},
		{"list build arg", `{"source":{"repository":"a"},"params":{"build_args":{"X":[1]}}}`, `params.build_args.X: expected a string, number or boolean, got a list`},
		{"empty", ``, `no request on stdin`},
		{"malformed", "{\n\"source\": {", `malformed request on stdin: invalid JSON at line 2`},
		{"not object", `[]`, `expected a JSON object`},
		{"no repo", `{"source":{}}`, `source.repository is required`},
		{"upper", `{"source":{"repository":"Team/App"}}`, `must be lower case`},
		{"tag in repo", `{"source":{"repository":"alpine:3"}}`, `put it in source.tag`},
		{"bad tag", `{"source":{"repository":"a","tag":"-x"}}`, `source.tag: "-x" is not a valid tag`},
		{"user only", `{"source":{"repository":"a","username":"u"}}`, `source.password is empty`},
		{"bad pem", `{"source":{"repository":"a","ca_certs":[{"domain":"r:5000","cert":"nope"}]}}`, `source.ca_certs[0].cert (domain r:5000): no PEM certificate found`},
		{"bad cidr", `{"source":{"repository":"a","insecure_registries":["10.0.0.0/99"]}}`, `is not a valid CIDR`},
		{"bad mirror", `{"source":{"repository":"a","registry_mirror":"mirror.local"}}`, `source.registry_mirror: "mirror.local" is not a valid URL`},
		{"zero timeout", `{"source":{"repository":"a","startup_timeout":0}}`, `source.startup_timeout must be a positive number`},
		{"private registry", `{"source":{"repository":"a","additional_private_registries":[{"registry":"r"}]}}`, `additional_private_registries[0].username is required`},
		{"bad digest", `{"source":{"repository":"a"},"version":{"digest":"sha256:xyz"}}`, `version.digest: "sha256:xyz" is not a valid digest`},
		{"numeric digest", `{"source":{"repository":"a"},"version":{"digest":5}}`, `version.digest: expected a string, got the number 5`},
		{"version a list", `{"source":{"repository":"a"},"version":[]}`, `version: expected an object like {"digest": "sha256:..."}, got a list`},
		{"timeout beyond a day", `{"source":{"repository":"a","startup_timeout":86401}}`, `source.startup_timeout must be at most 86400 (a day), got 86401`},
		{"timeout 2^63-1", `{"source":{"repository":"a","startup_timeout":9223372036854775807}}`, `source.startup_timeout must be at most 86400 (a day), got 9223372036854775807`},
		{"timeout 2^63", `{"source":{"repository":"a","startup_timeout":9223372036854775808}}`, `source.startup_timeout: the number 9223372036854775808 is too large`},
		{"timeout -2^63-1", `{"source":{"repository":"a","startup_timeout":"-9223372036854775809"}}`, `source.startup_timeout: the number -9223372036854775809 is too small`},
		{"fraction", `{"source":{"repository":"a","startup_timeout":1.5}}`, `source.startup_timeout: expected a whole number, got the number 1.5`},
		{"downloads beyond 128", `{"source":{"repository":"a","max_concurrent_downloads":129}}`, `source.max_concurrent_downloads must be at most 128, got 129`},
		{"uploads beyond 128", `{"source":{"repository":"a","max_concurrent_uploads":"1000"}}`, `source.max_concurrent_uploads must be at most 128, got 1000`},
		{"mirror userinfo", `{"source":{"repository":"a","registry_mirror":"https://u:p@m.example:5000/"}}`, `source.registry_mirror: a username or password in the URL is not supported (dockerd refuses them too): write it as https://m.example:5000 and give the mirror's credentials as a source.additional_private_registries entry for "m.example:5000" (check and get use it)`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			parse := func() error { _, err := ParseCheck(strings.NewReader(c.in)); return err }
			if strings.Contains(c.in, `"params"`) {
				parse = func() error {
					_, err := ParseIn(strings.NewReader(strings.Replace(c.in, `"params"`, `"version":{"digest":"sha256:`+strings.Repeat("a", 64)+`"},"params"`, 1)))
					return err
				}
				if strings.Contains(c.in, "build_args") || strings.Contains(c.in, "docker_buildkit") || strings.Contains(c.in, "additional_tag") {
					parse = func() error { _, err := ParseOut(strings.NewReader(c.in)); return err }
				}
			}
			err := parse()
			if err == nil {
				t.Fatalf("no error for %s", c.in)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q\n does not contain %q", err, c.want)
			}
		})
	}
}

func TestSecretsNotEchoed(t *testing.T) {
	_, err := ParseCheck(strings.NewReader(`{"source":{"repository":"a","password":{"s3cr3t":1},"username":"u"}}`))
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("error %v", err)
	}
	for _, mirror := range []string{
		"ftp://u:hunter22@m", "https://u:hunter22@m", "https://hunter22@m", "http://u:hunter22@m:50x0/", "u:hunter22@m:5000", "https://u:hunter22@m/path?q",
	} {
		_, err = ParseCheck(strings.NewReader(`{"source":{"repository":"a","registry_mirror":"` + mirror + `"}}`))
		if err == nil || strings.Contains(err.Error(), "hunter22") || !strings.Contains(err.Error(), "source.registry_mirror") {
			t.Errorf("%s: error %v", mirror, err)
		}
	}
}

func TestBoundsAccepted(t *testing.T) {
	p, err := ParseCheck(strings.NewReader(`{"source":{"repository":"a","startup_timeout":86400,"max_concurrent_downloads":128,"max_concurrent_uploads":"1"},"version":{"digest":null,"other":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	s := p.Request.Source
	if s.StartupTimeoutSecs() != 86400 || s.Downloads() != 128 || s.Uploads() != 1 || p.Request.Version == nil || p.Request.Version.Digest != "" {
		t.Errorf("%+v %+v", s, p.Request.Version)
	}
}

func TestRetiredKeyWarns(t *testing.T) {
	p, err := ParseCheck(strings.NewReader(`{"source":{"repository":"a","email":"me@example.com"},"extra":1}`))
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(p.Warnings, "\n")
	if !strings.Contains(joined, "source.email is no longer used") || !strings.Contains(joined, `"extra"`) {
		t.Errorf("warnings: %q", p.Warnings)
	}
}

func TestInRequiresDigest(t *testing.T) {
	_, err := ParseIn(strings.NewReader(`{"source":{"repository":"a"}}`))
	if err == nil || !strings.Contains(err.Error(), "version.digest is required") {
		t.Fatalf("err %v", err)
	}
}

func TestNumericStringsAndNulls(t *testing.T) {
	p, err := ParseCheck(strings.NewReader(`{"source":{"repository":"a","username":12345,"password":678,"startup_timeout":"30","registry_mirror":null}}`))
	if err != nil {
		t.Fatal(err)
	}
	s := p.Request.Source
	if s.Username != "12345" || s.Password != "678" || s.StartupTimeoutSecs() != 30 || s.Downloads() != 3 {
		t.Errorf("%+v", s)
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"username", "password", "repository", "tag", "additional_tags"}
	for in, want := range map[string]string{"usrename": "username", "pasword": "password", "repo": "repository", "repositroy": "repository", "Tag": "tag", "xyzzy": ""} {
		if got := suggest(in, known); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMetadataDropsEmpty(t *testing.T) {
	m := Metadata("repository", "r", "tag", "", "image", "abc")
	if len(m) != 2 || m[1].Name != "image" {
		t.Errorf("%+v", m)
	}
}
