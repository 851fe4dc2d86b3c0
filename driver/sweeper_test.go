package driver

import (
	"errors"
	"strings"
	"testing"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	"github.com/prometheus/client_golang/prometheus/testutil"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/util/workqueue"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
)

// swGrace is the sweeper's grace period in these tests; swNow is where the fake clock starts.
const swGrace = 10 * time.Minute

var swNow = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// sweeperFixture is an engine over the fake API (with the driver's RBAC), the dynamic group watch's
// informers over a fake snapshot API, and a sweeper on a fake clock. Its worker runs only when a test
// calls run; otherwise the test drives sweepRecord and sweepContent itself.
type sweeperFixture struct {
	*fixture
	snap  *snapfake.Clientset
	clock *testingclock.FakeClock
	sw    *Sweeper
}

func newSweeperFixture(t *testing.T, kubeObjs, snapObjs []runtime.Object) *sweeperFixture {
	t.Helper()
	f := &sweeperFixture{fixture: newEngineFixture(t, kubeObjs...), snap: snapfake.NewSimpleClientset(snapObjs...),
		clock: testingclock.NewFakeClock(swNow)}
	dg := newDynamicGroupController(f.kube, f.snap, dgtDriver, 0,
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Millisecond, 10*time.Millisecond))
	sw, err := newSweeper(f.engine, dg, f.snap, swGrace, f.clock)
	if err != nil {
		t.Fatal(err)
	}
	f.sw = sw
	if err := dg.start(f.ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.queue.ShutDown)
	return f
}

// run starts the sweeper's worker, as Driver.Run does.
func (f *sweeperFixture) run() { go f.sw.Run(f.ctx) }

// swPending is a Pending record made age ago by request name, with the suspended Job, PVC and
// Secret an interrupted Create leaves.
func swPending(t *testing.T, name string, group bool, age time.Duration) (*Record, []runtime.Object) {
	t.Helper()
	rec := listRecord(name, group, PhasePending, fxNS+"/data-main-0")
	rec.CreatedAt = swNow.Add(-age)
	cm, err := encodeRecord(fxMetaNS, rec)
	if err != nil {
		t.Fatal(err)
	}
	labels := objectLabels(rec.ID, rec.Cluster)
	meta := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: fxNS, Labels: labels, UID: types.UID("uid-" + name)}
	}
	return rec, []runtime.Object{cm,
		&batchv1.Job{ObjectMeta: meta(rec.ID), Spec: batchv1.JobSpec{Suspend: ptr.To(true)}},
		&corev1.PersistentVolumeClaim{ObjectMeta: meta(rec.ID), Spec: corev1.PersistentVolumeClaimSpec{
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("64Mi")}}}},
		&corev1.Secret{ObjectMeta: meta(tlsSecretName(rec.ID))},
	}
}

// swContent is a content the dynamic group watch pre-created age ago for VolumeGroupSnapshot
// backup (uid), with policy, and the group snapshot handle the sidecar recorded ("" for none).
func swContent(uid types.UID, policy snapshotv1.DeletionPolicy, age time.Duration, handle string) *groupsnapshotv1.VolumeGroupSnapshotContent {
	c := dgtContentFor(dgtHandles, policy, "etcd", nil)
	c.Name = upstreamGroupContentPrefix + string(uid)
	c.UID = types.UID("content-" + uid)
	c.Spec.VolumeGroupSnapshotRef.UID = uid
	c.CreationTimestamp = metav1.NewTime(swNow.Add(-age))
	if handle != "" {
		c.Status = &groupsnapshotv1.VolumeGroupSnapshotContentStatus{VolumeGroupSnapshotHandle: &handle}
	}
	return c
}

func swRemoved(kind string) float64 { return testutil.ToFloat64(sweeperRemoved.WithLabelValues(kind)) }

func (f *sweeperFixture) contentExists(name string) bool {
	f.t.Helper()
	_, err := f.snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(f.ctx, name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		f.t.Fatal(err)
	}
	return err == nil
}

// noneLeft and allLeft describe objectsOf answers.
var (
	noneLeft = map[string]bool{"Job": false, "Secret": false, "PersistentVolumeClaim": false, "ConfigMap": false}
	allLeft  = map[string]bool{"Job": true, "Secret": true, "PersistentVolumeClaim": true, "ConfigMap": true}
)

func sameObjects(got, want map[string]bool) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return len(got) == len(want)
}

// TestSweeperPendingRecords checks which Pending records the sweeper removes, with their Job, PVC and
// Secret: only past the grace period, and only when no caller is left to retry (the content the
// csi-snapshotter names after the VolumeGroupSnapshot or VolumeSnapshot UID in the request name is gone).
func TestSweeperPendingRecords(t *testing.T) {
	const uid = "6f1c0e2a-1b2c-4d3e-8f40-5a6b7c8d9e0f"
	cases := []struct {
		name   string
		req    string
		group  bool
		age    time.Duration
		snap   []runtime.Object // the caller's objects
		phase  Phase            // the record's phase, Pending unless set
		remove bool
	}{
		{name: "group whose VolumeGroupSnapshot is gone", req: "groupsnapshot-" + uid, group: true, age: swGrace + time.Second, remove: true},
		{name: "group within the grace period", req: "groupsnapshot-" + uid, group: true, age: swGrace - time.Second},
		{name: "group whose content remains", req: "groupsnapshot-" + uid, group: true, age: 3 * swGrace,
			snap: []runtime.Object{swContent(uid, snapshotv1.VolumeSnapshotContentDelete, 3*swGrace, "")}},
		{name: "group whose content is being deleted", req: "groupsnapshot-" + uid, group: true, age: 3 * swGrace, remove: true,
			snap: []runtime.Object{func() runtime.Object {
				c := swContent(uid, snapshotv1.VolumeSnapshotContentDelete, 3*swGrace, "")
				c.DeletionTimestamp, c.Finalizers = ptr.To(metav1.NewTime(swNow)), []string{"test/keep"}
				return c
			}()}},
		{name: "single whose VolumeSnapshot is gone", req: "snapshot-" + uid, age: swGrace, remove: true},
		{name: "single whose content remains", req: "snapshot-" + uid, age: 3 * swGrace,
			snap: []runtime.Object{&snapshotv1.VolumeSnapshotContent{ObjectMeta: metav1.ObjectMeta{Name: "snapcontent-" + uid}}}},
		{name: "a request name that is not the sidecar's", req: "made-by-hand", group: true, age: swGrace, remove: true},
		{name: "a Running record is not the sweeper's", req: "groupsnapshot-" + uid, group: true, age: 3 * swGrace, phase: PhaseRunning},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec, objs := swPending(t, tc.req, tc.group, tc.age)
			if tc.phase != "" {
				rec.Phase = tc.phase
				cm, err := encodeRecord(fxMetaNS, rec)
				if err != nil {
					t.Fatal(err)
				}
				objs[0] = cm
			}
			f := newSweeperFixture(t, objs, tc.snap)
			before := swRemoved(sweptPending)
			if err := f.sw.sweepRecord(f.ctx, rec.ID); err != nil {
				t.Fatal(err)
			}
			want, removed := allLeft, 0.0
			if tc.remove {
				want, removed = noneLeft, 1
			}
			if got := f.objectsOf(rec.ID); !sameObjects(got, want) {
				t.Fatalf("objects of %s after the sweep: %v, want %v", rec.ID, got, want)
			}
			if got := swRemoved(sweptPending) - before; got != removed {
				t.Errorf("sweeper_removed_total{kind=pending} grew by %v, want %v", got, removed)
			}
		})
	}
}

// TestSweeperContents checks which pre-created VolumeGroupSnapshotContents the sweeper collects, and
// that it removes the snapshot the sidecar took for one first.
func TestSweeperContents(t *testing.T) {
	const uid = types.UID("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d")
	taken := listRecord("groupsnapshot-"+string(uid), true, PhaseReady, fxNS+"/data-main-0")
	takenCM, err := encodeRecord(fxMetaNS, taken)
	if err != nil {
		t.Fatal(err)
	}
	takenJob := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: taken.ID, Namespace: fxNS, Labels: objectLabels(taken.ID, fxCluster)}}
	vgs := func(u types.UID) *groupsnapshotv1.VolumeGroupSnapshot {
		v := dgtVGS()
		v.UID = u
		return v
	}
	notOurs := swContent(uid, snapshotv1.VolumeSnapshotContentDelete, 2*swGrace, "")
	notOurs.Labels = nil

	cases := []struct {
		name     string
		content  *groupsnapshotv1.VolumeGroupSnapshotContent
		snap     []runtime.Object
		untaken  bool // the sidecar never called: no record
		annotate bool // the content gets upstream's being-deleted annotation first
		remove   bool
		snapshot bool // the record taken for it goes too
	}{
		{name: "VolumeGroupSnapshot gone before the sidecar called", content: swContent(uid, snapshotv1.VolumeSnapshotContentDelete, 2*swGrace, ""),
			untaken: true, remove: true},
		{name: "VolumeGroupSnapshot gone after the sidecar took the snapshot",
			content: swContent(uid, snapshotv1.VolumeSnapshotContentDelete, 2*swGrace, taken.ID), remove: true, snapshot: true},
		{name: "snapshot-controller's finalizer: annotated so the sidecar lets it go", content: func() *groupsnapshotv1.VolumeGroupSnapshotContent {
			c := swContent(uid, snapshotv1.VolumeSnapshotContentDelete, 2*swGrace, taken.ID)
			c.Finalizers = []string{"groupsnapshot.storage.kubernetes.io/volumegroupsnapshotcontent-bound-protection"}
			return c
		}(), annotate: true, remove: true, snapshot: true},
		{name: "VolumeGroupSnapshot gone before the sidecar recorded its snapshot",
			content: swContent(uid, snapshotv1.VolumeSnapshotContentDelete, 2*swGrace, ""), remove: true, snapshot: true},
		{name: "a new VolumeGroupSnapshot of the same name", content: swContent(uid, snapshotv1.VolumeSnapshotContentDelete, 2*swGrace, taken.ID),
			snap: []runtime.Object{vgs("11111111-2222-4333-8444-555555555555")}, remove: true, snapshot: true},
		{name: "VolumeGroupSnapshot still there", content: swContent(uid, snapshotv1.VolumeSnapshotContentDelete, 2*swGrace, taken.ID),
			snap: []runtime.Object{vgs(uid)}},
		{name: "within the grace period", content: swContent(uid, snapshotv1.VolumeSnapshotContentDelete, swGrace-time.Second, taken.ID)},
		{name: "Retain keeps the snapshot", content: swContent(uid, snapshotv1.VolumeSnapshotContentRetain, 2*swGrace, taken.ID)},
		{name: "a content the driver did not create", content: notOurs},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			world := []runtime.Object{takenCM, takenJob}
			if tc.untaken {
				world = nil
			}
			f := newSweeperFixture(t, world, append([]runtime.Object{tc.content}, tc.snap...))
			waitFor(t, "content in the cache", func() bool { _, err := f.sw.contentLister.Get(tc.content.Name); return err == nil })
			beforeContent, beforeSnapshot := swRemoved(sweptContent), swRemoved(sweptSnapshot)
			// Twice: the second look, from a cache that may still show the content, must count nothing.
			for range 2 {
				if err := f.sw.sweepContent(f.ctx, tc.content.Name); err != nil {
					t.Fatal(err)
				}
			}
			if got := f.contentExists(tc.content.Name); got == tc.remove {
				t.Errorf("content %s exists after the sweep: %v, want %v", tc.content.Name, got, !tc.remove)
			}
			if got := f.exists("ConfigMap", fxMetaNS, taken.ID) || f.exists("Job", fxNS, taken.ID); got == (tc.snapshot || tc.untaken) {
				t.Errorf("snapshot %s (record or Job) exists after the sweep: %v, want %v", taken.ID, got, !tc.snapshot)
			}
			annotated := false
			for _, a := range f.snap.Actions() {
				if p, ok := a.(k8stesting.PatchAction); ok && a.GetResource().Resource == "volumegroupsnapshotcontents" &&
					strings.Contains(string(p.GetPatch()), upstreamGroupBeingDeletedAnnotation) {
					annotated = true
				}
			}
			if annotated != tc.annotate {
				t.Errorf("content annotated %s: %v, want %v", upstreamGroupBeingDeletedAnnotation, annotated, tc.annotate)
			}
			if got := swRemoved(sweptContent) - beforeContent; got != map[bool]float64{true: 1}[tc.remove] {
				t.Errorf("sweeper_removed_total{kind=content} grew by %v", got)
			}
			if got := swRemoved(sweptSnapshot) - beforeSnapshot; got != map[bool]float64{true: 1}[tc.snapshot] {
				t.Errorf("sweeper_removed_total{kind=snapshot} grew by %v", got)
			}
		})
	}
}

// TestSweeperFollowsInformers runs the sweeper's worker: a Pending record and a pre-created content
// are left alone until the fake clock passes their grace period, then removed without any call.
func TestSweeperFollowsInformers(t *testing.T) {
	const uid = "0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5"
	rec, objs := swPending(t, "groupsnapshot-"+uid, true, 0)
	content := swContent(types.UID(uid), snapshotv1.VolumeSnapshotContentDelete, 0, "")
	f := newSweeperFixture(t, objs, []runtime.Object{content})
	f.run()

	// Nothing goes before the grace period; the clock waiters show the sweeper has scheduled both.
	waitFor(t, "two delayed looks", func() bool { return f.clock.HasWaiters() && f.sw.queue.Len() == 0 })
	f.clock.Step(swGrace - time.Second)
	time.Sleep(100 * time.Millisecond)
	if got := f.objectsOf(rec.ID); !sameObjects(got, allLeft) || !f.contentExists(content.Name) {
		t.Fatalf("before the grace period: objects %v, content %v; want everything kept", got, f.contentExists(content.Name))
	}
	f.clock.Step(2 * time.Second)
	waitFor(t, "the Pending record and the content removed", func() bool {
		return sameObjects(f.objectsOf(rec.ID), noneLeft) && !f.contentExists(content.Name)
	})
}

// TestSweeperRetriesFailedRollback checks that a rollback which failed (enginedelete.go) is finished by the
// sweeper with backoff, without waiting for the grace period.
func TestSweeperRetriesFailedRollback(t *testing.T) {
	rec, objs := swPending(t, "groupsnapshot-1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", true, 0)
	f := newSweeperFixture(t, objs, nil)
	f.run()
	failOnce(f.kube, "delete", "persistentvolumeclaims", apierrors.NewServiceUnavailable("etcd leader changed"))
	before := swRemoved(sweptRollback)
	f.engine.rollback(f.ctx, rec, errors.New("test: Create failed"))
	if got := f.objectsOf(rec.ID); !got["PersistentVolumeClaim"] || !got["ConfigMap"] {
		t.Fatalf("after the failed rollback: %v, want the PVC and the record left", got)
	}
	// The retry waits out the workqueue's backoff on the fake clock, far less than the grace period.
	waitFor(t, "the sweeper's retry", func() bool {
		f.clock.Step(time.Second)
		return sameObjects(f.objectsOf(rec.ID), noneLeft)
	})
	if f.clock.Since(swNow) >= swGrace {
		t.Errorf("the retry came %s after the failure, not before the grace period %s", f.clock.Since(swNow), swGrace)
	}
	if got := swRemoved(sweptRollback) - before; got != 1 {
		t.Errorf("sweeper_removed_total{kind=rollback} grew by %v, want 1", got)
	}
}
