// Command out is the resource's /opt/resource/out.
package main

import (
	"os"

	"github.com/concourse-docker/docker-image-resource/pkg/resource"
)

func main() { os.Exit(resource.Main(resource.Out)) }
