package driver

import (
	"context"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestScheduleFirstRun: nothing before the first schedule time; then one VolumeGroupSnapshot named by
// the run's UTC time, labelled, selecting the cluster, no owner reference.
func TestScheduleFirstRun(t *testing.T) {
	sched := stSchedule("nightly", "30 2 * * *", stT0, func(spec map[string]any) {
		spec["timeZone"] = "Europe/Berlin"
		spec["snapshotLabels"] = map[string]any{"team": "platform"}
		spec["snapshotAnnotations"] = map[string]any{"note": "kept for audits"}
	})
	f := newSTFixture(t, stT0, []*unstructured.Unstructured{sched}, stClassObj(stClass, dgtDriver))

	// 02:30 in Berlin (CET) on 2026-03-11 is 01:30 UTC.
	firstRun := time.Date(2026, 3, 11, 1, 30, 0, 0, time.UTC)
	after := f.mustSyncAt(t, "nightly", stT0)
	if names := f.vgsNames(t); len(names) != 0 {
		t.Fatalf("snapshots before the first run: %v", names)
	}
	if n := testutil.CollectAndCount(scheduleRuns); n != 2 {
		t.Errorf("%d schedule_runs_total series before any run, want success and failure at 0", n)
	}
	if want := firstRun.Sub(stT0); after != want {
		t.Errorf("requeue after %s, want %s (the first run)", after, want)
	}
	st := f.status(t, "nightly")
	if st.NextScheduleTime == nil || !st.NextScheduleTime.Equal(&metav1.Time{Time: firstRun}) || condition(st, condReady).Status != metav1.ConditionTrue {
		t.Errorf("status before the first run: next %v, Ready %+v", st.NextScheduleTime, condition(st, condReady))
	}

	f.mustSyncAt(t, "nightly", firstRun.Add(3*time.Second))
	names := f.vgsNames(t)
	if !reflect.DeepEqual(names, []string{"nightly-20260311013000"}) {
		t.Fatalf("snapshots after the first run: %v", names)
	}
	v := f.vgs(t, names[0])
	if v.Labels[labelSchedule] != "nightly" || v.Labels["team"] != "platform" || v.Annotations["note"] != "kept for audits" ||
		v.Annotations[annotationScheduledTime] != "2026-03-11T01:30:00Z" || len(v.OwnerReferences) != 0 {
		t.Errorf("run metadata: labels %v annotations %v owners %v", v.Labels, v.Annotations, v.OwnerReferences)
	}
	if v.Spec.VolumeGroupSnapshotClassName == nil || *v.Spec.VolumeGroupSnapshotClassName != stClass ||
		!reflect.DeepEqual(v.Spec.Source.Selector.MatchLabels, map[string]string{"etcd.io/cluster": "main"}) {
		t.Errorf("run spec %+v", v.Spec)
	}
	st = f.status(t, "nightly")
	if st.LastScheduleTime == nil || !st.LastScheduleTime.Time.Equal(firstRun) || st.LastSnapshot == nil || st.LastSnapshot.Name != names[0] {
		t.Errorf("status after the first run: %+v", st)
	}

	f.finish(t, names[0], firstRun.Add(20*time.Second), "")
	f.mustSyncAt(t, "nightly", firstRun.Add(25*time.Second))
	f.mustSyncAt(t, "nightly", firstRun.Add(30*time.Second)) // a resync reports nothing twice
	st = f.status(t, "nightly")
	if ls := st.LastSnapshot; ls == nil || !ls.ReadyToUse || ls.Revision != 4242 || ls.Size != 1<<20 || st.ReadySnapshots != 1 ||
		st.LastSuccessfulTime == nil || !st.LastSuccessfulTime.Time.Equal(firstRun.Add(20*time.Second)) {
		t.Errorf("status after the run is ready: %+v %+v", st, st.LastSnapshot)
	}
	if got := reasons(f.events(t, f.ctrl)); !reflect.DeepEqual(got, []string{evSnapshotCreated, evSnapshotReady}) {
		t.Errorf("events %v", got)
	}
	if got := testutil.ToFloat64(scheduleLastSuccess.WithLabelValues(stNS, "nightly")); got != float64(firstRun.Add(20*time.Second).Unix()) {
		t.Errorf("last success metric %v", got)
	}
	if got := testutil.ToFloat64(scheduleRuns.WithLabelValues(stNS, "nightly", "success")); got != 1 {
		t.Errorf("successful runs %v, want 1", got)
	}
}

// TestScheduleForbid: no run starts while the previous one is neither ready nor failed; the due run
// starts once it finishes, and the runs skipped meanwhile count as missed, once.
func TestScheduleForbid(t *testing.T) {
	for _, outcome := range []string{"", "rpc error: code = Internal desc = etcdctl snapshot save: context deadline exceeded"} {
		name := map[bool]string{true: "ready", false: "failed"}[outcome == ""]
		t.Run("previous "+name, func(t *testing.T) {
			f := newSTFixture(t, stT0, []*unstructured.Unstructured{stSchedule("s", "@every 10s", stT0)}, stClassObj(stClass, dgtDriver))
			f.mustSyncAt(t, "s", stT0.Add(10*time.Second))
			first := "s-20260310100010"
			f.mustSyncAt(t, "s", stT0.Add(21*time.Second))
			f.mustSyncAt(t, "s", stT0.Add(32*time.Second))
			if names := f.vgsNames(t); !reflect.DeepEqual(names, []string{first}) {
				t.Fatalf("runs while the first is in flight: %v", names)
			}
			f.finish(t, first, stT0.Add(33*time.Second), outcome)
			f.mustSyncAt(t, "s", stT0.Add(34*time.Second))
			if names := f.vgsNames(t); !reflect.DeepEqual(names, []string{first, "s-20260310100030"}) {
				t.Fatalf("runs after the first finished: %v", names)
			}
			f.mustSyncAt(t, "s", stT0.Add(35*time.Second))
			// The run at :20 never started.
			if got := testutil.ToFloat64(scheduleMissedRuns.WithLabelValues(stNS, "s")); got != 1 {
				t.Errorf("missed runs %v, want 1", got)
			}
			want := []string{evRunMissed, evSnapshotCreated, evSnapshotCreated, evSnapshotReady}
			if outcome != "" {
				want = []string{evRunMissed, evSnapshotCreated, evSnapshotCreated, evSnapshotFailed}
			}
			sort.Strings(want)
			events := f.events(t, f.ctrl)
			if got := reasons(events); !reflect.DeepEqual(got, want) {
				t.Errorf("events %v, want %v", events, want)
			}
			if outcome != "" && !strings.Contains(strings.Join(events, "\n"), "context deadline exceeded") {
				t.Errorf("SnapshotFailed does not carry status.error: %v", events)
			}
		})
	}
}

// TestScheduleSuspend: a suspended schedule starts nothing and has no next run; resumed, it starts the
// due run (runs during the suspension count as missed, as a CronJob's).
func TestScheduleSuspend(t *testing.T) {
	sched := stSchedule("p", "@every 10s", stT0, func(spec map[string]any) { spec["suspend"] = true })
	f := newSTFixture(t, stT0, []*unstructured.Unstructured{sched}, stClassObj(stClass, dgtDriver))
	if after := f.mustSyncAt(t, "p", stT0.Add(45*time.Second)); after != 0 {
		t.Errorf("a suspended schedule, stale already, asked to be woken after %s", after)
	}
	st := f.status(t, "p")
	if names := f.vgsNames(t); len(names) != 0 || st.NextScheduleTime != nil || condition(st, condReady).Reason != reasonSuspended {
		t.Fatalf("suspended: runs %v, status %+v", names, st)
	}
	if _, ok := scheduleNextRunValue(stNS, "p"); ok {
		t.Error("next-run metric exported for a suspended schedule")
	}

	u, err := f.dyn.Resource(ScheduleGVR).Namespace(stNS).Get(context.Background(), "p", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = unstructured.SetNestedField(u.Object, false, "spec", "suspend")
	if _, err := f.dyn.Resource(ScheduleGVR).Namespace(stNS).Update(context.Background(), u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.mustSyncAt(t, "p", stT0.Add(46*time.Second))
	if names := f.vgsNames(t); !reflect.DeepEqual(names, []string{"p-20260310100040"}) {
		t.Fatalf("runs after resuming: %v", names)
	}
	if v, ok := scheduleNextRunValue(stNS, "p"); !ok || v != float64(stT0.Add(50*time.Second).Unix()) {
		t.Errorf("next-run metric %v %v", v, ok)
	}
}

// TestScheduleTwoControllers: two replicas syncing the same run at the same moment create one
// VolumeGroupSnapshot between them.
func TestScheduleTwoControllers(t *testing.T) {
	f := newSTFixture(t, stT0, []*unstructured.Unstructured{stSchedule("r", "@every 10s", stT0)}, stClassObj(stClass, dgtDriver))
	other := f.newController(t)
	at := stT0.Add(11 * time.Second)
	f.clock.SetTime(at)
	f.waitCaches(t, f.ctrl, "r")
	f.waitCaches(t, other, "r")
	errs := make(chan error, 2)
	for _, c := range []*ScheduleController{f.ctrl, other} {
		go func() {
			_, err := c.sync(context.Background(), stNS+"/r")
			errs <- err
		}()
	}
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil && !strings.Contains(err.Error(), "writing status") {
			t.Errorf("sync: %v", err) // a status conflict is retried by the queue
		}
	}
	// Whichever lost the status race syncs again, as its queue would make it.
	for _, c := range []*ScheduleController{f.ctrl, other} {
		if _, err := f.syncAt(t, c, "r", at); err != nil {
			t.Errorf("second sync: %v", err)
		}
	}
	if names := f.vgsNames(t); !reflect.DeepEqual(names, []string{"r-20260310100010"}) {
		t.Errorf("runs %v, want exactly one", names)
	}
	created := 0
	f.events(t, other) // flushes the other recorder; both write to the one fake API
	for _, e := range f.events(t, f.ctrl) {
		if strings.HasPrefix(e, evSnapshotCreated) {
			created++
		}
	}
	if created != 1 {
		t.Errorf("%d SnapshotCreated events, want 1", created)
	}
}
