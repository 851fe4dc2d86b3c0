// Command etcd-launcher is the entrypoint of the rig's etcd StatefulSet image: it maps the pod's
// ordinal to its member's loopback ports and TLS files and then becomes etcd (exec), so that the pod
// runner's process is etcd itself and SIGTERM reaches it. See package launcher for the arguments.
package main

import (
	"fmt"
	"os"
	"syscall"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig/launcher"
)

func main() {
	path, argv, summary, err := launcher.Plan(os.Args[1:], os.Getenv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd-launcher: %v\n", err)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "etcd-launcher: %s; exec %s\n", summary, path)
	err = syscall.Exec(path, argv, os.Environ())
	fmt.Fprintf(os.Stderr, "etcd-launcher: exec %s: %v\n", path, err)
	os.Exit(2)
}
