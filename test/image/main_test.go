package image

import (
	"os"
	"testing"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

// TestMain fails the run when the tests left anything on the host (the
// outer daemon's bridges and rules must vanish with its throwaway network
// namespace), including the image cache's temporary folders.
func TestMain(m *testing.M) {
	os.Exit(testenv.RunCheckingLeftovers(m, DefaultCacheDir+"/debootstrap-*", DefaultCacheDir+"/.save-*"))
}
