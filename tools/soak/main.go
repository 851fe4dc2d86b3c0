// Command soak runs the driver through many snapshot cycles on the rig and shows whether it holds on
// to anything: it starts the rig, then N times creates a dynamic VolumeGroupSnapshot of the etcd
// cluster under test, waits until it is readyToUse, deletes it and waits until everything the driver
// made for it is gone. Every 10 cycles (-every) it prints the resident memory (and its anonymous
// part) and the open file descriptors of each driver process; at the end it prints the objects of the driver left behind
// (Jobs, Pods, PVCs, Secrets, records, group and member contents: rig.DriverObjects) after the
// sweeper's grace period, and a last line a script can read:
//
//	RESULT cycles=<n> failed=<n> leaked=<n> duration_s=<s> rss_first_mib=<x> rss_last_mib=<x> anon_first_mib=<x> anon_last_mib=<x> fds_first=<n> fds_last=<n>
//
// It exits 0 only when every cycle turned ready and nothing leaked. Ctrl-C (or SIGTERM) stops the rig
// and removes its directory, the cycle under way with it; a second one kills at once.
//
//	go run ./tools/soak -cycles 500
//	go run ./tools/soak -cycles 3 -every 1   # smoke run
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

type options struct {
	cycles     int
	every      int
	wait       time.Duration
	sweepGrace time.Duration
	timeout    time.Duration
	logDir     string
}

func main() {
	var o options
	flag.IntVar(&o.cycles, "cycles", 100, "create/ready/delete cycles to run")
	flag.IntVar(&o.every, "every", 10, "print the driver's memory and file descriptors every this many cycles")
	flag.DurationVar(&o.wait, "wait", 5*time.Minute, "how long one cycle may take to turn ready, and then to be cleaned up")
	flag.DurationVar(&o.sweepGrace, "sweep-grace", 15*time.Second, "the driver's -sweep-grace: how old an abandoned object must be before the sweeper removes it")
	flag.DurationVar(&o.timeout, "timeout", 6*time.Hour, "limit for the whole run, rig start-up included")
	flag.StringVar(&o.logDir, "log-dir", "", "keep the rig's component logs in this directory (default: removed with the rig unless the run fails)")
	flag.Parse()
	if flag.NArg() > 0 || o.cycles < 1 || o.every < 1 || o.wait <= 0 || o.sweepGrace <= 0 {
		fmt.Fprintln(os.Stderr, "usage: go run ./tools/soak [-cycles N>=1] [-every N>=1] [-wait D] [-sweep-grace D] [-timeout D] [-log-dir DIR]")
		os.Exit(2)
	}
	os.Exit(run(o))
}

func run(o options) int {
	ctx, stop := rig.CommandContext(o.timeout, func(sig os.Signal) {
		say("%v: stopping the rig (again to kill it at once)", sig)
	})
	defer stop()

	root, err := os.MkdirTemp("", "soak-")
	if err != nil {
		say("FAILED: %v", err)
		return 1
	}
	rig.PrintMachine(os.Stdout, "durations vary from run to run")
	r, err := rig.Start(ctx, rig.Options{Root: root, Progress: os.Stderr, NoSignalHandler: true, LogDir: o.logDir,
		// The shipped Lease timings, not the rig's short ones: on a loaded machine a renewal can take
		// longer than the rig's 3s deadline, and the driver, losing its Lease, exits as it should.
		DriverArgs: []string{"-sweep-grace=" + o.sweepGrace.String(),
			"-leader-election-lease-duration=15s", "-leader-election-renew-deadline=10s", "-leader-election-retry-period=2s"}})
	if err != nil {
		return rig.Finish(ctx, nil, root, o.logDir, fmt.Errorf("starting the rig: %w", err), say)
	}
	s := &soak{r: r, o: o}
	err = s.run(ctx)
	return rig.Finish(ctx, r, root, o.logDir, err, say)
}

// say prints one progress line.
func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "soak: "+format+"\n", args...)
}
