package driver

import (
	"context"
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
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	testingclock "k8s.io/utils/clock/testing"
)

const (
	stNS    = fxNS
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

var everything = labels.Everything()
