// Package mountinfo reads mount points from /proc/*/mountinfo and removes
// the ones under a folder: shared by the put's daemon and the test
// environment's, which both must leave no mount behind.
package mountinfo

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Points reads the mount points of a mountinfo file (e.g.
// /proc/thread-self/mountinfo).
func Points(mountinfo string) (map[string]bool, error) {
	b, err := os.ReadFile(mountinfo)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", mountinfo, err)
	}
	out := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 5 {
			out[unescape(f[4])] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("scanning %s: %w", mountinfo, err)
	}
	return out, nil
}

// Under lists the mount points at or below dir in a mountinfo file, deepest
// first, so nested mounts come before their parents.
func Under(mountinfo, dir string) ([]string, error) {
	all, err := Points(mountinfo)
	if err != nil {
		return nil, err
	}
	var out []string
	for mp := range all {
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// UnmountAll lazily unmounts everything at or below dir as the mountinfo
// file shows it, retrying a few times for mounts stacked on one point.
func UnmountAll(mountinfo, dir string) error {
	if dir == "" {
		return nil
	}
	var errs []error
	for attempt := 0; attempt < 5; attempt++ {
		mps, err := Under(mountinfo, dir)
		if err != nil {
			return err
		}
		if len(mps) == 0 {
			return nil
		}
		errs = errs[:0]
		for _, mp := range mps {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("unmounting %s: %w", mp, err))
			}
		}
	}
	if mps, _ := Under(mountinfo, dir); len(mps) > 0 {
		errs = append(errs, fmt.Errorf("mounts still under %s: %v", dir, mps))
	}
	return errors.Join(errs...)
}

// unescape decodes the octal escapes (\040 for a space) of mountinfo.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
