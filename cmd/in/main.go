// Command in is the resource's /opt/resource/in.
package main

import (
	"os"

	"github.com/concourse-docker/docker-image-resource/pkg/resource"
)

func main() { os.Exit(resource.Main(resource.In)) }
