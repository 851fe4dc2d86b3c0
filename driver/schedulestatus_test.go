package driver

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

// TestScheduleClassProblems: a missing class, or one of another driver, is a Ready=False condition a
// person can act on, and no snapshot is created; creating the class lets the due run start.
func TestScheduleClassProblems(t *testing.T) {
	cases := []struct {
		name       string
		class      runtime.Object
		wantReason string
	}{
		{name: "class does not exist", wantReason: reasonClassNotFound},
		{name: "class of another driver", class: stClassObj(stClass, "hostpath.csi.k8s.io"), wantReason: reasonClassNotOurs},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var objs []runtime.Object
			if tc.class != nil {
				objs = append(objs, tc.class)
			}
			f := newSTFixture(t, stT0, []*unstructured.Unstructured{stSchedule("c", "@every 1m", stT0)}, objs...)
			f.mustSyncAt(t, "c", stT0.Add(61*time.Second))
			st := f.status(t, "c")
			ready := condition(st, condReady)
			if names := f.vgsNames(t); len(names) != 0 {
				t.Fatalf("snapshots created: %v", names)
			}
			if ready.Status != metav1.ConditionFalse || ready.Reason != tc.wantReason || !strings.Contains(ready.Message, stClass) {
				t.Errorf("Ready %+v, want False %s naming the class", ready, tc.wantReason)
			}
			// Two intervals later without a snapshot, the backup is stale and says why.
			f.mustSyncAt(t, "c", stT0.Add(121*time.Second))
			stale := condition(f.status(t, "c"), condBackupStale)
			if stale.Status != metav1.ConditionTrue || stale.Reason != reasonNeverSucceeded || !strings.Contains(stale.Message, tc.wantReason) {
				t.Errorf("BackupStale %+v", stale)
			}
			ctx := context.Background()
			if tc.class != nil {
				if err := f.snap.GroupsnapshotV1().VolumeGroupSnapshotClasses().Delete(ctx, stClass, metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
				f.waitCaches(t, f.ctrl, "c")
			}
			if _, err := f.snap.GroupsnapshotV1().VolumeGroupSnapshotClasses().Create(ctx, stClassObj(stClass, dgtDriver), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			f.mustSyncAt(t, "c", stT0.Add(122*time.Second))
			if names := f.vgsNames(t); !reflect.DeepEqual(names, []string{"c-20260310100200"}) {
				t.Errorf("runs once the class is right: %v", names)
			}
		})
	}
}

// TestScheduleStaleWhenFailing: runs that keep failing turn BackupStale True two intervals after the
// last success, without moving the last-success metric; a success clears it.
func TestScheduleStaleWhenFailing(t *testing.T) {
	f := newSTFixture(t, stT0, []*unstructured.Unstructured{stSchedule("f", "@every 1m", stT0)}, stClassObj(stClass, dgtDriver))
	f.mustSyncAt(t, "f", stT0.Add(time.Minute))
	okAt := stT0.Add(time.Minute + 5*time.Second)
	f.finish(t, runName("f", stT0.Add(time.Minute)), okAt, "")
	after := f.mustSyncAt(t, "f", stT0.Add(time.Minute+6*time.Second))
	if after != 54*time.Second {
		t.Errorf("requeue after %s, want 54s (the next run)", after)
	}
	for i := 2; i <= 4; i++ {
		at := stT0.Add(time.Duration(i) * time.Minute)
		f.mustSyncAt(t, "f", at)
		f.finish(t, runName("f", at), at.Add(2*time.Second), "rpc error: code = FailedPrecondition desc = no quorum: 1 of 3 voting members healthy")
		f.mustSyncAt(t, "f", at.Add(3*time.Second))
		stale := condition(f.status(t, "f"), condBackupStale)
		wantStale := at.Add(3 * time.Second).After(okAt.Add(2 * time.Minute))
		if (stale.Status == metav1.ConditionTrue) != wantStale {
			t.Errorf("at %s: BackupStale %s (%s), want stale=%v", at.Format(time.TimeOnly), stale.Status, stale.Message, wantStale)
		}
		if wantStale && (stale.Reason != reasonNoRecentSuccess || !strings.Contains(stale.Message, "no quorum")) {
			t.Errorf("BackupStale %+v does not say why", stale)
		}
	}
	if got := testutil.ToFloat64(scheduleLastSuccess.WithLabelValues(stNS, "f")); got != float64(okAt.Unix()) {
		t.Errorf("last success metric moved: %v", got)
	}
	if got := testutil.ToFloat64(scheduleRuns.WithLabelValues(stNS, "f", "failure")); got != 3 {
		t.Errorf("failed runs %v, want 3", got)
	}
	at := stT0.Add(5 * time.Minute)
	f.mustSyncAt(t, "f", at)
	f.finish(t, runName("f", at), at.Add(2*time.Second), "")
	f.mustSyncAt(t, "f", at.Add(3*time.Second))
	if stale := condition(f.status(t, "f"), condBackupStale); stale.Status != metav1.ConditionFalse {
		t.Errorf("BackupStale after a success: %+v", stale)
	}
}

// TestScheduleReportsOnceWhenStatusWriteFails: a pass whose status write fails (a conflict, as when the
// cache is behind) is repeated; its events and counters must not be reported twice.
func TestScheduleReportsOnceWhenStatusWriteFails(t *testing.T) {
	f := newSTFixture(t, stT0, []*unstructured.Unstructured{stSchedule("w", "0 * * * *", stT0)}, stClassObj(stClass, dgtDriver))
	f.mustSyncAt(t, "w", stT0.Add(time.Hour))
	f.finish(t, "w-20260310110000", stT0.Add(time.Hour+time.Minute), "")
	conflicts := 1
	f.dyn.PrependReactor("update", scheduleResource, func(action k8stesting.Action) (bool, runtime.Object, error) {
		if action.GetSubresource() != "status" || conflicts == 0 {
			return false, nil, nil
		}
		conflicts--
		return true, nil, apierrors.NewConflict(ScheduleGVR.GroupResource(), "w", errors.New("the object has been modified"))
	})
	// The driver was down three hours: the 12:00 and 13:00 runs are missed, 14:00 is due.
	at := stT0.Add(4*time.Hour + time.Minute)
	if _, err := f.syncAt(t, f.ctrl, "w", at); err == nil || !apierrors.IsConflict(errors.Unwrap(errors.Unwrap(err))) && !strings.Contains(err.Error(), "modified") {
		t.Fatalf("first sync: %v, want the conflict", err)
	}
	f.mustSyncAt(t, "w", at)
	f.mustSyncAt(t, "w", at.Add(time.Second))
	if got := testutil.ToFloat64(scheduleRuns.WithLabelValues(stNS, "w", "success")); got != 1 {
		t.Errorf("successful runs %v, want 1", got)
	}
	if got := testutil.ToFloat64(scheduleMissedRuns.WithLabelValues(stNS, "w")); got != 2 {
		t.Errorf("missed runs %v, want 2", got)
	}
	want := []string{evRunMissed, evSnapshotCreated, evSnapshotCreated, evSnapshotReady}
	if got := reasons(f.events(t, f.ctrl)); !reflect.DeepEqual(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
}

// TestScheduleInvalidSpec: a schedule or time zone the driver cannot use is a Ready=False condition
// naming the field; nothing runs and no next run is exported.
func TestScheduleInvalidSpec(t *testing.T) {
	cases := []struct {
		name, schedule, tz, want string
	}{
		{name: "not cron", schedule: "every day at two", want: "spec.schedule"},
		{name: "unknown time zone", schedule: "0 2 * * *", tz: "Europe/Atlantis", want: "spec.timeZone"},
		{name: "never fires", schedule: "0 0 30 2 *", want: "never fires"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newSTFixture(t, stT0, []*unstructured.Unstructured{stSchedule("i", tc.schedule, stT0, func(spec map[string]any) {
				if tc.tz != "" {
					spec["timeZone"] = tc.tz
				}
			})}, stClassObj(stClass, dgtDriver))
			if after := f.mustSyncAt(t, "i", stT0.Add(48*time.Hour)); after != 0 {
				t.Errorf("an invalid schedule asked to be woken after %s", after)
			}
			st := f.status(t, "i")
			ready, stale := condition(st, condReady), condition(st, condBackupStale)
			if ready.Status != metav1.ConditionFalse || ready.Reason != reasonInvalidSchedule || !strings.Contains(ready.Message, tc.want) {
				t.Errorf("Ready %+v, want False %s mentioning %q", ready, reasonInvalidSchedule, tc.want)
			}
			if stale.Status != metav1.ConditionUnknown || st.NextScheduleTime != nil {
				t.Errorf("BackupStale %+v, next %v", stale, st.NextScheduleTime)
			}
			if names := f.vgsNames(t); len(names) != 0 {
				t.Errorf("runs of an invalid schedule: %v", names)
			}
			if _, ok := scheduleNextRunValue(stNS, "i"); ok {
				t.Error("next-run metric exported for an invalid schedule")
			}
		})
	}
}

// TestScheduleSelectorSource: spec.source.selector is copied onto each run as its selector.
func TestScheduleSelectorSource(t *testing.T) {
	f := newSTFixture(t, stT0, []*unstructured.Unstructured{stSchedule("sel", "@every 10s", stT0, func(spec map[string]any) {
		spec["source"] = map[string]any{"selector": map[string]any{
			"matchLabels":      map[string]any{"app": "etcd"},
			"matchExpressions": []any{map[string]any{"key": "etcd.io/cluster", "operator": "In", "values": []any{"main"}}},
		}}
	})}, stClassObj(stClass, dgtDriver))
	f.mustSyncAt(t, "sel", stT0.Add(10*time.Second))
	v := f.vgs(t, "sel-20260310100010")
	sel := v.Spec.Source.Selector
	if sel == nil || !reflect.DeepEqual(sel.MatchLabels, map[string]string{"app": "etcd"}) || len(sel.MatchExpressions) != 1 ||
		sel.MatchExpressions[0].Key != "etcd.io/cluster" || !reflect.DeepEqual(sel.MatchExpressions[0].Values, []string{"main"}) {
		t.Errorf("run selector %+v", sel)
	}
}

// TestScheduleUnboundErrorGrace: an error on a run not bound yet (the snapshot-controller's transient
// driver-mismatch warning) holds the next run back for unboundErrorGrace only; the controller wakes up
// when it runs out, counts the run as failed and starts the due one.
func TestScheduleUnboundErrorGrace(t *testing.T) {
	f := newSTFixture(t, stT0, []*unstructured.Unstructured{stSchedule("u", "@every 1m", stT0)}, stClassObj(stClass, dgtDriver))
	runAt := stT0.Add(time.Minute)
	f.mustSyncAt(t, "u", runAt)
	v := f.vgs(t, "u-20260310100100")
	msg := "Volume CSI driver (hostpath.csi.k8s.io) mismatch with VolumeGroupSnapshotClass (etcd-snapshot.csi.io)"
	v.CreationTimestamp = metav1.NewTime(runAt)
	v.Status = &groupsnapshotv1.VolumeGroupSnapshotStatus{Error: &snapshotv1.VolumeSnapshotError{Message: &msg}}
	if _, err := f.snap.GroupsnapshotV1().VolumeGroupSnapshots(stNS).Update(context.Background(), v, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// At 10:02:10 the 10:02 run is due but held back; the grace ends at 10:03:00.
	after := f.mustSyncAt(t, "u", runAt.Add(70*time.Second))
	if names := f.vgsNames(t); len(names) != 1 {
		t.Fatalf("a run started while the previous one may still bind: %v", names)
	}
	if want := 50 * time.Second; after != want {
		t.Errorf("requeue after %s, want %s (the end of the grace)", after, want)
	}
	f.mustSyncAt(t, "u", runAt.Add(70*time.Second+after))
	if names := f.vgsNames(t); !reflect.DeepEqual(names, []string{"u-20260310100100", "u-20260310100300"}) {
		t.Errorf("runs after the grace: %v", names)
	}
	if ls := f.status(t, "u").LastSnapshot; ls == nil || ls.Name != "u-20260310100300" {
		t.Errorf("lastSnapshot %+v", ls)
	}
	if got := testutil.ToFloat64(scheduleRuns.WithLabelValues(stNS, "u", "failure")); got != 1 {
		t.Errorf("failed runs %v, want 1", got)
	}
}
