package driver

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
