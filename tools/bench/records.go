package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// The records mode measures the metadata store against the rig's real kube-apiserver as the record
// count grows: Get (from the informer cache) and Put (an update written with its resourceVersion),
// through driver.RecordStore, the driver's own code, and the RSS of the rig's driver process, whose
// informer caches every record too.
const (
	// recordGets and recordPuts are the samples per count; a Put is a round trip to the API server,
	// a Get is not.
	recordGets = 2000
	recordPuts = 100
	// recordWriters create the records in parallel, as many schedules would.
	recordWriters = 8
	// recordSettle lets the driver's informer take in the last records before its RSS is read.
	recordSettle = 3 * time.Second
)

// parseCounts reads -records: ascending record counts separated by commas.
func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-records %q: %q is not a positive count", s, f)
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			return nil, fmt.Errorf("-records %q: counts must ascend (%d after %d)", s, n, out[len(out)-1])
		}
		out = append(out, n)
	}
	return out, nil
}

// recordRow is what one record count measured.
type recordRow struct {
	count             int
	getMedian, getP99 time.Duration
	putMedian, putP99 time.Duration
	driverRSS         int64 // bytes, VmRSS of the driver process; 0 when there is none to read
}

// benchRecord is a Ready group snapshot record shaped like one of a three-member cluster, so the
// cache holds objects of the real size.
func benchRecord(i int, now time.Time) *driver.Record {
	hash := func(s string) string { sum := sha256.Sum256([]byte(s)); return hex.EncodeToString(sum[:]) }
	id := "etcdgs-" + hash(fmt.Sprintf("bench-record-%d", i))[:32]
	rec := &driver.Record{
		ID: id, Name: fmt.Sprintf("groupsnapshot-bench-%08d", i), Group: true, Phase: driver.PhaseReady,
		Namespace: "etcd-bench", Cluster: "main", ParamsHash: hash("params"),
		StorageClass: "standard", PVCSize: "20Mi",
		Revision: int64(1000 + i), CompactRevision: int64(i), Keys: 5325, TotalKeys: 5400, Hash: uint32(i), HashChecked: true,
		SizeBytes: 14376992, SHA256: hash(id), CreatedAt: now, ReadyAt: &now,
	}
	for m := range 3 {
		memberID := hash(fmt.Sprintf("member-%d", m))[:16]
		name := fmt.Sprintf("main-%d", m)
		url := fmt.Sprintf("https://%s.main.etcd-bench.svc:2379", name)
		volume := "pvc-" + hash(fmt.Sprintf("%d-%d", i, m))[:32]
		rec.Sources = append(rec.Sources, driver.SourceRecord{VolumeID: volume, PVC: "data-" + name, SnapshotID: id + "-" + hash(volume)[:8]})
		rec.Members = append(rec.Members, driver.MemberRecord{ID: memberID, Name: name,
			PeerURLs: []string{fmt.Sprintf("https://%s.main.etcd-bench.svc:2380", name)}, ClientURLs: []string{url}})
		if m == 0 {
			rec.SourceMember = &driver.SourceMember{ID: memberID, Name: name, Endpoint: url, Leader: true,
				Revision: rec.Revision, RaftIndex: uint64(2000 + i), RaftTerm: 2, DBSize: rec.SizeBytes, Version: "3.6.5"}
		}
	}
	return rec
}

// recordBench grows the store's records through counts and measures at each.
type recordBench struct {
	store  *driver.RecordStore
	rss    func() int64 // the driver's RSS in bytes, 0 if unknown
	ids    []string
	rand   *rand.Rand
	say    func(format string, args ...any)
	settle time.Duration
}

// grow creates records until there are n.
func (b *recordBench) grow(ctx context.Context, n int) error {
	start := len(b.ids)
	ids := make([]string, n-start)
	now := time.Now().UTC().Truncate(time.Second)
	next := make(chan int)
	errs := make(chan error, recordWriters)
	var wg sync.WaitGroup
	for range recordWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				rec := benchRecord(i, now)
				_, created, err := b.store.Create(ctx, rec)
				if err == nil && !created {
					err = errors.New("a record of that id exists already")
				}
				if err != nil {
					errs <- fmt.Errorf("creating record %s: %w", rec.ID, err)
					return
				}
				ids[i-start] = rec.ID
			}
		}()
	}
	var err error
feed:
	for i := start; i < n; i++ {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	if err == nil {
		err = <-errs
	}
	if err != nil {
		return err
	}
	b.ids = append(b.ids, ids...)
	// Gets must come from the cache, as in the driver: wait until it holds every record.
	for b.store.Cached() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("the metadata cache holds %d of %d records: %w", b.store.Cached(), n, context.Cause(ctx))
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// measure times Gets of random records and Puts (updates) of distinct random records.
func (b *recordBench) measure(ctx context.Context) (recordRow, error) {
	row := recordRow{count: len(b.ids)}
	gets := make([]time.Duration, 0, recordGets)
	for range recordGets {
		id := b.ids[b.rand.IntN(len(b.ids))]
		begin := time.Now()
		rec, err := b.store.Get(ctx, id)
		d := time.Since(begin)
		if err == nil && (rec == nil || rec.ID != id) {
			err = fmt.Errorf("got %+v", rec)
		}
		if err != nil {
			return row, fmt.Errorf("Get %s: %w", id, err)
		}
		gets = append(gets, d)
	}
	puts := make([]time.Duration, 0, recordPuts)
	for _, i := range b.rand.Perm(len(b.ids))[:min(recordPuts, len(b.ids))] {
		id := b.ids[i]
		begin := time.Now()
		rec, err := b.store.Update(ctx, id, func(r *driver.Record) error {
			r.Revision++
			return nil
		})
		d := time.Since(begin)
		if err == nil && rec == nil {
			err = errors.New("the record is gone")
		}
		if err != nil {
			return row, fmt.Errorf("Put %s: %w", id, err)
		}
		puts = append(puts, d)
	}
	row.getMedian, row.getP99 = quantile(gets, 0.5), quantile(gets, 0.99)
	row.putMedian, row.putP99 = quantile(puts, 0.5), quantile(puts, 0.99)
	if b.rss != nil {
		select {
		case <-ctx.Done():
			return row, context.Cause(ctx)
		case <-time.After(b.settle):
		}
		row.driverRSS = b.rss()
	}
	return row, nil
}

// run grows the records through counts, measuring at each.
func (b *recordBench) run(ctx context.Context, counts []int) ([]recordRow, error) {
	var rows []recordRow
	for _, n := range counts {
		begin := time.Now()
		if err := b.grow(ctx, n); err != nil {
			return rows, err
		}
		b.say("%d records (created in %s)", n, time.Since(begin).Round(time.Millisecond))
		row, err := b.measure(ctx)
		if err != nil {
			return rows, fmt.Errorf("at %d records: %w", n, err)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// quantile q of ds (nearest rank); 0 for none.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// recordsResult is the verdict of the records mode, the fields of its RESULT line: the medians at
// the smallest and the largest count and their ratios (1 is flat), and the driver's RSS at 1,000
// records when that count was measured.
type recordsResult struct {
	rows []recordRow
}

func (r recordsResult) String() string {
	first, last := r.rows[0], r.rows[len(r.rows)-1]
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	s := fmt.Sprintf("RESULT records n_min=%d n_max=%d get_median_us_min=%.1f get_median_us_max=%.1f get_ratio=%.2f put_median_ms_min=%.2f put_median_ms_max=%.2f put_ratio=%.2f",
		first.count, last.count, us(first.getMedian), us(last.getMedian), us(last.getMedian)/us(first.getMedian),
		ms(first.putMedian), ms(last.putMedian), ms(last.putMedian)/ms(first.putMedian))
	for _, row := range r.rows {
		if row.count == 1000 && row.driverRSS > 0 {
			s += fmt.Sprintf(" driver_rss_mib_1000=%.1f", float64(row.driverRSS)/(1<<20))
		}
	}
	return s
}

// printRecords writes a row per count and the RESULT line.
func printRecords(w io.Writer, rssBefore int64, rows []recordRow) {
	fmt.Fprintf(w, "\nmetadata store on the rig's kube-apiserver: %d Gets (informer cache) and %d Puts (resourceVersion updates) per count\n", recordGets, recordPuts)
	if rssBefore > 0 {
		fmt.Fprintf(w, "driver RSS before any record: %.1f MiB\n", float64(rssBefore)/(1<<20))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "RECORDS\tGET MEDIAN US\tGET P99 US\tPUT MEDIAN MS\tPUT P99 MS\tDRIVER RSS MIB\t")
	for _, row := range rows {
		rss := "-"
		if row.driverRSS > 0 {
			rss = fmt.Sprintf("%.1f", float64(row.driverRSS)/(1<<20))
		}
		fmt.Fprintf(tw, "%d\t%.1f\t%.1f\t%.2f\t%.2f\t%s\t\n", row.count,
			float64(row.getMedian)/float64(time.Microsecond), float64(row.getP99)/float64(time.Microsecond),
			float64(row.putMedian)/float64(time.Millisecond), float64(row.putP99)/float64(time.Millisecond), rss)
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, recordsResult{rows: rows})
}

// runRecords is the -records mode: a rig with the driver, no etcd data, the records in the driver's
// metadata namespace. They go with the rig at the end (its API server's storage is removed).
func runRecords(ctx context.Context, o options, root string) int {
	r, err := rig.Start(ctx, rig.Options{Root: root, Progress: os.Stderr, NoSignalHandler: true,
		DriverArgs: o.driverArgs, SnapshotControllerArgs: o.scArgs, LogDir: o.logDir, EtcdMembers: 1})
	if err != nil {
		return rig.Finish(ctx, nil, root, o.logDir, fmt.Errorf("starting the rig: %w", err), say)
	}
	rss := func() int64 {
		if pid := r.DriverPID(); pid > 0 {
			return int64(rig.ProcessRSS(pid))
		}
		return 0
	}
	storeCtx, stop := context.WithCancel(ctx)
	defer stop()
	store, err := driver.NewRecordStore(storeCtx, r.Kube, rig.DriverNamespace)
	if err == nil {
		b := &recordBench{store: store, rss: rss, rand: rand.New(rand.NewPCG(1, 2)), say: say, settle: recordSettle}
		before := rss()
		var rows []recordRow
		if rows, err = b.run(ctx, o.records); err == nil {
			printRecords(os.Stdout, before, rows)
		}
	}
	stop()
	return rig.Finish(ctx, r, root, o.logDir, err, say)
}
