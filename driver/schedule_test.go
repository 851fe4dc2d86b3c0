package driver

import (
	"context"
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	testingclock "k8s.io/utils/clock/testing"
)

const (
	stNS    = "etcd-test"
	stClass = "etcd-snapshot"
)

// stT0 is when the test schedules are created; 10:00:00 UTC on a plain day.
var stT0 = time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC)

// stSchedule is an EtcdSnapshotSchedule as the API server would store it; mutate edits its spec map.
func stSchedule(name, schedule string, created time.Time, mutate ...func(spec map[string]any)) *unstructured.Unstructured {
	spec := map[string]any{
		"schedule":                     schedule,
		"source":                       map[string]any{"cluster": "main"},
		"volumeGroupSnapshotClassName": stClass,
	}
	for _, m := range mutate {
		m(spec)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": scheduleGroup + "/" + scheduleVersion,
		"kind":       scheduleKind,
		"metadata": map[string]any{
			"name": name, "namespace": stNS, "uid": "uid-" + name, "generation": int64(1),
			"creationTimestamp": created.UTC().Format(time.RFC3339),
		},
		"spec": spec,
	}}
	return u
}

func stRetention(keep, keepFailed int64, maxAge string) func(map[string]any) {
	return func(spec map[string]any) {
		r := map[string]any{"keep": keep, "keepFailed": keepFailed}
		if maxAge != "" {
			r["maxAge"] = maxAge
		}
		spec["retention"] = r
	}
}

func stClassObj(name, driver string) *groupsnapshotv1.VolumeGroupSnapshotClass {
	return &groupsnapshotv1.VolumeGroupSnapshotClass{
		ObjectMeta:     metav1.ObjectMeta{Name: name},
		Driver:         driver,
		DeletionPolicy: snapshotv1.VolumeSnapshotContentDelete,
	}
}

type stFixture struct {
	kube  *kubefake.Clientset
	snap  *snapfake.Clientset
	dyn   *dynamicfake.FakeDynamicClient
	clock *testingclock.FakeClock
	ctrl  *ScheduleController
}

// newSTFixture starts the controller's informers and event recording but no workers: each test drives
// sync at the fake clock's time and looks at the result.
func newSTFixture(t *testing.T, now time.Time, schedules []*unstructured.Unstructured, snapObjs ...runtime.Object) *stFixture {
	t.Helper()
	var dynObjs []runtime.Object
	for _, s := range schedules {
		dynObjs = append(dynObjs, s)
	}
	f := &stFixture{
		kube:  kubefake.NewClientset(),
		snap:  snapfake.NewSimpleClientset(snapObjs...),
		dyn:   dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{ScheduleGVR: "EtcdSnapshotScheduleList"}, dynObjs...),
		clock: testingclock.NewFakeClock(now),
	}
	f.ctrl = f.newController(t)
	t.Cleanup(func() {
		for _, s := range schedules {
			forgetScheduleMetrics(s.GetNamespace(), s.GetName())
		}
	})
	return f
}

// newController starts one more controller on the fixture's clients, as a second replica would.
func (f *stFixture) newController(t *testing.T) *ScheduleController {
	t.Helper()
	c, err := NewScheduleController(ScheduleConfig{
		Kube: f.kube, Snapshots: f.snap, Dynamic: f.dyn, DriverName: dgtDriver, ClusterLabel: "etcd.io/cluster", Clock: f.clock,
		Records: func(_ context.Context, id string) (*Record, error) {
			return &Record{ID: id, Revision: 4242, SizeBytes: 1 << 20}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := c.start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	return c
}

// syncAt moves the clock to now, waits until c's caches hold what the fake API holds, and syncs name.
func (f *stFixture) syncAt(t *testing.T, c *ScheduleController, name string, now time.Time) (time.Duration, error) {
	t.Helper()
	f.clock.SetTime(now)
	f.waitCaches(t, c, name)
	return c.sync(context.Background(), stNS+"/"+name)
}

func (f *stFixture) mustSyncAt(t *testing.T, name string, now time.Time) time.Duration {
	t.Helper()
	after, err := f.syncAt(t, f.ctrl, name, now)
	if err != nil {
		t.Fatalf("sync at %s: %v", now.UTC().Format(time.RFC3339), err)
	}
	return after
}

func (f *stFixture) waitCaches(t *testing.T, c *ScheduleController, name string) {
	t.Helper()
	ctx := context.Background()
	err := wait.PollUntilContextTimeout(ctx, 2*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		live, err := f.dyn.Resource(ScheduleGVR).Namespace(stNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		cached, err := c.schedules.ByNamespace(stNS).Get(name)
		if err != nil || !reflect.DeepEqual(cached.(*unstructured.Unstructured).Object, live.Object) {
			return false, nil
		}
		apiList, err := f.snap.GroupsnapshotV1().VolumeGroupSnapshots(stNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		cachedList, err := c.vgsLister.VolumeGroupSnapshots(stNS).List(everything)
		if err != nil || len(cachedList) != len(apiList.Items) {
			return false, nil
		}
		byName := map[string]*groupsnapshotv1.VolumeGroupSnapshot{}
		for _, v := range cachedList {
			byName[v.Name] = v
		}
		for i := range apiList.Items {
			if v := byName[apiList.Items[i].Name]; v == nil || !reflect.DeepEqual(v.Status, apiList.Items[i].Status) {
				return false, nil
			}
		}
		classes, _ := f.snap.GroupsnapshotV1().VolumeGroupSnapshotClasses().List(ctx, metav1.ListOptions{})
		cachedClasses, _ := c.classLister.List(everything)
		return len(classes.Items) == len(cachedClasses), nil
	})
	if err != nil {
		t.Fatalf("caches did not catch up: %v", err)
	}
}

func (f *stFixture) status(t *testing.T, name string) scheduleStatus {
	t.Helper()
	u, err := f.dyn.Resource(ScheduleGVR).Namespace(stNS).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := scheduleFromUnstructured(u)
	if err != nil {
		t.Fatal(err)
	}
	return s.Status
}

func (f *stFixture) vgsNames(t *testing.T) []string {
	t.Helper()
	list, err := f.snap.GroupsnapshotV1().VolumeGroupSnapshots(stNS).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range list.Items {
		names = append(names, v.Name)
	}
	sort.Strings(names)
	return names
}

func (f *stFixture) vgs(t *testing.T, name string) *groupsnapshotv1.VolumeGroupSnapshot {
	t.Helper()
	v, err := f.snap.GroupsnapshotV1().VolumeGroupSnapshots(stNS).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// finish plays the snapshot-controller: it binds the run and makes it ready (errMsg "") or failed.
func (f *stFixture) finish(t *testing.T, name string, at time.Time, errMsg string) {
	t.Helper()
	v := f.vgs(t, name)
	content := "groupsnapcontent-" + name
	v.CreationTimestamp = metav1.NewTime(at)
	v.Status = &groupsnapshotv1.VolumeGroupSnapshotStatus{BoundVolumeGroupSnapshotContentName: &content}
	if errMsg == "" {
		ready := true
		v.Status.ReadyToUse = &ready
		v.Status.CreationTime = &metav1.Time{Time: at}
		handle := "etcdgs-" + name
		_, err := f.snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Create(context.Background(), &groupsnapshotv1.VolumeGroupSnapshotContent{
			ObjectMeta: metav1.ObjectMeta{Name: content},
			Status:     &groupsnapshotv1.VolumeGroupSnapshotContentStatus{VolumeGroupSnapshotHandle: &handle},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	} else {
		v.Status.Error = &snapshotv1.VolumeSnapshotError{Message: &errMsg, Time: &metav1.Time{Time: at}}
	}
	if _, err := f.snap.GroupsnapshotV1().VolumeGroupSnapshots(stNS).Update(context.Background(), v, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// events returns "Reason: message" of every event recorded by c so far (sentinel as in
// dynamicgroup_test.go).
func (f *stFixture) events(t *testing.T, c *ScheduleController) []string {
	t.Helper()
	sentinel := stSchedule("sentinel", "@daily", stT0)
	c.recorder.Event(sentinel, corev1.EventTypeNormal, "TestSentinel", "end")
	var got []string
	err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := f.kube.CoreV1().Events("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		got = got[:0]
		done := false
		sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
		for _, e := range list.Items {
			if e.Reason == "TestSentinel" {
				done = true
				if err := f.kube.CoreV1().Events(e.Namespace).Delete(ctx, e.Name, metav1.DeleteOptions{}); err != nil {
					return false, err
				}
				continue
			}
			got = append(got, e.Reason+": "+e.Message)
		}
		return done, nil
	})
	if err != nil {
		t.Fatalf("waiting for events: %v", err)
	}
	return got
}

func reasons(events []string) []string {
	var out []string
	for _, e := range events {
		out = append(out, strings.SplitN(e, ":", 2)[0])
	}
	sort.Strings(out)
	return out
}

func condition(st scheduleStatus, t string) metav1.Condition {
	if c := meta.FindStatusCondition(st.Conditions, t); c != nil {
		return *c
	}
	return metav1.Condition{}
}

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
		v.Annotations[annScheduledTime] != "2026-03-11T01:30:00Z" || len(v.OwnerReferences) != 0 {
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

// TestScheduleMissedAcrossOutage: an hourly schedule whose driver was down five hours starts only the
// most recent run and counts four missed runs, once.
func TestScheduleMissedAcrossOutage(t *testing.T) {
	f := newSTFixture(t, stT0, []*unstructured.Unstructured{stSchedule("h", "0 * * * *", stT0)}, stClassObj(stClass, dgtDriver))
	f.mustSyncAt(t, "h", stT0.Add(time.Hour))
	f.finish(t, "h-20260310110000", stT0.Add(time.Hour+time.Minute), "")
	f.mustSyncAt(t, "h", stT0.Add(time.Hour+2*time.Minute))
	// Down from 11:02 to 16:20: runs at 12, 13, 14, 15 and 16 were due.
	f.mustSyncAt(t, "h", stT0.Add(6*time.Hour+20*time.Minute))
	f.mustSyncAt(t, "h", stT0.Add(6*time.Hour+21*time.Minute))
	if names := f.vgsNames(t); !reflect.DeepEqual(names, []string{"h-20260310110000", "h-20260310160000"}) {
		t.Fatalf("runs %v", names)
	}
	if got := testutil.ToFloat64(scheduleMissedRuns.WithLabelValues(stNS, "h")); got != 4 {
		t.Errorf("missed runs %v, want 4", got)
	}
	events := f.events(t, f.ctrl)
	if !strings.Contains(strings.Join(events, "\n"), "RunMissed: Missed 4 run(s)") {
		t.Errorf("events %v", events)
	}
}

// TestScheduleStartingDeadline: a run that cannot start within startingDeadlineSeconds is missed (no
// snapshot), counted once; the next run in time starts.
func TestScheduleStartingDeadline(t *testing.T) {
	f := newSTFixture(t, stT0, []*unstructured.Unstructured{stSchedule("d", "0 * * * *", stT0, func(spec map[string]any) {
		spec["startingDeadlineSeconds"] = int64(120)
	})}, stClassObj(stClass, dgtDriver))
	f.mustSyncAt(t, "d", stT0.Add(time.Hour+5*time.Minute)) // 5 minutes late
	f.mustSyncAt(t, "d", stT0.Add(time.Hour+6*time.Minute))
	if names := f.vgsNames(t); len(names) != 0 {
		t.Fatalf("a run past its deadline started: %v", names)
	}
	st := f.status(t, "d")
	if st.LastMissedScheduleTime == nil || !st.LastMissedScheduleTime.Time.Equal(stT0.Add(time.Hour)) || st.LastScheduleTime != nil {
		t.Errorf("status %+v", st)
	}
	if got := testutil.ToFloat64(scheduleMissedRuns.WithLabelValues(stNS, "d")); got != 1 {
		t.Errorf("missed runs %v, want 1", got)
	}
	f.mustSyncAt(t, "d", stT0.Add(2*time.Hour+90*time.Second)) // within the deadline
	if names := f.vgsNames(t); !reflect.DeepEqual(names, []string{"d-20260310120000"}) {
		t.Fatalf("runs %v", names)
	}
	if got := reasons(f.events(t, f.ctrl)); !reflect.DeepEqual(got, []string{evRunMissed, evSnapshotCreated}) {
		t.Errorf("events %v", got)
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

func scheduleNextRunValue(ns, name string) (float64, bool) {
	m, err := scheduleNextRun.GetMetricWithLabelValues(ns, name)
	if err != nil {
		return 0, false
	}
	// GetMetricWithLabelValues creates the series; an absent one reads 0 and is removed again.
	v := testutil.ToFloat64(m)
	if v == 0 {
		scheduleNextRun.DeleteLabelValues(ns, name)
		return 0, false
	}
	return v, true
}

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

// TestSchedulePrunes: keep 2 and keepFailed 1 leave the two newest Ready and the newest failed run;
// other schedules' and unlabelled VolumeGroupSnapshots are never touched.
func TestSchedulePrunes(t *testing.T) {
	foreign := &groupsnapshotv1.VolumeGroupSnapshot{ObjectMeta: metav1.ObjectMeta{
		Name: "other-20260310100010", Namespace: stNS, Labels: map[string]string{labelSchedule: "other"},
		Annotations: map[string]string{annScheduledTime: "2026-03-10T10:00:10Z"}}}
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

// TestScheduleAcrossDST: a 02:30 Europe/Berlin schedule over both 2026 changes, with a run per sync,
// gets one run a day except none on the spring-forward day (no 02:30 exists) and two on the
// fall-back day, each named by its distinct UTC time. That is robfig/cron's behaviour, and a CronJob's.
func TestScheduleAcrossDST(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		start, end time.Time
		want       []string
	}{
		{name: "spring forward", start: time.Date(2026, 3, 27, 12, 0, 0, 0, berlin), end: time.Date(2026, 3, 31, 12, 0, 0, 0, berlin),
			want: []string{"b-20260328013000", "b-20260330003000", "b-20260331003000"}},
		{name: "fall back", start: time.Date(2026, 10, 23, 12, 0, 0, 0, berlin), end: time.Date(2026, 10, 26, 12, 0, 0, 0, berlin),
			want: []string{"b-20261024003000", "b-20261025003000", "b-20261025013000", "b-20261026013000"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newSTFixture(t, tc.start, []*unstructured.Unstructured{stSchedule("b", "30 2 * * *", tc.start, func(spec map[string]any) {
				spec["timeZone"] = "Europe/Berlin"
			})}, stClassObj(stClass, dgtDriver))
			now := tc.start
			for i := 0; i < 20; i++ {
				after := f.mustSyncAt(t, "b", now)
				for _, name := range f.vgsNames(t) {
					if v := f.vgs(t, name); v.Status == nil {
						f.finish(t, name, now.Add(time.Second), "")
					}
				}
				now = now.Add(after + time.Second)
				if now.After(tc.end) {
					break
				}
			}
			if got := f.vgsNames(t); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("runs %v, want %v", got, tc.want)
			}
			if got := testutil.ToFloat64(scheduleMissedRuns.WithLabelValues(stNS, "b")); got != 0 {
				t.Errorf("%v missed runs, want none", got)
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

var everything = labels.Everything()

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

// TestScheduleTooManyMissed: a clock jump of a year over an hourly schedule starts the latest run,
// counts every missed one and says to check the clocks, as CronJob does past 100.
func TestScheduleTooManyMissed(t *testing.T) {
	f := newSTFixture(t, stT0, []*unstructured.Unstructured{stSchedule("y", "0 * * * *", stT0)}, stClassObj(stClass, dgtDriver))
	at := stT0.AddDate(1, 0, 0).Add(30 * time.Minute)
	f.mustSyncAt(t, "y", at)
	if names := f.vgsNames(t); !reflect.DeepEqual(names, []string{"y-20270310100000"}) {
		t.Fatalf("runs %v", names)
	}
	hours := at.Sub(stT0) / time.Hour
	if got := testutil.ToFloat64(scheduleMissedRuns.WithLabelValues(stNS, "y")); got != float64(hours-1) {
		t.Errorf("missed runs %v, want %d", got, hours-1)
	}
	if events := strings.Join(f.events(t, f.ctrl), "\n"); !strings.Contains(events, "check the clocks") {
		t.Errorf("no clock warning in %s", events)
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
