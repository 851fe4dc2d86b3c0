package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

const (
	// cleanupTimeout bounds the clean-up, which runs after the run's context may be over.
	cleanupTimeout = 5 * time.Minute
	// observerGrace is how long the phases wait for the informers to show a step the wait already saw.
	observerGrace = 5 * time.Second
	// throttleMessage is client-go's log line when its own rate limiter delays a request.
	throttleMessage = "client-side throttling"
	// keepSnapshotsUpTo is the largest -size whose snapshots all stay until the end (records pile up,
	// as they do for a schedule); above it each pair's snapshot goes once measured.
	keepSnapshotsUpTo = 2 << 30
)

type bench struct {
	r   *rig.Rig
	s   *rig.EtcdStatefulSet
	o   options
	dir string

	cli     *clientv3.Client
	tls     tlsFiles
	obs     *observer
	stopObs context.CancelFunc
	created []string // VolumeGroupSnapshots, for the clean-up
	scratch []string // files and directories of raw runs, for the clean-up
	objects int64
	dbSize  int64
	pairs   []*pairResult
}

// pairResult is one raw/driver pair on the same member.
type pairResult struct {
	n        int
	rawFirst bool
	member   string
	raw      *rawResult
	drv      *driverResult
	verify   timed // the driver's verify subcommand on the driver's file, run by the bench
	status   timed // etcdutl snapshot status on the same file
}

// driverResult is one VolumeGroupSnapshot to readyToUse.
type driverResult struct {
	name        string
	took        time.Duration
	phases      []phase
	rec         *driver.Record
	file        string
	verifyRSS   int64 // peak (VmHWM) of the Job's verify container, sampled
	verifyAnon  int64 // peak RssAnon of the Job's verify container, sampled
	createCalls float64
}

func (p *pairResult) rawSeconds() float64 { return (p.raw.save.took + p.raw.status.took).Seconds() }
func (p *pairResult) ratio() float64      { return p.drv.took.Seconds() / p.rawSeconds() }
func (p *pairResult) overhead() float64   { return p.drv.took.Seconds() - p.rawSeconds() }

func (b *bench) run(ctx context.Context) error {
	if err := b.s.InstallSnapshotClasses(ctx); err != nil {
		return err
	}
	var err error
	if b.cli, err = b.s.Client(); err != nil {
		return err
	}
	say("filling etcd cluster %s/%s with %s of Kubernetes-like objects under %s", b.s.Namespace(), b.s.Name(), mib(b.o.size), fillPrefix)
	if b.objects, err = fill(ctx, b.cli, b.o.size, say); err != nil {
		return err
	}
	ca, cert, key := b.s.Creds()
	if b.tls, err = writeTLSFiles(b.dir, ca, cert, key); err != nil {
		return err
	}
	obsCtx, stop := context.WithCancel(context.Background())
	b.stopObs = stop
	b.obs = startObserver(obsCtx, b.r, b.s.Namespace())
	throttled0 := b.throttled()

	for i := range b.o.pairs {
		p, err := b.pair(ctx, i)
		if err != nil {
			return fmt.Errorf("pair %d: %w", i+1, err)
		}
		b.pairs = append(b.pairs, p)
		if b.o.size > keepSnapshotsUpTo && i < b.o.pairs-1 {
			// Disk: each snapshot is a copy of the database; keep only the last (for -restore).
			if err := b.r.DeleteGroupSnapshotIn(ctx, b.s.Namespace(), p.drv.name); err != nil {
				return err
			}
		}
		say("pair %d: raw %.2fs, driver %.2fs (ratio %.2f), verify %.2fs vs status %.2fs",
			i+1, p.rawSeconds(), p.drv.took.Seconds(), p.ratio(), p.verify.took.Seconds(), p.status.took.Seconds())
	}
	throttled := b.throttled()
	b.print(os.Stdout, throttled0, throttled)
	if b.o.keepFile != "" {
		last := b.pairs[len(b.pairs)-1].drv.file
		if _, err := runTool(ctx, "cp", last, b.o.keepFile); err != nil {
			return err
		}
		say("copied %s to %s (-keep-file)", last, b.o.keepFile)
	}
	if b.o.restore {
		res, err := b.compareRestore(ctx, b.pairs[len(b.pairs)-1])
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		fmt.Println(res)
	}
	return nil
}

// leader is the client URL and name of the cluster's leader, which the driver snapshots too.
func (b *bench) leader(ctx context.Context) (url, name string, dbSize int64, err error) {
	members, err := b.cli.MemberList(ctx)
	if err != nil {
		return "", "", 0, err
	}
	for _, u := range b.s.ClientURLs() {
		st, err := b.cli.Status(ctx, u)
		if err != nil {
			continue
		}
		if st.Leader == st.Header.MemberId {
			for _, m := range members.Members {
				if m.ID == st.Leader {
					name = m.Name
				}
			}
			return u, name, st.DbSize, nil
		}
	}
	return "", "", 0, errors.New("no member says it is the leader")
}

// pair runs the raw path and the driver's, alternating which goes first.
func (b *bench) pair(ctx context.Context, i int) (*pairResult, error) {
	url, name, dbSize, err := b.leader(ctx)
	if err != nil {
		return nil, err
	}
	b.dbSize = dbSize
	p := &pairResult{n: i + 1, rawFirst: i%2 == 0, member: name}
	rawFile := filepath.Join(b.dir, "raw.db")
	b.scratch = append(b.scratch, rawFile)
	runRaw := func() error {
		p.raw, err = rawSnapshot(ctx, b.r.BinDir, url, b.tls, rawFile)
		os.Remove(rawFile)
		return err
	}
	runDriver := func() error {
		p.drv, err = b.driverSnapshot(ctx, fmt.Sprintf("bench-%02d", i+1))
		return err
	}
	steps := []func() error{runRaw, runDriver}
	if !p.rawFirst {
		steps[0], steps[1] = steps[1], steps[0]
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	if src := p.drv.rec.SourceMember; src == nil || src.Endpoint != url {
		say("pair %d: the driver saved from %v, the raw path from %s (leader %s)", p.n, src, url, name)
	}
	// verify and etcdutl snapshot status on the same file, in alternating order too.
	var st *rig.SnapshotStatus
	cmds := []func() error{
		func() error {
			p.verify, err = runTool(ctx, filepath.Join(b.r.DriverBinDir, rig.DriverBinary), "verify", "-file="+p.drv.file)
			return err
		},
		func() error { p.status, st, err = snapshotStatus(ctx, b.r.BinDir, p.drv.file); return err },
	}
	if !p.rawFirst {
		cmds[0], cmds[1] = cmds[1], cmds[0]
	}
	for _, c := range cmds {
		if err := c(); err != nil {
			return nil, err
		}
	}
	// The record must say what etcd's own tool reads from the same file.
	rec := p.drv.rec
	if rec.Hash != st.Hash || rec.Revision != st.Revision || rec.TotalKeys != st.TotalKey {
		return nil, fmt.Errorf("record %s says hash %d, revision %d, %d total keys; etcdutl snapshot status of its file says hash %d, revision %d, %d total keys",
			rec.ID, rec.Hash, rec.Revision, rec.TotalKeys, st.Hash, st.Revision, st.TotalKey)
	}
	return p, nil
}

// driverSnapshot creates VolumeGroupSnapshot name and waits for readyToUse.
func (b *bench) driverSnapshot(ctx context.Context, name string) (*driverResult, error) {
	rssCtx, stopRSS := context.WithCancel(ctx)
	defer stopRSS()
	peak := watchVerifyRSS(rssCtx)
	calls0 := b.createCalls(ctx)
	begin := time.Now()
	if _, err := b.s.CreateGroupSnapshot(ctx, name); err != nil {
		return nil, err
	}
	b.created = append(b.created, name)
	// Ten minutes plus 2 MB/s: a generous bound, the wait ends at readyToUse.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute+time.Duration(b.o.size/2e6)*time.Second)
	defer cancel()
	vgs, err := b.r.WaitGroupSnapshotReadyIn(wctx, b.s.Namespace(), name)
	ready := time.Now()
	if err != nil {
		return nil, err
	}
	stopRSS()
	d := &driverResult{name: name, took: ready.Sub(begin), createCalls: b.createCalls(ctx) - calls0}
	d.verifyRSS, d.verifyAnon = peak()
	if d.rec, err = b.r.GroupSnapshotRecord(ctx, vgs); err != nil {
		return nil, err
	}
	if d.rec.Phase != driver.PhaseReady {
		return nil, fmt.Errorf("VolumeGroupSnapshot %s is readyToUse but its record is %s", name, d.rec.Phase)
	}
	if d.file, err = b.r.SnapshotFilePath(ctx, d.rec); err != nil {
		return nil, err
	}
	d.phases = b.waitPhases(ctx, vgs, d.rec, begin, ready)
	return d, nil
}

// waitPhases gives the informers a moment to show every step the wait has already passed.
func (b *bench) waitPhases(ctx context.Context, vgs *groupsnapshotv1.VolumeGroupSnapshot, rec *driver.Record, begin, ready time.Time) []phase {
	deadline := time.Now().Add(observerGrace)
	for {
		ps := b.obs.phases(vgs, rec, begin, ready)
		complete := true
		for _, p := range ps {
			complete = complete && !p.at.IsZero()
		}
		if complete || time.Now().After(deadline) || ctx.Err() != nil {
			return ps
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// createCalls is the driver's count of CreateVolumeGroupSnapshot calls so far, from its /metrics.
func (b *bench) createCalls(ctx context.Context) float64 {
	families, err := rig.ScrapeMetrics(ctx, "http://"+b.r.DriverHTTPAddress+"/metrics")
	if err != nil {
		return 0
	}
	n, _ := rig.MetricValue(families, "etcd_snapshot_driver_rpc_total", map[string]string{"method": "CreateVolumeGroupSnapshot"})
	return n
}

// throttled counts client-go's throttling lines in the driver's and the sidecar's logs.
func (b *bench) throttled() [2]int {
	var out [2]int
	for i, name := range []string{"etcd-snapshot-driver.log", "csi-snapshotter.log"} {
		data, err := os.ReadFile(filepath.Join(b.r.Logs(), name))
		if err == nil {
			out[i] = strings.Count(string(data), throttleMessage)
		}
	}
	return out
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }

func mbps(bytes int64, d time.Duration) string {
	return fmt.Sprintf("%.0f", float64(bytes)/1e6/d.Seconds())
}

// print writes the pair table, the phases, verify against status, and the RESULT line.
func (b *bench) print(w io.Writer, throttled0, throttled [2]int) {
	fmt.Fprintf(w, "\ndata %d bytes in %d objects; database %d bytes (leader's dbSize); %d pairs on the leader\n\n", b.o.size, b.objects, b.dbSize, len(b.pairs))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "PAIR\tFIRST\tMEMBER\tRAW S\t(SAVE\t+STATUS)\tDRIVER S\tRATIO\tOVERHEAD S\tRAW MB/S\tDRIVER MB/S\tCREATE CALLS\t")
	var ratios, overheads, vs []float64
	for _, p := range b.pairs {
		first := "driver"
		if p.rawFirst {
			first = "raw"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%.2f\t%s\t%s\t%s\t%.2f\t%.2f\t%s\t%s\t%.0f\t\n", p.n, first, p.member, p.rawSeconds(),
			secs(p.raw.save.took), secs(p.raw.status.took), secs(p.drv.took), p.ratio(), p.overhead(),
			mbps(p.raw.size, p.raw.save.took+p.raw.status.took), mbps(p.drv.rec.SizeBytes, p.drv.took), p.drv.createCalls)
		ratios = append(ratios, p.ratio())
		overheads = append(overheads, p.overhead())
		vs = append(vs, p.verify.took.Seconds()/p.status.took.Seconds())
	}
	tw.Flush()

	fmt.Fprintln(w, "\nphases of the driver's path, seconds since the previous step (observed by informers, ms; Create called and record Ready from the record)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "PAIR\t")
	for _, n := range phaseNames[1:] {
		fmt.Fprintf(tw, "%s\t", n)
	}
	fmt.Fprintln(tw, "total\t")
	steps := make([][]float64, len(phaseNames))
	for _, p := range b.pairs {
		fmt.Fprintf(tw, "%d\t", p.n)
		prev := p.drv.phases[0].at
		for i, ph := range p.drv.phases[1:] {
			if ph.at.IsZero() {
				fmt.Fprint(tw, "-\t")
				continue
			}
			d := ph.at.Sub(prev).Seconds()
			steps[i] = append(steps[i], d)
			fmt.Fprintf(tw, "%.3f\t", d)
			prev = ph.at
		}
		fmt.Fprintf(tw, "%s\t\n", secs(p.drv.took))
	}
	fmt.Fprint(tw, "median\t")
	for i := range phaseNames[1:] {
		fmt.Fprintf(tw, "%.3f\t", median(steps[i]))
	}
	var tooks []float64
	for _, p := range b.pairs {
		tooks = append(tooks, p.drv.took.Seconds())
	}
	fmt.Fprintf(tw, "%.2f\t\n", median(tooks))
	tw.Flush()

	fmt.Fprintln(w, "\nverify (the Job's check, run by the bench on the driver's file) vs etcdutl snapshot status on the same file")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "PAIR\tFILE BYTES\tVERIFY S\tSTATUS S\tRATIO\tVERIFY RSS/ANON MIB\tSTATUS RSS/ANON MIB\tJOB VERIFY RSS/ANON MIB\t")
	for _, p := range b.pairs {
		job := "-"
		if p.drv.verifyRSS > 0 {
			job = fmt.Sprintf("%.0f/%.0f", float64(p.drv.verifyRSS)/(1<<20), float64(p.drv.verifyAnon)/(1<<20))
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%.2f\t%.0f/%.0f\t%.0f/%.0f\t%s\t\n", p.n, p.drv.rec.SizeBytes, secs(p.verify.took), secs(p.status.took),
			p.verify.took.Seconds()/p.status.took.Seconds(), float64(p.verify.maxRSS)/(1<<20), float64(p.verify.maxAnon)/(1<<20),
			float64(p.status.maxRSS)/(1<<20), float64(p.status.maxAnon)/(1<<20), job)
	}
	tw.Flush()
	fmt.Fprintln(w, "(RSS is the VmHWM peak and counts the pages of the mmapped snapshot file; ANON is the highest RssAnon sampled, the memory a limit must really cover)")
	fmt.Fprintf(w, "\nclient-side throttling lines during the pairs: driver %d, csi-snapshotter %d\n", throttled[0]-throttled0[0], throttled[1]-throttled0[1])
	if pid := b.r.DriverPID(); pid > 0 {
		fmt.Fprintf(w, "driver peak RSS (VmHWM) %.0f MiB with %d snapshot records\n", float64(rig.ProcessPeakRSS(pid))/(1<<20), len(b.pairs))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, snapshotResult{size: b.o.size, pairs: len(b.pairs), ratioMedian: median(ratios), overheadMedian: median(overheads), verifyVsStatus: median(vs)})
}

// cleanup deletes what the benchmark made in the rig: its VolumeGroupSnapshots (and so the driver's
// Jobs, PVCs and records) and the raw files.
func (b *bench) cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if b.stopObs != nil {
		b.stopObs()
	}
	var errs []error
	for _, name := range b.created {
		if err := b.r.DeleteGroupSnapshotIn(ctx, b.s.Namespace(), name); err != nil {
			errs = append(errs, err)
		}
	}
	for _, path := range b.scratch {
		if err := os.RemoveAll(path); err != nil {
			errs = append(errs, err)
		}
	}
	if b.cli != nil {
		b.cli.Close()
	}
	return errors.Join(errs...)
}
