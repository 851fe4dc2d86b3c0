package driver

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// The dynamic group tests' world is the fixtures' (world_test.go), without an etcd cluster.
const (
	dgtDriver    = csiTestDriverName
	dgtPVDriver  = fxOtherDriver
	dgtNamespace = fxNS
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
