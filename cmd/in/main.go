// Command in is the resource's /opt/resource/in.
package main

import (
	"os"
	"runtime/debug"

	"github.com/concourse-docker/docker-image-resource/pkg/resource"
)

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(resource.GetHeapLimit)
	}
	os.Exit(resource.Main(resource.In))
}
