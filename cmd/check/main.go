// Command check is the resource's /opt/resource/check.
package main

import (
	"os"

	"github.com/concourse-docker/docker-image-resource/pkg/resource"
)

func main() { os.Exit(resource.Main(resource.Check)) }
