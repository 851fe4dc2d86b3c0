// Command bench measures the driver against what a user would do by hand, side by side on the rig: it
// fills the etcd cluster under test (a real StatefulSet) with objects shaped like a Kubernetes API
// server's, then runs pairs on the same member: raw `etcdctl snapshot save` + `etcdutl snapshot status`
// versus a dynamic VolumeGroupSnapshot to readyToUse. It prints a row per pair, the phases of the
// driver's path, verify against `etcdutl snapshot status` on the same file, and a last line a script
// can read:
//
//	RESULT size=<bytes> pairs=<n> ratio_median=<x> overhead_median_s=<s> verify_vs_status=<x>
//
// With -restore it then restores the last snapshot in place with the restore command (-scale) and
// compares it with raw `etcdutl snapshot restore` of the same file, printing a second RESULT line
// (RESULT restore ...). Everything it writes is removed at the end, and after Ctrl-C (or SIGTERM),
// which exits 128+signal; a failed run keeps the component logs (rig.Finish).
//
//	go run ./tools/bench                  # 1 GiB, 3 pairs
//	go run ./tools/bench -size 10Mi       # control-path overhead, 10 consecutive snapshots
//	go run ./tools/bench -size 1Gi -restore
//	go run ./tools/bench -size 8Gi -pairs 1 -members 1   # large database; each member holds a copy
//	go run ./tools/bench -short           # smoke run: 4 MiB, 1 pair
//	go run ./tools/bench -records 10,100,1000,10000   # metadata Get/Put and driver RSS by record count
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

type options struct {
	size       int64
	pairs      int
	restore    bool
	short      bool
	timeout    time.Duration
	driverArgs []string
	scArgs     []string
	logDir     string
	members    int
	keepFile   string
	records    []int
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// smallSize is the largest -size whose default is controlPathPairs pairs: the control path dominates.
const (
	smallSize        = 64 << 20
	controlPathPairs = 10
	defaultPairs     = 3
	shortSize        = 4 << 20
)

func main() {
	var (
		o        options
		sizeText string
		extra    stringList
		scExtra  stringList
		records  string
	)
	flag.StringVar(&sizeText, "size", "1Gi", "data to write into the cluster under test (keys and values), a Kubernetes quantity: 10Mi, 1Gi, 8Gi")
	flag.IntVar(&o.pairs, "pairs", 0, "raw/driver pairs; 0 means 3, or 10 for a -size of 64Mi or less")
	flag.BoolVar(&o.restore, "restore", false, "also compare the restore command (-scale) with raw etcdutl snapshot restore of the last snapshot")
	flag.BoolVar(&o.short, "short", false, "smoke run: -size 4Mi and 1 pair unless given")
	flag.DurationVar(&o.timeout, "timeout", 90*time.Minute, "limit for the whole run, rig start-up included")
	flag.IntVar(&o.members, "members", 3, "members of the etcd cluster under test (1 saves disk for an 8Gi run: every member holds a copy)")
	flag.StringVar(&o.keepFile, "keep-file", "", "copy the last driver snapshot file here before cleaning up (to study verify on it)")
	flag.StringVar(&o.logDir, "log-dir", "", "keep the rig's component logs in this directory (default: removed with the rig)")
	flag.Var(&extra, "driver-arg", "extra flag for the driver (repeatable), for example -driver-arg=-kube-api-qps=5")
	flag.StringVar(&records, "records", "", "instead of snapshots, measure the metadata store's Get and Put and the driver's RSS at these ascending record counts: 10,100,1000,10000")
	flag.Var(&scExtra, "snapshot-controller-arg", "extra flag for the upstream snapshot-controller (repeatable), for example -snapshot-controller-arg=--kube-api-qps=5")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	q, err := resource.ParseQuantity(sizeText)
	if err != nil || q.Value() <= 0 || flag.NArg() > 0 || o.pairs < 0 || o.members < 1 {
		fmt.Fprintln(os.Stderr, "usage: go run ./tools/bench [-size 1Gi] [-pairs N] [-restore] [-short] [-timeout D] [-driver-arg FLAG]... [-snapshot-controller-arg FLAG]...")
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: -size %q: %v\n", sizeText, err)
		}
		os.Exit(2)
	}
	o.size = q.Value()
	if records != "" {
		if o.records, err = parseCounts(records); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			os.Exit(2)
		}
	}
	if o.short && !set["size"] {
		o.size = shortSize
	}
	if o.pairs == 0 {
		switch {
		case o.short:
			o.pairs = 1
		case o.size <= smallSize:
			o.pairs = controlPathPairs
		default:
			o.pairs = defaultPairs
		}
	}
	o.driverArgs = extra
	o.scArgs = scExtra
	os.Exit(run(o))
}

// etcdArgs are the members' extra flags for a database of about size bytes: etcd refuses writes past
// --quota-backend-bytes (2 GiB by default), and with 1 MiB writes the default --snapshot-count (10000
// entries) would keep about 10 GiB of WAL per member before the first purge.
func etcdArgs(size int64) []string {
	const defaultQuota = 2 << 30
	if size <= 1<<30 {
		return nil
	}
	return []string{
		fmt.Sprintf("--quota-backend-bytes=%d", max(defaultQuota, 2*size+(1<<30))),
		"--snapshot-count=1000",
	}
}

func run(o options) int {
	ctx, stop := rig.CommandContext(o.timeout, func(sig os.Signal) {
		say("%v: cleaning up and stopping the rig (again to kill it at once)", sig)
	})
	defer stop()

	root, err := os.MkdirTemp("", "bench-")
	if err != nil {
		say("FAILED: %v", err)
		return 1
	}
	rig.PrintMachine(os.Stdout, "compare within one run, not across runs")

	if o.records != nil {
		return runRecords(ctx, o, root)
	}
	r, err := rig.Start(ctx, rig.Options{Root: root, Progress: os.Stderr, NoSignalHandler: true,
		EtcdStatefulSet: true, EtcdArgs: etcdArgs(o.size), DriverArgs: o.driverArgs, SnapshotControllerArgs: o.scArgs, LogDir: o.logDir, EtcdMembers: o.members})
	if err != nil {
		return rig.Finish(ctx, nil, root, o.logDir, fmt.Errorf("starting the rig: %w", err), say)
	}
	b := &bench{r: r, s: r.EtcdSet, o: o, dir: root}
	err = b.run(ctx)
	if cerr := b.cleanup(); cerr != nil {
		say("clean-up: %v", cerr)
		err = errors.Join(err, cerr)
	}
	return rig.Finish(ctx, r, root, o.logDir, err, say)
}

// say prints one progress line.
func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}
