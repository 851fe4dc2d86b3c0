package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// pollInterval is how often the leak check lists the driver's objects (rig.WaitNoLeaks).
const pollInterval = 250 * time.Millisecond

// cleanupTimeout bounds the deletion of an interrupted cycle's snapshot.
const cleanupTimeout = 2 * time.Minute

// sample is one reading of the driver processes.
type sample struct {
	cycle int
	rss   uint64 // bytes, summed over the driver replicas
	anon  uint64 // the anonymous part of rss
	fds   int    // summed over the driver replicas
	line  string
}

type soak struct {
	r       *rig.Rig
	o       options
	samples []sample
	failed  int
	begin   time.Time
}

func (s *soak) run(ctx context.Context) error {
	r := s.r
	if err := r.InstallExampleClasses(ctx); err != nil {
		return err
	}
	before, err := r.DriverObjects(ctx)
	if err != nil {
		return err
	}
	if len(before) > 0 {
		say("objects of the driver before the first cycle (not counted as leaks): %s", before)
	}
	s.begin = time.Now()
	if err := s.sample(0); err != nil {
		return err
	}
	for i := 1; i <= s.o.cycles; i++ {
		if err := s.cycle(ctx, i, before); err != nil {
			if ctx.Err() != nil {
				return err
			}
			s.failed++
			say("cycle %d FAILED: %v", i, err)
		}
		// A driver that exited (the rig does not restart it) would fail every cycle from here, and a
		// restarted one would hide what the old one held.
		if !r.DriverRunning() {
			return fmt.Errorf("the driver exited during cycle %d; see %s/etcd-snapshot-driver.log", i, r.Logs())
		}
		if i%s.o.every == 0 || i == s.o.cycles {
			if err := s.sample(i); err != nil {
				return err
			}
		}
	}
	took := time.Since(s.begin)

	// A failed cycle may leave what only the sweeper collects: give it its grace period and a margin.
	wctx, cancel := context.WithTimeout(ctx, s.o.sweepGrace+2*time.Minute)
	defer cancel()
	left, err := r.WaitNoLeaks(wctx, before, pollInterval)
	if err != nil {
		return err
	}
	fmt.Printf("leaked objects after %d cycles: %d", s.o.cycles, len(left))
	if len(left) > 0 {
		fmt.Printf(": %s", left)
	}
	fmt.Println()
	first, last := s.samples[0], s.samples[len(s.samples)-1]
	fmt.Printf("RESULT cycles=%d failed=%d leaked=%d duration_s=%.0f rss_first_mib=%.1f rss_last_mib=%.1f anon_first_mib=%.1f anon_last_mib=%.1f fds_first=%d fds_last=%d\n",
		s.o.cycles, s.failed, len(left), took.Seconds(), mib(first.rss), mib(last.rss), mib(first.anon), mib(last.anon), first.fds, last.fds)
	switch {
	case s.failed > 0 && len(left) > 0:
		return fmt.Errorf("%d of %d cycles failed and %d objects leaked", s.failed, s.o.cycles, len(left))
	case s.failed > 0:
		return fmt.Errorf("%d of %d cycles failed", s.failed, s.o.cycles)
	case len(left) > 0:
		return fmt.Errorf("%d objects leaked: %s", len(left), left)
	}
	return nil
}

// cycle creates a VolumeGroupSnapshot, waits until it is ready, deletes it and waits until no object
// of the driver that was not there before remains.
func (s *soak) cycle(ctx context.Context, i int, before rig.DriverObjects) (err error) {
	r := s.r
	name := fmt.Sprintf("soak-%d", i)
	if _, err := r.CreateGroupSnapshot(ctx, name); err != nil {
		return err
	}
	deleted := false
	defer func() {
		// Interrupted (or out of time), the whole rig goes, this snapshot with it.
		if deleted || ctx.Err() != nil {
			return
		}
		// Failed: the snapshot goes, so that the leak count at the end counts what the driver left.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if derr := r.DeleteGroupSnapshot(dctx, name); derr != nil {
			err = fmt.Errorf("%w (and deleting it: %v)", err, derr)
		}
	}()
	wctx, cancel := context.WithTimeout(ctx, s.o.wait)
	defer cancel()
	if _, err := r.WaitGroupSnapshotReady(wctx, name); err != nil {
		return err
	}
	deleted = true
	if err := r.DeleteGroupSnapshot(wctx, name); err != nil {
		return err
	}
	left, err := r.WaitNoLeaks(wctx, before, pollInterval)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("VolumeGroupSnapshot %s deleted, but after %s these remain: %s", name, s.o.wait, left)
	}
	return nil
}

// sample reads the resident memory and open file descriptors of every running driver replica.
func (s *soak) sample(cycle int) error {
	var parts []string
	smp := sample{cycle: cycle}
	for i, pid := range s.r.DriverPIDs() {
		if pid == 0 {
			parts = append(parts, fmt.Sprintf("replica %d not running", i))
			continue
		}
		fds, err := rig.OpenFDs(pid)
		if err != nil {
			return fmt.Errorf("driver replica %d (pid %d): %w", i, pid, err)
		}
		rss, anon := rig.ProcessRSS(pid), rig.ProcessRSSAnon(pid)
		smp.rss += rss
		smp.anon += anon
		smp.fds += fds
		parts = append(parts, fmt.Sprintf("pid %d rss %.1f MiB (anon %.1f MiB) fds %d", pid, mib(rss), mib(anon), fds))
	}
	// The Go heap and goroutines of the first replica tell a leak from the runtime keeping freed memory.
	if heap, goroutines, err := driverGauges(s.r.DriverHTTPAddress); err == nil {
		parts = append(parts, fmt.Sprintf("(heap in use %.1f MiB, %d goroutines)", mib(uint64(heap)), int(goroutines)))
	}
	smp.line = strings.Join(parts, "; ")
	s.samples = append(s.samples, smp)
	fmt.Printf("cycle %d/%d after %s: driver %s\n", cycle, s.o.cycles, time.Since(s.begin).Round(time.Second), smp.line)
	return nil
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// driverGauges reads go_memstats_heap_inuse_bytes and go_goroutines from the driver's /metrics.
func driverGauges(addr string) (heap, goroutines float64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	families, err := rig.ScrapeMetrics(ctx, "http://"+addr+"/metrics")
	if err != nil {
		return 0, 0, err
	}
	heap, okHeap := rig.MetricValue(families, "go_memstats_heap_inuse_bytes", nil)
	goroutines, okGoroutines := rig.MetricValue(families, "go_goroutines", nil)
	if !okHeap || !okGoroutines {
		return 0, 0, fmt.Errorf("/metrics lacks go_memstats_heap_inuse_bytes or go_goroutines")
	}
	return heap, goroutines, nil
}
