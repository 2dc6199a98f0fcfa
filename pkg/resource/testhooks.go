package resource

import (
	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
	"github.com/concourse-docker/docker-image-resource/pkg/registry"
)

// This file holds every switch that exists for tests only: Env.Hooks for
// commands run in-process, TestDaemonEnv for the built binaries. They are
// the only way tests change what a command does: registry.Options.Hosts
// and daemon.Options.Hosts (a registry on loopback under a public name),
// registry retry waits, the put's dockerd isolation and RUN steps' network
// are set through them and nowhere else. Production leaves Hooks zero and
// never sets TestDaemonEnv.

// Hooks let in-process tests reach registries on loopback under public
// names, isolate the put's dockerd on a test host and shorten retry waits.
type Hooks struct {
	// Registry adjusts the options of every registry client a command
	// builds (Hosts, the retry policy).
	Registry func(*registry.Options)
	// Daemon adjusts the put's dockerd (Isolated, PrivateNetwork, Hosts,
	// Binary).
	Daemon func(*daemon.Options)
	// BuildNetwork is the network mode of RUN steps ("" = the daemon's
	// default bridge, as in production).
	BuildNetwork string
	// DockerLoad loads every base with docker load, never writing it into
	// the layer store first: the path a daemon that cannot take the seed
	// takes, tested on one that could, and make bench-scale's "before".
	DockerLoad bool
}

func (h Hooks) registry(o *registry.Options) {
	if h.Registry != nil {
		h.Registry(o)
	}
}

func (h Hooks) daemon(o *daemon.Options) {
	if h.Daemon != nil {
		h.Daemon(o)
	}
}

// TestDaemonEnv is for tests of the built binaries only: "isolated" runs
// the put's dockerd without a bridge or iptables rules and RUN steps without
// network (what in-process tests get through Hooks), "private-network" runs
// it in a network namespace of its own. Production never sets it.
const TestDaemonEnv = "DOCKER_IMAGE_RESOURCE_TEST_DAEMON"

// TestLoadEnv is for tests of the built binaries only: "docker-load" is
// Hooks.DockerLoad. Production never sets it.
const TestLoadEnv = "DOCKER_IMAGE_RESOURCE_TEST_LOAD"

// hooksFromEnv reads TestDaemonEnv and TestLoadEnv; Main gives the hooks to
// the command.
func hooksFromEnv(getenv func(string) string) Hooks {
	var h Hooks
	h.DockerLoad = getenv(TestLoadEnv) == "docker-load"
	switch getenv(TestDaemonEnv) {
	case "isolated":
		h.Daemon = func(o *daemon.Options) { o.Isolated = true }
		h.BuildNetwork = "none"
	case "private-network":
		h.Daemon = func(o *daemon.Options) { o.PrivateNetwork = true }
	}
	return h
}
