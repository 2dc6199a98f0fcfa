// Package image builds the resource's image from the top-level Dockerfile on
// machines that cannot pull its public bases: the runtime base is a Debian
// minbase made with debootstrap from the machine's apt mirror, the builder
// base that minbase plus the machine's Go toolchain. The end-to-end test of
// the image (image_test.go) and `make image LOCAL_BASES=1` use it.
package image

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/concourse-docker/docker-image-resource/pkg/engine"
	"github.com/concourse-docker/docker-image-resource/pkg/logging"
	"github.com/docker/docker/api/types/build"
	"github.com/sirupsen/logrus"
)

// DefaultCacheDir keeps the slow results (the minbase tarball, the built
// image) between local runs; CI starts without it.
const DefaultCacheDir = "/var/cache/docker-image-resource-test"

// Suite is the Debian release of the runtime base: trixie's docker.io (26.1)
// loads zstd layers, bookworm's 20.10 does not.
const Suite = "trixie"

// minbaseMaxAge: an older cached minbase is made again, so local runs do not
// test against a Debian that stopped getting updates long ago.
const minbaseMaxAge = 30 * 24 * time.Hour

// minbaseScheme changes when the way the minbase is made changes, so cached
// tarballs made the old way are not used.
const minbaseScheme = "minbase-v1"

// AptMirror returns the Debian mirror the machine's apt uses (the first
// "…/debian" URI of /etc/apt/sources.list and sources.list.d), or
// deb.debian.org when none is found.
func AptMirror() string {
	files := []string{"/etc/apt/sources.list"}
	more, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append(files, more...)
	for _, f := range files {
		if m := mirrorIn(f); m != "" {
			return m
		}
	}
	return "http://deb.debian.org/debian"
}

// mirrorIn finds a Debian archive URI in a one-line (.list) or deb822
// (.sources) apt file; security and backports archives do not count.
func mirrorIn(path string) string {
	if !strings.HasSuffix(path, ".list") && !strings.HasSuffix(path, ".sources") {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		var uris []string
		switch {
		case strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "URIs:"):
			uris = strings.Fields(strings.TrimPrefix(line, "URIs:"))
		case strings.HasPrefix(line, "deb "):
			f := strings.Fields(strings.TrimPrefix(line, "deb "))
			if len(f) > 0 && strings.HasPrefix(f[0], "[") { // [arch=amd64 signed-by=...]
				for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
					f = f[1:]
				}
				if len(f) > 0 {
					f = f[1:]
				}
			}
			if len(f) > 0 {
				uris = f[:1]
			}
		}
		for _, u := range uris {
			u = strings.TrimRight(u, "/")
			if (strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://")) && strings.HasSuffix(u, "/debian") {
				return u
			}
		}
	}
	return ""
}

// MinbaseOptions configures Minbase.
type MinbaseOptions struct {
	CacheDir string // default DefaultCacheDir
	Mirror   string // default AptMirror()
	Log      *logrus.Entry
}

// Minbase returns a tarball of a Debian trixie minbase trimmed like the
// official slim images (no apt lists, docs, man pages, translations, device
// nodes), made with debootstrap on a cache miss. Needs root and debootstrap.
func Minbase(ctx context.Context, o MinbaseOptions) (string, error) {
	if o.CacheDir == "" {
		o.CacheDir = DefaultCacheDir
	}
	if o.Mirror == "" {
		o.Mirror = AptMirror()
	}
	log := logging.OrDiscard(o.Log)
	key := hashStrings(minbaseScheme, Suite, o.Mirror, runtime.GOARCH)
	out := filepath.Join(o.CacheDir, fmt.Sprintf("minbase-%s-%s.tar", Suite, key[:16]))
	if fi, err := os.Stat(out); err == nil && time.Since(fi.ModTime()) < minbaseMaxAge {
		log.Infof("minbase: cached %s", out)
		return out, nil
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", fmt.Errorf("minbase: debootstrap is not installed (apt-get install debootstrap): %w", err)
	}
	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return "", fmt.Errorf("minbase: %w", err)
	}
	t0 := time.Now()
	var err error
	// One more try: a mirror hiccup should not fail a test run.
	for attempt := 1; attempt <= 2; attempt++ {
		if err = makeMinbase(ctx, o, out, log); err == nil || ctx.Err() != nil {
			break
		}
		log.Warnf("minbase: attempt %d failed: %v", attempt, err)
	}
	if err != nil {
		return "", err
	}
	removeOthers(o.CacheDir, "minbase-"+Suite+"-*.tar", out)
	log.Infof("minbase: %s ready in %s", out, time.Since(t0).Round(time.Second))
	return out, nil
}

// makeMinbase runs debootstrap in a work folder and writes the trimmed
// root as a tarball at out.
func makeMinbase(ctx context.Context, o MinbaseOptions, out string, log *logrus.Entry) error {
	work, err := os.MkdirTemp(o.CacheDir, "debootstrap-")
	if err != nil {
		return fmt.Errorf("minbase: %w", err)
	}
	defer os.RemoveAll(work)
	root := filepath.Join(work, "root")
	t0 := time.Now()
	log.Infof("minbase: debootstrap --variant=minbase %s from %s", Suite, o.Mirror)
	// A mount namespace of its own: the /proc and /sys debootstrap mounts in
	// the target vanish with it, even when it is killed halfway.
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private",
		"debootstrap", "--variant=minbase", "--arch="+debArch(), Suite, root, o.Mirror)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	// debootstrap's children (dpkg, chroot) go with it when we stop it or die.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	logPath := filepath.Join(work, "debootstrap.log")
	lf, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("minbase: %w", err)
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	err = cmd.Run()
	lf.Close()
	if err != nil {
		return fmt.Errorf("minbase: debootstrap failed: %w\n%s", err, tail(logPath, 30))
	}
	log.Infof("minbase: debootstrap took %s", time.Since(t0).Round(time.Second))
	if err := trimMinbase(root); err != nil {
		return fmt.Errorf("minbase: %w", err)
	}
	tmp := filepath.Join(work, "minbase.tar")
	// GNU tar keeps ownership, modes, hardlinks and file capabilities as
	// they are; --numeric-owner because the host's names may differ.
	tarCmd := exec.CommandContext(ctx, "tar", "--numeric-owner", "--xattrs", "--xattrs-include=security.capability",
		"-C", root, "-cf", tmp, ".")
	if b, err := tarCmd.CombinedOutput(); err != nil {
		return fmt.Errorf("minbase: tar: %w\n%s", err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("minbase: %w", err)
	}
	return nil
}

func debArch() string {
	if runtime.GOARCH == "386" {
		return "i386"
	}
	return runtime.GOARCH // amd64, arm64, ppc64le, s390x, riscv64 match
}

// trimMinbase removes what the official slim images leave out and makes
// dpkg keep leaving it out, as they do.
func trimMinbase(root string) error {
	for _, g := range []string{
		"var/lib/apt/lists/*", "var/cache/apt/*", "var/cache/debconf/*-old", "var/log/*",
		"usr/share/man/*", "usr/share/info/*", "usr/share/locale/*", "usr/share/lintian/*",
		"dev/*", "tmp/*", "var/tmp/*", "etc/hostname", "etc/resolv.conf",
	} {
		ms, _ := filepath.Glob(filepath.Join(root, g))
		for _, m := range ms {
			if err := os.RemoveAll(m); err != nil {
				return err
			}
		}
	}
	docs, _ := filepath.Glob(filepath.Join(root, "usr/share/doc/*/*"))
	for _, d := range docs {
		if filepath.Base(d) != "copyright" {
			if err := os.RemoveAll(d); err != nil {
				return err
			}
		}
	}
	excl := "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n" +
		"path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\npath-exclude /usr/share/locale/*\n"
	return os.WriteFile(filepath.Join(root, "etc/dpkg/dpkg.cfg.d/docker"), []byte(excl), 0o644)
}

// DockerfileBases reads the default BUILDER_IMAGE and RUNTIME_IMAGE of a
// Dockerfile, the names the local bases must have.
func DockerfileBases(dockerfile string) (builder, runtime string, err error) {
	b, err := os.ReadFile(dockerfile)
	if err != nil {
		return "", "", err
	}
	arg := func(name string) string {
		m := regexp.MustCompile(`(?m)^ARG\s+` + name + `=(\S+)\s*$`).FindSubmatch(b)
		if m == nil {
			return ""
		}
		return strings.Trim(string(m[1]), `"`)
	}
	builder, runtime = arg("BUILDER_IMAGE"), arg("RUNTIME_IMAGE")
	if builder == "" || runtime == "" {
		return "", "", fmt.Errorf("%s: no default for ARG BUILDER_IMAGE or RUNTIME_IMAGE", dockerfile)
	}
	return builder, runtime, nil
}

// BaseNames are the references the local bases get in the daemon.
type BaseNames struct {
	Builder string // e.g. golang:1.26-trixie
	Runtime string // e.g. debian:trixie-slim
}

// GoEnv lists the go settings baked into the local builder base, so go mod
// download in the builder stage reaches the module proxy the way this
// machine does. Only settings that are set are listed.
func GoEnv(ctx context.Context) ([]string, error) {
	keys := []string{"GOPROXY", "GOFLAGS", "GOSUMDB", "GONOSUMDB", "GOPRIVATE", "GONOPROXY", "GOINSECURE"}
	out, err := exec.CommandContext(ctx, "go", append([]string{"env", "-json"}, keys...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("go env: %w", err)
	}
	vals := map[string]string{}
	if err := json.Unmarshal(out, &vals); err != nil {
		return nil, fmt.Errorf("go env: %w", err)
	}
	var env []string
	for _, k := range keys {
		if v := vals[k]; v != "" {
			env = append(env, k+"="+v)
		}
	}
	return env, nil
}

// CABundle is the machine's CA bundle, baked into the local builder base:
// where HTTPS is intercepted, only this machine's bundle lets go reach the
// module proxy.
const CABundle = "/etc/ssl/certs/ca-certificates.crt"

// BuilderInputs is what the local builder base is made of.
type BuilderInputs struct {
	GOROOT string   // copied to /usr/local/go
	GoEnv  []string // from GoEnv
	CA     string   // CA bundle path, CABundle by default
}

// DefaultBuilderInputs are this machine's toolchain, go settings and CA bundle.
func DefaultBuilderInputs(ctx context.Context) (BuilderInputs, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output()
	if err != nil {
		return BuilderInputs{}, fmt.Errorf("go env GOROOT: %w", err)
	}
	env, err := GoEnv(ctx)
	if err != nil {
		return BuilderInputs{}, err
	}
	return BuilderInputs{GOROOT: strings.TrimSpace(string(out)), GoEnv: env, CA: CABundle}, nil
}

// Key identifies the inputs for cache keys: the toolchain's version, the
// settings and the CA bundle's content.
func (b BuilderInputs) Key() (string, error) {
	ver, err := os.ReadFile(filepath.Join(b.GOROOT, "VERSION"))
	if err != nil {
		return "", fmt.Errorf("go toolchain version: %w", err)
	}
	ca, err := hashFile(b.CA)
	if err != nil {
		return "", err
	}
	return hashStrings(append([]string{string(ver), ca}, b.GoEnv...)...), nil
}

// ImportBases puts the minbase into the daemon as names.Runtime (Engine API
// import) and builds names.Builder from it with the toolchain, CA bundle and
// go settings of in.
func ImportBases(ctx context.Context, cli engine.Client, minbaseTar string, in BuilderInputs, names BaseNames, log *logrus.Entry) error {
	log = logging.OrDiscard(log)
	repo, tag := splitRef(names.Runtime)
	if _, err := engine.Import(ctx, cli, minbaseTar, repo, tag, log); err != nil {
		return fmt.Errorf("runtime base: %w", err)
	}
	t0 := time.Now()
	df := "FROM " + names.Runtime + "\n" +
		"COPY go /usr/local/go\n" +
		"COPY ca-certificates.crt " + CABundle + "\n" +
		"ENV GOPATH=/go PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin GOTOOLCHAIN=local\n"
	for _, kv := range in.GoEnv {
		k, v, _ := strings.Cut(kv, "=")
		q, _ := json.Marshal(v)
		df += "ENV " + k + "=" + string(q) + "\n"
	}
	df += "WORKDIR /go\n"

	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeBuilderContext(pw, df, in))
	}()
	defer pr.Close()
	resp, err := cli.ImageBuild(ctx, pr, build.ImageBuildOptions{
		Version: build.BuilderV1, Dockerfile: "Dockerfile", Tags: []string{names.Builder},
		Remove: true, ForceRemove: true, NetworkMode: "none",
	})
	if err != nil {
		return fmt.Errorf("builder base: %w", err)
	}
	defer resp.Body.Close()
	if _, err := engine.ReadStream(ctx, resp.Body, log.WithField("base", names.Builder)); err != nil {
		return fmt.Errorf("builder base: %w", err)
	}
	log.Infof("builder base %s made in %s", names.Builder, time.Since(t0).Round(time.Second))
	return nil
}

// writeBuilderContext writes the builder base's context: the Dockerfile,
// GOROOT as go/ and the CA bundle.
func writeBuilderContext(w io.Writer, dockerfile string, in BuilderInputs) error {
	tw := tar.NewWriter(w)
	add := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := add("Dockerfile", []byte(dockerfile)); err != nil {
		return err
	}
	ca, err := os.ReadFile(in.CA)
	if err != nil {
		return err
	}
	if err := add("ca-certificates.crt", ca); err != nil {
		return err
	}
	err = filepath.WalkDir(in.GOROOT, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(in.GOROOT, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(filepath.Join("go", rel))
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.CopyN(tw, f, h.Size)
		return err
	})
	if err != nil {
		return fmt.Errorf("copying %s: %w", in.GOROOT, err)
	}
	return tw.Close()
}

// splitRef splits "debian:trixie-slim" into repository and tag.
func splitRef(ref string) (string, string) {
	i := strings.LastIndex(ref, ":")
	if i < 0 || strings.Contains(ref[i:], "/") {
		return ref, "latest"
	}
	return ref[:i], ref[i+1:]
}

func hashStrings(ss ...string) string {
	h := sha256.New()
	for _, s := range ss {
		fmt.Fprintf(h, "%d:%s\n", len(s), s)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func hashFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// removeOthers removes the files matching pattern in dir except keep: one
// cached version of each thing is enough.
func removeOthers(dir, pattern, keep string) {
	ms, _ := filepath.Glob(filepath.Join(dir, pattern))
	for _, m := range ms {
		if m != keep {
			_ = os.Remove(m)
		}
	}
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
