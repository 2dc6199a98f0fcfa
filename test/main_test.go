package test

import (
	"os"
	"testing"

	"github.com/concourse-docker/docker-image-resource/test/testenv"
)

// TestMain fails the run if the tests left anything behind on the host:
// daemons, mounts, state folders, a bridge, iptables rules.
func TestMain(m *testing.M) {
	os.Exit(testenv.RunCheckingLeftovers(m))
}
