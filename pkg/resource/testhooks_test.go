package resource

import (
	"testing"

	"github.com/concourse-docker/docker-image-resource/pkg/daemon"
)

func TestHooksFromEnv(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == TestDaemonEnv {
				return v
			}
			return ""
		}
	}
	if h := hooksFromEnv(env("")); h.Daemon != nil || h.BuildNetwork != "" || h.DockerLoad {
		t.Error("production must get no hooks")
	}
	var o daemon.Options
	h := hooksFromEnv(env("isolated"))
	h.Daemon(&o)
	if !o.Isolated || h.BuildNetwork != "none" {
		t.Errorf("isolated: %+v %q", o, h.BuildNetwork)
	}
	o = daemon.Options{}
	hooksFromEnv(env("private-network")).Daemon(&o)
	if !o.PrivateNetwork || o.Isolated {
		t.Errorf("private-network: %+v", o)
	}
	load := func(k string) string {
		if k == TestLoadEnv {
			return "docker-load"
		}
		return ""
	}
	if h := hooksFromEnv(load); !h.DockerLoad || h.Daemon != nil {
		t.Errorf("%s=docker-load: %+v", TestLoadEnv, h)
	}
}
