// Command playground shows the driver at work in one command: it starts the local rig (a real
// Kubernetes control plane, the upstream snapshot controllers, this driver and a 3-member TLS etcd
// cluster), writes sample keys into etcd, takes a VolumeGroupSnapshot through the standard API, prints
// what it got and stays up for a look around with kubectl until Ctrl-C.
//
// The cluster under test runs as a real StatefulSet, so -restore can show the restore command of
// README.md at work: after the snapshot it overwrites and deletes sample keys, restores in place with
// -scale and shows every sample key back at its snapshot value.
//
//	go run ./tools/playground                  # stay up after the table
//	go run ./tools/playground -once            # exit after the table: 0 only if ready and verified
//	go run ./tools/playground -once -restore   # also restore it: 0 only if every key is back
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// snapshotName is the VolumeGroupSnapshot the playground creates in the etcd namespace.
const snapshotName = "playground"

// sampleKeyPrefix is where the sample keys go in the etcd cluster under test.
const sampleKeyPrefix = "/playground/"

type options struct {
	once    bool
	restore bool
	keys    int
	timeout time.Duration
	wait    time.Duration
}

func main() {
	var o options
	flag.BoolVar(&o.once, "once", false, "exit after the table: status 0 only when the snapshot is readyToUse and verified")
	flag.BoolVar(&o.restore, "restore", false, "after the snapshot, change and delete sample keys, restore the snapshot in place (restore -scale) and check every key is back")
	flag.IntVar(&o.keys, "keys", 1000, "number of sample keys to write into the etcd cluster under test")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Minute, "limit for building, starting the rig and taking the snapshot (a cold build takes about 8 minutes)")
	flag.DurationVar(&o.wait, "wait", 5*time.Minute, "how long to wait for the VolumeGroupSnapshot to become readyToUse")
	flag.Parse()
	if flag.NArg() > 0 || o.keys < 1 {
		fmt.Fprintln(os.Stderr, "usage: go run ./tools/playground [-once] [-restore] [-keys N] [-timeout D] [-wait D]")
		os.Exit(2)
	}
	os.Exit(run(o))
}

func run(o options) int {
	// The rig's own handler would exit the process; the playground stops the rig itself so that it can
	// remove its directory and say what happened. A second signal kills at once (children die with us).
	ctx, stop := rig.InterruptContext(context.Background(), func(sig os.Signal) {
		fmt.Fprintf(os.Stderr, "\nplayground: %v: stopping the rig (again to kill it at once)\n", sig)
	})
	defer stop()

	root, err := os.MkdirTemp("", "playground-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "playground: %v\n", err)
		return 1
	}
	timedOut := fmt.Errorf("-timeout %s reached", o.timeout)
	workCtx, cancel := context.WithTimeoutCause(ctx, o.timeout, timedOut)
	defer cancel()
	// failed names the -timeout when it ended the work, since components report only "deadline exceeded".
	failed := func(err error) error {
		if context.Cause(workCtx) == timedOut && !strings.Contains(err.Error(), timedOut.Error()) {
			return fmt.Errorf("%w: %w", timedOut, err)
		}
		return err
	}

	r, err := rig.Start(workCtx, rig.Options{Root: root, Progress: os.Stderr, NoSignalHandler: true, EtcdStatefulSet: true})
	if err != nil {
		return finish(ctx, nil, root, failed(fmt.Errorf("starting the rig: %w", err)))
	}

	res, err := takeSnapshot(workCtx, r, o)
	if res != nil {
		printTable(os.Stdout, res)
	}
	if err == nil {
		err = res.verify()
	}
	if err != nil {
		return finish(ctx, r, root, failed(err))
	}
	printVerified(os.Stdout, res)
	if o.restore {
		rr, err := changeAndRestore(workCtx, r, res, o)
		if rr != nil {
			printRestore(os.Stdout, rr)
		}
		if err == nil {
			err = rr.verify()
		}
		if err != nil {
			return finish(ctx, r, root, failed(err))
		}
	}
	if o.once {
		return finish(ctx, r, root, nil)
	}

	cancel()
	printLookAround(os.Stdout, r, res)
	<-ctx.Done()
	return finish(ctx, r, root, nil)
}

// finish stops the rig and returns the exit status: 0 for success or a deliberate Ctrl-C after the
// table, 128+signal when interrupted before, 1 on failure. On failure everything the rig wrote (logs,
// pod output, volumes) is kept for inspection; otherwise the rig's directory is removed.
func finish(ctx context.Context, r *rig.Rig, root string, err error) int {
	sig, stoppedByUser := rig.InterruptedBy(ctx)
	if err != nil && !stoppedByUser {
		fmt.Fprintf(os.Stderr, "playground: FAILED: %v\n", err)
		logs := filepath.Join(root, "logs")
		if r != nil {
			logs = r.Logs()
		}
		fmt.Fprintf(os.Stderr, "playground: component logs: %s (etcd-snapshot-driver.log, csi-snapshotter.log, snapshot-controller.log, podrunner.log, ...)\n", logs)
		fmt.Fprintf(os.Stderr, "playground: pod output under %s\n", filepath.Join(root, "pods"))
	}
	if r != nil {
		r.Stop()
	}
	switch {
	case err != nil && !stoppedByUser:
		fmt.Fprintf(os.Stderr, "playground: kept %s for inspection\n", root)
		return 1
	case err != nil:
		os.RemoveAll(root)
		fmt.Fprintln(os.Stderr, "playground: interrupted")
		return sig.ExitCode()
	}
	os.RemoveAll(root)
	if stoppedByUser {
		fmt.Fprintln(os.Stderr, "playground: stopped cleanly")
	}
	return 0
}
