package imagefs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// DefaultPath is the PATH a container gets when its image sets none.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Metadata is metadata.json: what Concourse needs to run a task in rootfs/.
type Metadata struct {
	Env  []string `json:"env"`
	User string   `json:"user,omitempty"`
}

// ReadMetadata returns the environment a container of the image would start
// with (less HOSTNAME) and the passwd name of its user.
//
// Env: PATH first (the image's, or DefaultPath), then the image's other
// variables in order (a repeated name keeps its first position and last
// value), then HOME when the image does not set it: the user's passwd home,
// /root for root without a passwd entry, else "/".
//
// User: the config's User may be a name, a uid, name:group or uid:gid; the
// user part is looked up in rootfs/etc/passwd (read without following
// symlinks out of rootfs). An empty User is uid 0. Left empty when no entry
// matches (a missing /etc/passwd included). rootfs "" means no passwd.
func ReadMetadata(cfg *v1.ConfigFile, rootfs string) (Metadata, error) {
	var imgEnv []string
	var user string
	if cfg != nil {
		imgEnv = cfg.Config.Env
		user = cfg.Config.User
	}
	var entries []passwdEntry
	if rootfs != "" {
		var err error
		if entries, err = readPasswd(rootfs); err != nil {
			return Metadata{}, err
		}
	}

	u, _, _ := strings.Cut(user, ":")
	var match *passwdEntry
	if u == "" {
		match = lookupUID(entries, 0)
	} else if uid, err := strconv.Atoi(u); err == nil && uid >= 0 {
		match = lookupUID(entries, uid)
	} else {
		match = lookupName(entries, u)
	}
	isRoot := u == "" || u == "0" || (match != nil && match.uid == 0)

	env := mergeEnv(imgEnv)
	if !hasVar(env, "HOME") {
		home := "/"
		switch {
		case match != nil && match.home != "":
			home = match.home
		case match == nil && isRoot:
			home = "/root"
		}
		env = append(env, "HOME="+home)
	}
	m := Metadata{Env: env}
	if match != nil {
		m.User = match.name
	}
	return m, nil
}

// mergeEnv puts PATH first and drops HOSTNAME, keeping docker's
// replace-or-append order for the rest.
func mergeEnv(imgEnv []string) []string {
	out := []string{DefaultPath}
	pos := map[string]int{"PATH": 0}
	for _, kv := range imgEnv {
		k, _, _ := strings.Cut(kv, "=")
		if k == "HOSTNAME" || k == "" {
			continue
		}
		if i, ok := pos[k]; ok {
			out[i] = kv
			continue
		}
		pos[k] = len(out)
		out = append(out, kv)
	}
	return out
}

func hasVar(env []string, name string) bool {
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == name {
			return true
		}
	}
	return false
}

type passwdEntry struct {
	name string
	uid  int
	home string
}

func lookupUID(es []passwdEntry, uid int) *passwdEntry {
	for i := range es {
		if es[i].uid == uid {
			return &es[i]
		}
	}
	return nil
}

func lookupName(es []passwdEntry, name string) *passwdEntry {
	for i := range es {
		if es[i].name == name {
			return &es[i]
		}
	}
	return nil
}

// maxPasswdSize caps what is read: the file comes from the image.
const maxPasswdSize = 16 << 20

// readPasswd reads rootfs/etc/passwd, resolving symlinks inside rootfs. A
// passwd that cannot be reached (missing, dangling or looping link, a file
// where a directory should be) is no entries, as for docker.
func readPasswd(rootfs string) ([]passwdEntry, error) {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return nil, fmt.Errorf("open rootfs: %w", err)
	}
	defer root.Close()
	p, err := newResolver(root, false).resolvePath("etc/passwd")
	if err != nil {
		return nil, nil
	}
	f, err := root.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open /etc/passwd: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, nil
	}
	return parsePasswd(io.LimitReader(f, maxPasswdSize))
}

func parsePasswd(r io.Reader) ([]passwdEntry, error) {
	var out []passwdEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) < 3 {
			continue
		}
		uid, err := strconv.Atoi(f[2])
		if err != nil {
			continue
		}
		e := passwdEntry{name: f[0], uid: uid}
		if len(f) > 5 {
			e.home = f[5]
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read /etc/passwd: %w", err)
	}
	return out, nil
}

// resolvePath resolves p fully (its last component too) inside the root,
// returning a symlink-free path; fs.ErrNotExist when something is missing.
func (r *resolver) resolvePath(p string) (string, error) {
	for links := 0; links <= maxSymlinks; links++ {
		dir, base, err := r.resolveFile(p, false)
		if err != nil {
			return "", err
		}
		full := path.Join(dir, base)
		fi, err := r.root.Lstat(full)
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			return full, nil
		}
		target, err := r.root.Readlink(full)
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(target, "/") {
			p = target
		} else {
			p = path.Join(dir, target)
		}
		p = strings.TrimLeft(path.Clean("/"+p), "/")
	}
	return "", errLoop(p)
}
