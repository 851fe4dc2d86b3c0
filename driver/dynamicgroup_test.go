package driver

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

const (
	dgtDriver    = "etcd-snapshot.csi.io"
	dgtPVDriver  = "hostpath.csi.k8s.io"
	dgtNamespace = "etcd-test"
	dgtUID       = types.UID("0b7f2c1e-9a43-4d5e-8f10-1c2d3e4f5a6b")
	dgtContent   = "groupsnapcontent-0b7f2c1e-9a43-4d5e-8f10-1c2d3e4f5a6b"
)

type dgtVGSOpt func(*groupsnapshotv1.VolumeGroupSnapshot)

func dgtVGS(opts ...dgtVGSOpt) *groupsnapshotv1.VolumeGroupSnapshot {
	class := "etcd"
	vgs := &groupsnapshotv1.VolumeGroupSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: "backup", Namespace: dgtNamespace, UID: dgtUID, ResourceVersion: "7"},
		Spec: groupsnapshotv1.VolumeGroupSnapshotSpec{
			Source: groupsnapshotv1.VolumeGroupSnapshotSource{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"etcd.io/cluster": "main"}},
			},
			VolumeGroupSnapshotClassName: &class,
		},
	}
	for _, o := range opts {
		o(vgs)
	}
	return vgs
}

func dgtNoClass(v *groupsnapshotv1.VolumeGroupSnapshot) { v.Spec.VolumeGroupSnapshotClassName = nil }

func dgtClassName(name string) dgtVGSOpt {
	return func(v *groupsnapshotv1.VolumeGroupSnapshot) { v.Spec.VolumeGroupSnapshotClassName = &name }
}

func dgtClass(name, driver string, policy snapshotv1.DeletionPolicy, isDefault bool, params map[string]string) *groupsnapshotv1.VolumeGroupSnapshotClass {
	c := &groupsnapshotv1.VolumeGroupSnapshotClass{
		ObjectMeta:     metav1.ObjectMeta{Name: name},
		Driver:         driver,
		DeletionPolicy: policy,
		Parameters:     params,
	}
	if isDefault {
		c.Annotations = map[string]string{"groupsnapshot.storage.kubernetes.io/is-default-class": "true"}
	}
	return c
}

var dgtSecretParams = map[string]string{
	"csi.storage.k8s.io/group-snapshotter-secret-name":      "main-client-tls",
	"csi.storage.k8s.io/group-snapshotter-secret-namespace": "${volumegroupsnapshot.namespace}",
	"endpoints": "https://127.0.0.1:2379",
}

// dgtEtcdClass is our class with the rig's secret parameters.
func dgtEtcdClass() *groupsnapshotv1.VolumeGroupSnapshotClass {
	return dgtClass("etcd", dgtDriver, snapshotv1.VolumeSnapshotContentDelete, false, dgtSecretParams)
}

func dgtPVC(namespace, name string, lbl map[string]string, phase corev1.PersistentVolumeClaimPhase) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: lbl},
		Spec:       corev1.PersistentVolumeClaimSpec{VolumeName: "pv-" + name},
		Status:     corev1.PersistentVolumeClaimStatus{Phase: phase},
	}
}

func dgtPV(claimName, driver string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv-" + claimName},
		Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				CSI: &corev1.CSIPersistentVolumeSource{Driver: driver, VolumeHandle: "/var/lib/rig/" + claimName},
			},
			ClaimRef: &corev1.ObjectReference{Namespace: dgtNamespace, Name: claimName},
		},
	}
}

var dgtMain = map[string]string{"etcd.io/cluster": "main"}

// dgtCluster is three bound member PVCs (listed out of order), their PVs of another
// driver, and claims the selector must not pick.
func dgtCluster() []runtime.Object {
	return []runtime.Object{
		dgtPVC(dgtNamespace, "data-main-2", dgtMain, corev1.ClaimBound),
		dgtPVC(dgtNamespace, "data-main-0", dgtMain, corev1.ClaimBound),
		dgtPVC(dgtNamespace, "data-main-1", dgtMain, corev1.ClaimBound),
		dgtPVC(dgtNamespace, "data-other-0", map[string]string{"etcd.io/cluster": "other"}, corev1.ClaimBound),
		dgtPVC("elsewhere", "data-main-0", dgtMain, corev1.ClaimBound),
		dgtPV("data-main-0", dgtPVDriver), dgtPV("data-main-1", dgtPVDriver), dgtPV("data-main-2", dgtPVDriver),
	}
}

var dgtHandles = []string{"etcd-test/data-main-0", "etcd-test/data-main-1", "etcd-test/data-main-2"}

type dgtFixture struct {
	kube *kubefake.Clientset
	snap *snapfake.Clientset
	ctrl *DynamicGroupController
}

// newDGTFixture starts informers and event recording but no workers, so a test
// drives sync itself and sees its result.
func newDGTFixture(t *testing.T, kubeObjs, snapObjs []runtime.Object) *dgtFixture {
	t.Helper()
	f := &dgtFixture{kube: kubefake.NewClientset(kubeObjs...), snap: snapfake.NewSimpleClientset(snapObjs...)}
	f.ctrl = newDynamicGroupController(f.kube, f.snap, dgtDriver, 0,
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Millisecond, 10*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := f.ctrl.start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	return f
}

func (f *dgtFixture) contents(t *testing.T) []groupsnapshotv1.VolumeGroupSnapshotContent {
	t.Helper()
	list, err := f.snap.GroupsnapshotV1().VolumeGroupSnapshotContents().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("listing contents: %v", err)
	}
	return list.Items
}

// events returns every event recorded so far (recordedEvents).
func (f *dgtFixture) events(t *testing.T) []corev1.Event {
	t.Helper()
	return recordedEvents(t, f.kube, f.ctrl.recorder)
}

// recordedEvents returns every event the recorders have sent to kube so far. A sentinel event is
// recorded last through each and awaited: a recorder delivers in order, so all its earlier events
// are in the fake API by then.
func recordedEvents(t *testing.T, kube *kubefake.Clientset, recorders ...record.EventRecorder) []corev1.Event {
	t.Helper()
	for i, r := range recorders {
		r.Event(dgtVGS(), corev1.EventTypeNormal, "TestSentinel", fmt.Sprintf("end of test %d", i))
	}
	var got []corev1.Event
	err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := kube.CoreV1().Events("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		got = got[:0]
		sentinels := 0
		for _, e := range list.Items {
			if e.Reason == "TestSentinel" {
				sentinels++
				continue
			}
			got = append(got, e)
		}
		return sentinels == len(recorders), nil
	})
	if err != nil {
		t.Fatalf("waiting for events: %v", err)
	}
	return got
}

func dgtContentFor(handles []string, policy snapshotv1.DeletionPolicy, className string, annotations map[string]string) *groupsnapshotv1.VolumeGroupSnapshotContent {
	return &groupsnapshotv1.VolumeGroupSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{
			Name:        dgtContent,
			Labels:      map[string]string{"app.kubernetes.io/managed-by": "etcd-snapshot-driver"},
			Annotations: annotations,
		},
		Spec: groupsnapshotv1.VolumeGroupSnapshotContentSpec{
			VolumeGroupSnapshotRef: corev1.ObjectReference{
				APIVersion:      "groupsnapshot.storage.k8s.io/v1",
				Kind:            "VolumeGroupSnapshot",
				Namespace:       dgtNamespace,
				Name:            "backup",
				UID:             dgtUID,
				ResourceVersion: "7",
			},
			Source:                       groupsnapshotv1.VolumeGroupSnapshotContentSource{VolumeHandles: handles},
			VolumeGroupSnapshotClassName: &className,
			DeletionPolicy:               policy,
			Driver:                       dgtDriver,
		},
	}
}

var dgtSecretAnnotations = map[string]string{
	"groupsnapshot.storage.kubernetes.io/deletion-secret-name":      "main-client-tls",
	"groupsnapshot.storage.kubernetes.io/deletion-secret-namespace": dgtNamespace,
}

func TestDynamicGroupSync(t *testing.T) {
	now := metav1.Now()
	bound := dgtContent
	preContent := "imported"
	foreign := dgtContentFor([]string{"somebody/else"}, snapshotv1.VolumeSnapshotContentRetain, "etcd", nil)
	foreign.Labels = nil
	ours := dgtContentFor([]string{"etcd-test/data-main-0"}, snapshotv1.VolumeSnapshotContentDelete, "etcd-default", nil)

	cases := []struct {
		name      string
		kube      []runtime.Object
		snap      []runtime.Object
		wantRetry bool // sync returns a retryable wait
		wantErr   bool // sync returns another error
		// wantContent is the only content expected afterwards; nil = none.
		wantContent *groupsnapshotv1.VolumeGroupSnapshotContent
		wantEvents  []string // reasons, in order
		wantClass   *string  // VolumeGroupSnapshot spec.volumeGroupSnapshotClassName afterwards
	}{
		{
			name:        "our class and selector",
			kube:        dgtCluster(),
			snap:        []runtime.Object{dgtVGS(), dgtEtcdClass()},
			wantContent: dgtContentFor(dgtHandles, snapshotv1.VolumeSnapshotContentDelete, "etcd", dgtSecretAnnotations),
			wantEvents:  []string{"CreatingGroupSnapshot"},
			wantClass:   new("etcd"),
		},
		{
			name:        "Retain class without secrets",
			kube:        dgtCluster(),
			snap:        []runtime.Object{dgtVGS(dgtClassName("keep")), dgtClass("keep", dgtDriver, snapshotv1.VolumeSnapshotContentRetain, false, nil)},
			wantContent: dgtContentFor(dgtHandles, snapshotv1.VolumeSnapshotContentRetain, "keep", nil),
			wantEvents:  []string{"CreatingGroupSnapshot"},
			wantClass:   new("keep"),
		},
		{
			name: "secret name from content and snapshot names",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(dgtClassName("tmpl")), dgtClass("tmpl", dgtDriver, snapshotv1.VolumeSnapshotContentDelete, false, map[string]string{
				"csi.storage.k8s.io/group-snapshotter-secret-name":      "${volumegroupsnapshot.name}-${volumegroupsnapshotcontent.name}",
				"csi.storage.k8s.io/group-snapshotter-secret-namespace": "creds",
			})},
			wantContent: dgtContentFor(dgtHandles, snapshotv1.VolumeSnapshotContentDelete, "tmpl", map[string]string{
				"groupsnapshot.storage.kubernetes.io/deletion-secret-name":      "backup-" + dgtContent,
				"groupsnapshot.storage.kubernetes.io/deletion-secret-namespace": "creds",
			}),
			wantEvents: []string{"CreatingGroupSnapshot"},
			wantClass:  new("tmpl"),
		},
		{
			name: "selector with matchExpressions",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(func(v *groupsnapshotv1.VolumeGroupSnapshot) {
				v.Spec.Source.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "etcd.io/cluster", Operator: metav1.LabelSelectorOpIn, Values: []string{"main"}},
				}}
			}), dgtEtcdClass()},
			wantContent: dgtContentFor(dgtHandles, snapshotv1.VolumeSnapshotContentDelete, "etcd", dgtSecretAnnotations),
			wantEvents:  []string{"CreatingGroupSnapshot"},
			wantClass:   new("etcd"),
		},
		{
			name:      "other driver's class",
			kube:      dgtCluster(),
			snap:      []runtime.Object{dgtVGS(dgtClassName("hostpath")), dgtEtcdClass(), dgtClass("hostpath", dgtPVDriver, snapshotv1.VolumeSnapshotContentDelete, false, nil)},
			wantClass: new("hostpath"),
		},
		{
			name:      "class does not exist yet",
			kube:      dgtCluster(),
			snap:      []runtime.Object{dgtVGS(dgtClassName("missing")), dgtEtcdClass()},
			wantClass: new("missing"),
		},
		{
			name:        "default class of our driver",
			kube:        dgtCluster(),
			snap:        []runtime.Object{dgtVGS(dgtNoClass), dgtClass("etcd-default", dgtDriver, snapshotv1.VolumeSnapshotContentDelete, true, dgtSecretParams), dgtEtcdClass()},
			wantContent: dgtContentFor(dgtHandles, snapshotv1.VolumeSnapshotContentDelete, "etcd-default", dgtSecretAnnotations),
			wantEvents:  []string{"CreatingGroupSnapshot"},
			wantClass:   new("etcd-default"),
		},
		{
			// The driver stopped between creating the content and naming the class.
			name:        "default class, our content exists, class not yet set",
			kube:        dgtCluster(),
			snap:        []runtime.Object{dgtVGS(dgtNoClass), dgtClass("etcd-default", dgtDriver, snapshotv1.VolumeSnapshotContentDelete, true, nil), ours},
			wantContent: ours,
			wantClass:   new("etcd-default"),
		},
		{
			name: "default class of the volumes' own driver wins",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(dgtNoClass),
				dgtClass("etcd-default", dgtDriver, snapshotv1.VolumeSnapshotContentDelete, true, nil),
				dgtClass("hostpath-default", dgtPVDriver, snapshotv1.VolumeSnapshotContentDelete, true, nil)},
		},
		{
			name: "no default class of our driver",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(dgtNoClass), dgtEtcdClass()},
		},
		{
			name: "two default classes of our driver",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(dgtNoClass),
				dgtClass("a", dgtDriver, snapshotv1.VolumeSnapshotContentDelete, true, nil),
				dgtClass("b", dgtDriver, snapshotv1.VolumeSnapshotContentDelete, true, nil)},
			wantEvents: []string{"AmbiguousDefaultGroupSnapshotClass"},
		},
		{
			name: "already bound",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(func(v *groupsnapshotv1.VolumeGroupSnapshot) {
				v.Status = &groupsnapshotv1.VolumeGroupSnapshotStatus{BoundVolumeGroupSnapshotContentName: &bound}
			}), dgtEtcdClass()},
			wantClass: new("etcd"),
		},
		{
			name: "pre-provisioned",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(func(v *groupsnapshotv1.VolumeGroupSnapshot) {
				v.Spec.Source = groupsnapshotv1.VolumeGroupSnapshotSource{VolumeGroupSnapshotContentName: &preContent}
			}), dgtEtcdClass()},
			wantClass: new("etcd"),
		},
		{
			name: "being deleted",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(func(v *groupsnapshotv1.VolumeGroupSnapshot) {
				v.DeletionTimestamp = &now
				v.Finalizers = []string{"test/keep"}
			}), dgtEtcdClass()},
			wantClass: new("etcd"),
		},
		{
			name:       "no matching PVCs",
			kube:       []runtime.Object{dgtPVC(dgtNamespace, "data-other-0", map[string]string{"etcd.io/cluster": "other"}, corev1.ClaimBound)},
			snap:       []runtime.Object{dgtVGS(), dgtEtcdClass()},
			wantRetry:  true,
			wantEvents: []string{"NoMatchingPersistentVolumeClaims"},
			wantClass:  new("etcd"),
		},
		{
			name: "a PVC not bound",
			kube: []runtime.Object{
				dgtPVC(dgtNamespace, "data-main-0", dgtMain, corev1.ClaimBound),
				dgtPVC(dgtNamespace, "data-main-1", dgtMain, corev1.ClaimPending),
			},
			snap:       []runtime.Object{dgtVGS(), dgtEtcdClass()},
			wantRetry:  true,
			wantEvents: []string{"PersistentVolumeClaimNotBound"},
			wantClass:  new("etcd"),
		},
		{
			name: "secret namespace parameter missing",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(dgtClassName("half")), dgtClass("half", dgtDriver, snapshotv1.VolumeSnapshotContentDelete, false, map[string]string{
				"csi.storage.k8s.io/group-snapshotter-secret-name": "main-client-tls",
			})},
			wantErr:    true,
			wantEvents: []string{"InvalidSecretParameters"},
			wantClass:  new("half"),
		},
		{
			name: "secret name uses an unknown token",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(dgtClassName("bad")), dgtClass("bad", dgtDriver, snapshotv1.VolumeSnapshotContentDelete, false, map[string]string{
				"csi.storage.k8s.io/group-snapshotter-secret-name":      "${pvc.name}",
				"csi.storage.k8s.io/group-snapshotter-secret-namespace": "creds",
			})},
			wantErr:    true,
			wantEvents: []string{"InvalidSecretParameters"},
			wantClass:  new("bad"),
		},
		{
			name:        "content of that name exists, not ours",
			kube:        dgtCluster(),
			snap:        []runtime.Object{dgtVGS(), dgtEtcdClass(), foreign},
			wantContent: foreign,
			wantClass:   new("etcd"),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newDGTFixture(t, tc.kube, tc.snap)
			key := dgtNamespace + "/backup"
			err := f.ctrl.sync(context.Background(), key)
			switch {
			case tc.wantRetry:
				if !errors.Is(err, errDGRetry) {
					t.Fatalf("sync = %v, want a retryable wait", err)
				}
			case tc.wantErr:
				if err == nil || errors.Is(err, errDGRetry) {
					t.Fatalf("sync = %v, want a failure", err)
				}
			case err != nil:
				t.Fatalf("sync: %v", err)
			}

			f.checkClass(t, tc.wantClass)

			// A second pass (resync, restart, a second replica) changes nothing.
			if err2 := f.ctrl.sync(context.Background(), key); (err == nil) != (err2 == nil) {
				t.Fatalf("second sync = %v, first = %v", err2, err)
			}

			got := f.contents(t)
			switch {
			case tc.wantContent == nil && len(got) != 0:
				t.Fatalf("contents = %+v, want none", got)
			case tc.wantContent != nil && len(got) != 1:
				t.Fatalf("got %d contents, want exactly 1: %+v", len(got), got)
			case tc.wantContent != nil:
				dgtCompareContent(t, &got[0], tc.wantContent)
			}

			var reasons []string
			for _, e := range f.events(t) {
				reasons = append(reasons, e.Reason)
				if e.InvolvedObject.Kind != "VolumeGroupSnapshot" || e.InvolvedObject.Name != "backup" || e.InvolvedObject.UID != dgtUID {
					t.Errorf("event %s is about %+v, want the VolumeGroupSnapshot", e.Reason, e.InvolvedObject)
				}
				if wantType := corev1.EventTypeWarning; e.Reason == "CreatingGroupSnapshot" {
					if e.Type != corev1.EventTypeNormal {
						t.Errorf("event %s has type %s, want Normal", e.Reason, e.Type)
					}
				} else if e.Type != wantType {
					t.Errorf("event %s has type %s, want %s", e.Reason, e.Type, wantType)
				}
			}
			if !reflect.DeepEqual(reasons, tc.wantEvents) {
				t.Errorf("event reasons = %q, want %q", reasons, tc.wantEvents)
			}

			f.checkClass(t, tc.wantClass)
		})
	}
}

func (f *dgtFixture) checkClass(t *testing.T, want *string) {
	t.Helper()
	vgs, err := f.snap.GroupsnapshotV1().VolumeGroupSnapshots(dgtNamespace).Get(context.Background(), "backup", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get VolumeGroupSnapshot: %v", err)
	}
	if got := vgs.Spec.VolumeGroupSnapshotClassName; (got == nil) != (want == nil) || (got != nil && *got != *want) {
		t.Errorf("spec.volumeGroupSnapshotClassName = %v, want %v", dgtStr(got), dgtStr(want))
	}
}

func dgtStr(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

func dgtCompareContent(t *testing.T, got, want *groupsnapshotv1.VolumeGroupSnapshotContent) {
	t.Helper()
	if got.Name != want.Name {
		t.Errorf("name = %q, want %q", got.Name, want.Name)
	}
	if !reflect.DeepEqual(got.Labels, want.Labels) {
		t.Errorf("labels = %v, want %v", got.Labels, want.Labels)
	}
	if len(got.Annotations) != 0 || len(want.Annotations) != 0 {
		if !reflect.DeepEqual(got.Annotations, want.Annotations) {
			t.Errorf("annotations = %v, want %v", got.Annotations, want.Annotations)
		}
	}
	if len(got.Finalizers) != 0 {
		t.Errorf("finalizers = %v, want none (the snapshot-controller adds its own)", got.Finalizers)
	}
	if !reflect.DeepEqual(got.Spec, want.Spec) {
		t.Errorf("spec =\n%s\nwant\n%s", dgtSpecString(got.Spec), dgtSpecString(want.Spec))
	}
	if got.Status != nil {
		t.Errorf("status = %+v, want none (the csi-snapshotter calls the driver only while it is empty)", got.Status)
	}
}

func dgtSpecString(s groupsnapshotv1.VolumeGroupSnapshotContentSpec) string {
	return fmt.Sprintf("ref=%+v handles=%v groupHandles=%v class=%s policy=%s driver=%s",
		s.VolumeGroupSnapshotRef, s.Source.VolumeHandles, s.Source.GroupSnapshotHandles, dgtStr(s.VolumeGroupSnapshotClassName), s.DeletionPolicy, s.Driver)
}

// TestDynamicGroupRunConcurrent runs two controllers at once, as a restarted
// driver overlapping its predecessor would: one content, at most one Create call
// per controller, and no failure events.
func TestDynamicGroupRunConcurrent(t *testing.T) {
	kube := kubefake.NewClientset(dgtCluster()...)
	snap := snapfake.NewSimpleClientset(dgtVGS(), dgtEtcdClass())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	errs := make(chan error, 2)
	ctrls := make([]*DynamicGroupController, 2)
	for i := range ctrls {
		c := NewDynamicGroupController(kube, snap, dgtDriver, time.Minute)
		ctrls[i] = c
		go func() { errs <- c.Run(ctx) }()
	}

	// Once both caches hold the content, no sync that starts later creates it; draining the queues
	// then waits for the syncs already under way, so every Create the two will ever send is sent.
	err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		for _, c := range ctrls {
			if _, err := c.contentLister.Get(dgtContent); err != nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("content %s not in both controllers' caches: %v", dgtContent, err)
	}
	for _, c := range ctrls {
		c.queue.ShutDownWithDrain()
	}
	creates := 0
	for _, a := range snap.Actions() {
		if a.GetVerb() == "create" && a.GetResource().Resource == "volumegroupsnapshotcontents" {
			creates++
		}
	}
	if creates < 1 || creates > len(ctrls) {
		t.Errorf("%d Create calls for VolumeGroupSnapshotContents, want 1 to %d (one per controller at most)", creates, len(ctrls))
	}
	list, err := snap.GroupsnapshotV1().VolumeGroupSnapshotContents().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Name != dgtContent {
		t.Fatalf("contents = %+v, want exactly %s", list.Items, dgtContent)
	}
	if got := list.Items[0].Spec.Source.VolumeHandles; !reflect.DeepEqual(got, dgtHandles) {
		t.Errorf("volumeHandles = %v, want %v", got, dgtHandles)
	}
	for _, e := range recordedEvents(t, kube, ctrls[0].recorder, ctrls[1].recorder) {
		if e.Type == corev1.EventTypeWarning {
			t.Errorf("warning event %s: %s", e.Reason, e.Message)
		}
	}

	cancel()
	for range ctrls {
		select {
		case err := <-errs:
			if err != nil {
				t.Errorf("Run = %v, want nil after cancel", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
}

// TestDynamicGroupRunWaitsForBoundClaims shows a pending claim delays the content
// and its binding ends the wait through the PVC watch, not the (here hour-long)
// retry backoff.
func TestDynamicGroupRunWaitsForBoundClaims(t *testing.T) {
	pending := dgtPVC(dgtNamespace, "data-main-1", dgtMain, corev1.ClaimPending)
	kube := kubefake.NewClientset(dgtPVC(dgtNamespace, "data-main-0", dgtMain, corev1.ClaimBound), pending)
	snap := snapfake.NewSimpleClientset(dgtVGS(), dgtEtcdClass())
	c := newDynamicGroupController(kube, snap, dgtDriver, 0,
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Hour, time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		events, err := kube.CoreV1().Events(dgtNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.Reason == "PersistentVolumeClaimNotBound" && e.Type == corev1.EventTypeWarning {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no PersistentVolumeClaimNotBound warning: %v", err)
	}
	if _, err := snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(ctx, dgtContent, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("content exists while a claim is pending (err %v)", err)
	}

	pending = pending.DeepCopy()
	pending.Status.Phase = corev1.ClaimBound
	if _, err := kube.CoreV1().PersistentVolumeClaims(dgtNamespace).UpdateStatus(ctx, pending, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var content *groupsnapshotv1.VolumeGroupSnapshotContent
	err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		content, err = snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(ctx, dgtContent, metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("content not created after the claim was bound: %v", err)
	}
	want := []string{"etcd-test/data-main-0", "etcd-test/data-main-1"}
	if got := content.Spec.Source.VolumeHandles; !reflect.DeepEqual(got, want) {
		t.Errorf("volumeHandles = %v, want %v", got, want)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}
