// Command rig-build builds (or finds in .cache/rig) the upstream binaries, this driver and the etcd
// launcher that the rig runs, printing progress, so that CI shows the slow part outside `go test`'s buffered output.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

func main() {
	upstreamOnly := flag.Bool("upstream-only", false, "build only the upstream binaries, not the driver and the etcd launcher")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	upstream, err := rig.EnsureUpstream(ctx, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rig-build:", err)
		os.Exit(1)
	}
	fmt.Printf("upstream binaries: %s\n", upstream)
	if *upstreamOnly {
		return
	}
	drv, err := rig.EnsureDriver(ctx, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rig-build:", err)
		os.Exit(1)
	}
	fmt.Printf("driver: %s\n", drv)
	launcher, err := rig.EnsureLauncher(ctx, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rig-build:", err)
		os.Exit(1)
	}
	fmt.Printf("etcd launcher: %s\n", launcher)
}
