package usercheck

import (
	"errors"
	"strings"
	"testing"
)

const passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"

// bases: "noGroup" has /etc/passwd only and runs as app; "plain" has both
// files; "noFiles" has neither; "link" has a /etc/group that is a symlink.
func bases(reads *int) func(string) *Base {
	mk := func(ref, user string, f Files) *Base {
		return &Base{Ref: ref, Param: "params.load_base (" + ref + ")", User: user, Env: []string{"HOME=/root", "U=app"},
			Files: func() (Files, error) { *reads++; return f, nil }}
	}
	m := map[string]*Base{
		RefKey("reg:5000/nogroup:1"):  mk("reg:5000/nogroup:1", "app", Files{Passwd: []byte(passwd)}),
		RefKey("reg:5000/plain:1"):    mk("reg:5000/plain:1", "app", Files{Passwd: []byte(passwd), Group: []byte("app:x:1000:\n")}),
		RefKey("nofiles"):             mk("docker.io/library/nofiles:latest", "", Files{}),
		RefKey("reg:5000/link:1"):     mk("reg:5000/link:1", "app", Files{Passwd: []byte(passwd), Unknown: true}),
		RefKey("reg:5000/rootuser:1"): mk("reg:5000/rootuser:1", "", Files{Passwd: []byte(passwd)}),
	}
	m[RefKey("reg:5000/onbuild:1")] = &Base{Ref: "reg:5000/onbuild:1", User: "app", OnBuild: true, Files: m[RefKey("reg:5000/nogroup:1")].Files}
	return func(ref string) *Base { return m[RefKey(ref)] }
}

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		name, dockerfile string
		args             map[string]string
		target           string
		// want: "" no error, else the file the error says is missing and
		// the line it names.
		want     string
		wantLine int
	}{
		{"base runs as a named user, no /etc/group", "FROM reg:5000/nogroup:1\nRUN id\n", nil, "", "/etc/group", 2},
		{"after COPY outside /etc", "FROM reg:5000/nogroup:1\nWORKDIR /src\nCOPY . .\nADD x /opt/x\nRUN make\n", nil, "", "/etc/group", 5},
		{"USER by name in the Dockerfile", "FROM reg:5000/rootuser:1\nUSER app\nRUN id\n", nil, "", "/etc/group", 3},
		{"USER numeric uid that passwd names", "FROM reg:5000/rootuser:1\nUSER 1000\nRUN id\n", nil, "", "/etc/group", 3},
		{"USER root by name", "FROM reg:5000/rootuser:1\nUSER root\nRUN id\n", nil, "", "/etc/group", 3},
		{"USER from ENV", "FROM reg:5000/rootuser:1\nENV WHO=app\nUSER $WHO\nRUN id\n", nil, "", "/etc/group", 4},
		{"USER from the base's ENV", "FROM reg:5000/rootuser:1\nUSER ${U}\nRUN id\n", nil, "", "/etc/group", 3},
		{"FROM through a global ARG and a build arg", "ARG BASE=reg:5000/plain:1\nFROM $BASE\nRUN id\n", map[string]string{"BASE": "reg:5000/nogroup:1"}, "", "/etc/group", 3},
		{"a stage built FROM another", "FROM reg:5000/nogroup:1 AS b\nLABEL x=y\nFROM b\nRUN id\n", nil, "", "/etc/group", 4},
		{"a stage the target copies from", "FROM reg:5000/nogroup:1 AS build\nRUN make\nFROM reg:5000/plain:1\nCOPY --from=build /x /x\n", nil, "", "/etc/group", 2},
		{"no /etc/passwd at all", "FROM nofiles\nUSER 1000\nRUN id\n", nil, "", "/etc/passwd", 3},

		{"uid:gid needs no files", "FROM reg:5000/nogroup:1\nUSER 1000:1000\nRUN id\n", nil, "", "", 0},
		{"root:root needs no files", "FROM reg:5000/nogroup:1\nUSER root:root\nRUN id\n", nil, "", "", 0},
		{"the default user", "FROM reg:5000/rootuser:1\nRUN id\n", nil, "", "", 0},
		{"a uid passwd does not name", "FROM reg:5000/rootuser:1\nUSER 4242\nRUN id\n", nil, "", "", 0},
		{"a name passwd does not have (fails under both builders)", "FROM reg:5000/rootuser:1\nUSER nobody\nRUN id\n", nil, "", "", 0},
		{"the base has /etc/group", "FROM reg:5000/plain:1\nRUN id\n", nil, "", "", 0},
		{"no RUN at all", "FROM reg:5000/nogroup:1\nCOPY app /app\nCMD [\"/app\"]\n", nil, "", "", 0},
		{"an earlier RUN may create /etc/group", "FROM reg:5000/rootuser:1\nRUN echo app:x:1000: >> /etc/group\nUSER app\nRUN id\n", nil, "", "", 0},
		{"COPY into /etc", "FROM reg:5000/nogroup:1\nCOPY group /etc/group\nRUN id\n", nil, "", "", 0},
		{"COPY into / ", "FROM reg:5000/nogroup:1\nCOPY rootfs/ /\nRUN id\n", nil, "", "", 0},
		{"relative COPY from WORKDIR /etc", "FROM reg:5000/nogroup:1\nWORKDIR /etc\nCOPY group .\nRUN id\n", nil, "", "", 0},
		{"a stage the target does not need", "FROM reg:5000/nogroup:1 AS unused\nRUN id\nFROM reg:5000/plain:1\nRUN id\n", nil, "", "", 0},
		{"target names a good stage", "FROM reg:5000/plain:1 AS ok\nRUN id\nFROM reg:5000/nogroup:1\nRUN id\n", nil, "ok", "", 0},
		{"an unknown base", "FROM reg:5000/other:1\nUSER app\nRUN id\n", nil, "", "", 0},
		{"a USER that does not expand", "FROM reg:5000/rootuser:1\nUSER $NOPE\nRUN id\n", nil, "", "", 0},
		{"FROM --platform", "FROM --platform=linux/arm64 reg:5000/nogroup:1\nRUN id\n", nil, "", "", 0},
		{"ONBUILD triggers in the base", "FROM reg:5000/onbuild:1\nRUN id\n", nil, "", "", 0},
		{"a symlinked /etc/group", "FROM reg:5000/link:1\nRUN id\n", nil, "", "", 0},
		{"not a Dockerfile", "this is not a Dockerfile\n", nil, "", "", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			reads := 0
			err := Check(Options{Dockerfile: []byte(c.dockerfile), BuildArgs: c.args, Target: c.target, Base: bases(&reads)})
			var e *Error
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("Check: %v, want nil", err)
			case c.want != "" && !errors.As(err, &e):
				t.Fatalf("Check: %v, want an *Error", err)
			case c.want != "":
				if e.Missing != c.want || e.Line != c.wantLine {
					t.Errorf("missing %s at line %d, want %s at line %d", e.Missing, e.Line, c.want, c.wantLine)
				}
				for _, w := range []string{"docker_buildkit: 0", "USER uid:gid", e.Missing, e.Base.Param} {
					if !strings.Contains(e.Error(), w) {
						t.Errorf("message %q lacks %q", e.Error(), w)
					}
				}
				t.Logf("%s", e)
			}
			if strings.Contains(c.name, "uid:gid") || strings.Contains(c.name, "default user") || strings.Contains(c.name, "no RUN") {
				if reads != 0 {
					t.Errorf("read the base's files %d times for a step that needs none", reads)
				}
			}
		})
	}
}
