package driver

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"context"
	"sort"
	"strings"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
)

// rtRuns builds runs named r0, r1, ... one hour apart from states written as "RRFx" (R ready, F failed,
// x in flight), oldest first.
func rtRuns(states string, start time.Time) []scheduleRun {
	var runs []scheduleRun
	for i, c := range states {
		st := map[rune]runState{'R': runReady, 'F': runFailed, 'x': runInFlight}[c]
		runs = append(runs, scheduleRun{
			vgs:   &groupsnapshotv1.VolumeGroupSnapshot{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("r%d", i)}},
			at:    start.Add(time.Duration(i) * time.Hour),
			state: st,
		})
	}
	return runs
}

func TestPruneRuns(t *testing.T) {
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	day := &metav1.Duration{Duration: 24 * time.Hour}
	cases := []struct {
		name             string
		states           string
		keep, keepFailed int
		maxAge           *metav1.Duration
		now              time.Time
		want             []string
	}{
		{name: "under the limit", states: "RRF", keep: 2, keepFailed: 1, now: start},
		{name: "oldest ready first", states: "RRRRR", keep: 2, keepFailed: 1, now: start, want: []string{"r0", "r1", "r2"}},
		{name: "failed kept separately", states: "RFRFRF", keep: 2, keepFailed: 1, now: start, want: []string{"r0", "r1", "r3"}},
		{name: "keepFailed 0", states: "RFR", keep: 5, keepFailed: 0, now: start, want: []string{"r1"}},
		{name: "in flight never pruned", states: "xRRR", keep: 1, keepFailed: 0, now: start, want: []string{"r1", "r2"}},
		{name: "maxAge prunes old ones", states: "RRRF", keep: 7, keepFailed: 1, maxAge: day, now: start.Add(24*time.Hour + 90*time.Minute),
			want: []string{"r0", "r1"}},
		{name: "newest ready kept past maxAge", states: "RRFF", keep: 7, keepFailed: 5, maxAge: day, now: start.Add(30 * 24 * time.Hour),
			want: []string{"r0", "r2", "r3"}},
		{name: "newest ready kept when only failures follow", states: "RFFFF", keep: 1, keepFailed: 1, now: start, want: []string{"r1", "r2", "r3"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, r := range pruneRuns(rtRuns(tc.states, start), tc.keep, tc.keepFailed, tc.maxAge, tc.now) {
				got = append(got, r.vgs.Name)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("pruned %v, want %v", got, tc.want)
			}
		})
	}
}

func TestClassifyRun(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	msg := "rpc error: code = FailedPrecondition desc = etcd cluster etcd-test/main has no quorum"
	content := "groupsnapcontent-1"
	yes := true
	cases := []struct {
		name    string
		age     time.Duration
		status  *groupsnapshotv1.VolumeGroupSnapshotStatus
		want    runState
		wantErr string
	}{
		{name: "no status", want: runInFlight},
		{name: "ready", status: &groupsnapshotv1.VolumeGroupSnapshotStatus{ReadyToUse: &yes}, want: runReady},
		{name: "bound with error", status: &groupsnapshotv1.VolumeGroupSnapshotStatus{
			BoundVolumeGroupSnapshotContentName: &content, Error: &snapshotErr{Message: &msg}}, want: runFailed, wantErr: msg},
		// The snapshot-controller's driver-mismatch warning before it binds the driver's content.
		{name: "young unbound error", age: 10 * time.Second, status: &groupsnapshotv1.VolumeGroupSnapshotStatus{Error: &snapshotErr{Message: &msg}}, want: runInFlight},
		{name: "old unbound error", age: 3 * time.Minute, status: &groupsnapshotv1.VolumeGroupSnapshotStatus{Error: &snapshotErr{Message: &msg}}, want: runFailed, wantErr: msg},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vgs := &groupsnapshotv1.VolumeGroupSnapshot{
				ObjectMeta: metav1.ObjectMeta{Name: "n", CreationTimestamp: metav1.NewTime(now.Add(-tc.age))},
				Status:     tc.status,
			}
			got := classifyRun(vgs, now)
			if got.state != tc.want || got.err != tc.wantErr {
				t.Errorf("classifyRun = %s %q, want %s %q", got.state, got.err, tc.want, tc.wantErr)
			}
		})
	}
}

type snapshotErr = snapshotv1.VolumeSnapshotError

// TestSchedulePrunes: keep 2 and keepFailed 1 leave the two newest Ready and the newest failed run;
// other schedules' and unlabelled VolumeGroupSnapshots are never touched.
func TestSchedulePrunes(t *testing.T) {
	foreign := &groupsnapshotv1.VolumeGroupSnapshot{ObjectMeta: metav1.ObjectMeta{
		Name: "other-20260310100010", Namespace: stNS, Labels: map[string]string{labelSchedule: "other"},
		Annotations: map[string]string{annotationScheduledTime: "2026-03-10T10:00:10Z"}}}
	manual := &groupsnapshotv1.VolumeGroupSnapshot{ObjectMeta: metav1.ObjectMeta{Name: "by-hand", Namespace: stNS}}
	f := newSTFixture(t, stT0, []*unstructured.Unstructured{stSchedule("k", "@every 10s", stT0, stRetention(2, 1, ""))},
		stClassObj(stClass, dgtDriver), foreign, manual)
	outcomes := []string{"", "failed: no quorum", "", "failed: no quorum", "", ""}
	var created []string
	for i, outcome := range outcomes {
		at := stT0.Add(time.Duration(i+1) * 10 * time.Second)
		f.mustSyncAt(t, "k", at)
		name := runName("k", at)
		created = append(created, name)
		f.finish(t, name, at.Add(2*time.Second), outcome)
		f.mustSyncAt(t, "k", at.Add(3*time.Second))
	}
	// Ready: runs 0, 2, 4, 5; failed: 1, 3.
	want := []string{"by-hand", created[3], created[4], created[5], "other-20260310100010"}
	sort.Strings(want)
	if got := f.vgsNames(t); !reflect.DeepEqual(got, want) {
		t.Fatalf("left %v, want %v", got, want)
	}
	var pruned []string
	for _, e := range f.events(t, f.ctrl) {
		if strings.HasPrefix(e, evSnapshotPruned) {
			pruned = append(pruned, e)
		}
	}
	// Oldest first: the first failed one goes when the second fails, the Ready ones as newer ones arrive.
	wantOrder := []string{created[1], created[0], created[2]}
	if len(pruned) != len(wantOrder) {
		t.Fatalf("pruned events %v", pruned)
	}
	for i, name := range wantOrder {
		if !strings.Contains(pruned[i], name) {
			t.Errorf("prune %d: %q, want %s", i, pruned[i], name)
		}
	}
	st := f.status(t, "k")
	if st.ReadySnapshots != 2 {
		t.Errorf("readySnapshots %d", st.ReadySnapshots)
	}
	for state, want := range map[string]float64{"ready": 2, "failed": 1, "running": 0} {
		if got := testutil.ToFloat64(scheduleSnapshots.WithLabelValues(stNS, "k", state)); got != want {
			t.Errorf("schedule_snapshots{state=%s} = %v, want %v", state, got, want)
		}
	}
}

// TestScheduleKeepsNewestReady: with maxAge passed and only failures since, the newest Ready snapshot
// stays.
func TestScheduleKeepsNewestReady(t *testing.T) {
	f := newSTFixture(t, stT0, []*unstructured.Unstructured{stSchedule("m", "0 * * * *", stT0, stRetention(3, 1, "90m"))}, stClassObj(stClass, dgtDriver))
	var created []string
	for i := 1; i <= 4; i++ {
		at := stT0.Add(time.Duration(i) * time.Hour)
		f.mustSyncAt(t, "m", at)
		created = append(created, runName("m", at))
		outcome := "failed"
		if i <= 2 {
			outcome = ""
		}
		f.finish(t, runName("m", at), at.Add(time.Minute), outcome)
		f.mustSyncAt(t, "m", at.Add(2*time.Minute))
	}
	want := []string{created[1], created[3]}
	if got := f.vgsNames(t); !reflect.DeepEqual(got, want) {
		t.Errorf("left %v, want %v (the newest Ready, whatever its age, and the newest failed)", got, want)
	}
}

// TestScheduleDeletedKeepsSnapshots: deleting a schedule leaves its snapshots and drops its series.
func TestScheduleDeletedKeepsSnapshots(t *testing.T) {
	f := newSTFixture(t, stT0, []*unstructured.Unstructured{stSchedule("g", "@every 10s", stT0)}, stClassObj(stClass, dgtDriver))
	f.mustSyncAt(t, "g", stT0.Add(10*time.Second))
	if err := f.dyn.Resource(ScheduleGVR).Namespace(stNS).Delete(context.Background(), "g", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(context.Background(), 2*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		_, err := f.ctrl.schedules.ByNamespace(stNS).Get("g")
		return err != nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ctrl.sync(context.Background(), stNS+"/g"); err != nil {
		t.Fatal(err)
	}
	if names := f.vgsNames(t); !reflect.DeepEqual(names, []string{"g-20260310100010"}) {
		t.Errorf("snapshots after deleting the schedule: %v", names)
	}
	if n := testutil.CollectAndCount(scheduleNextRun); n != 0 {
		if _, ok := scheduleNextRunValue(stNS, "g"); ok {
			t.Error("next-run series of a deleted schedule still exported")
		}
	}
}
