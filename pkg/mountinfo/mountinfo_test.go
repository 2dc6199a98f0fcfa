package mountinfo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestUnderDeepestFirstAndUnescaped(t *testing.T) {
	f := filepath.Join(t.TempDir(), "mountinfo")
	lines := []string{
		`22 1 0:21 / / rw - ext4 /dev/vda rw`,
		`30 22 0:30 / /tmp/dkd-1 rw - tmpfs tmpfs rw`,
		`31 30 0:31 / /tmp/dkd-1/x/netns/default rw - nsfs nsfs rw`,
		`32 30 0:32 / /tmp/dkd-1/with\040space rw - tmpfs tmpfs rw`,
		`33 22 0:33 / /tmp/dkd-10 rw - tmpfs tmpfs rw`,
	}
	if err := os.WriteFile(f, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Under(f, "/tmp/dkd-1")
	if err != nil {
		t.Fatal(err)
	}
	want := "/tmp/dkd-1/x/netns/default,/tmp/dkd-1/with space,/tmp/dkd-1"
	if strings.Join(got, ",") != want {
		t.Errorf("Under = %q, want %q", got, want)
	}
	if err := UnmountAll(f, ""); err != nil {
		t.Errorf("an empty dir must be a no-op: %v", err)
	}
}
