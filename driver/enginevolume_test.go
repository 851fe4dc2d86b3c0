package driver

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// newBoundPV is a provisioned PV of reclaim policy policy bound to the PVC ns/claim, as the PV
// controller leaves it.
func newBoundPV(name, ns, claim string, policy corev1.PersistentVolumeReclaimPolicy) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("128Mi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: policy,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "hostpath.example.com", VolumeHandle: "vol-" + name}},
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: ns, Name: claim},
		},
		Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeBound},
	}
}

// bindSnapshotPVC plays the PV controller for rec's snapshot PVC: a PV of reclaim policy policy, bound.
func (f *fixture) bindSnapshotPVC(rec *Record, pvName string, policy corev1.PersistentVolumeReclaimPolicy) {
	f.t.Helper()
	ctx := context.Background()
	if _, err := f.admin.CoreV1().PersistentVolumes().Create(ctx, newBoundPV(pvName, rec.Namespace, snapshotPVCName(rec.ID), policy), metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	pvc, err := f.admin.CoreV1().PersistentVolumeClaims(rec.Namespace).Get(ctx, snapshotPVCName(rec.ID), metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	pvc.Spec.VolumeName = pvName
	pvc.Status.Phase = corev1.ClaimBound
	if _, err := f.admin.CoreV1().PersistentVolumeClaims(rec.Namespace).Update(ctx, pvc, metav1.UpdateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// reclaimPolicy reads the reclaim policy of PV name from the API server, "" when it is gone.
func (f *fixture) reclaimPolicy(name string) corev1.PersistentVolumeReclaimPolicy {
	f.t.Helper()
	pv, err := f.admin.CoreV1().PersistentVolumes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return ""
	}
	return pv.Spec.PersistentVolumeReclaimPolicy
}

// readySnapshotOnVolume creates a group snapshot whose PVC is bound to PV pvName (reclaim policy
// Delete), lets its Job complete and waits until the record is Ready and names the volume.
func readySnapshotOnVolume(t *testing.T, f *fixture, tc *testCluster, name, pvName string) *Record {
	t.Helper()
	rec := f.create(groupRequest(tc, name))
	f.bindSnapshotPVC(rec, pvName, corev1.PersistentVolumeReclaimDelete)
	f.finishJob(rec.ID, rec.ID+"-abcde", succeededPod(t, takeVerifiedSnapshot(t, tc)), batchv1.JobCondition{Type: batchv1.JobComplete})
	return f.waitRecord(rec.ID, func(r *Record) bool { return r.Phase == PhaseReady && r.Volume != "" })
}

// A Ready snapshot keeps its volume with reclaim policy Retain and records the policy it had, so
// that deleting its PVC (with the etcd namespace) leaves the file; the snapshot stays Ready. Deleting
// the snapshot sets the policy back to Delete, so the Released volume is reclaimed and nothing leaks;
// another snapshot's volume is never touched.
func TestReadySnapshotKeepsItsVolume(t *testing.T) {
	f, tc := startEngineWithEtcd(t)
	other := newBoundPV("pv-other", fxNS, "etcds-0123456789abcdef0123456789abcdef", corev1.PersistentVolumeReclaimDelete)
	if _, err := f.admin.CoreV1().PersistentVolumes().Create(context.Background(), other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ready := readySnapshotOnVolume(t, f, tc, "groupsnapshot-keep", "pv-snap")
	if ready.Volume != "pv-snap" || ready.VolumeReclaimPolicy != string(corev1.PersistentVolumeReclaimDelete) {
		t.Fatalf("record volume %q policy %q; want pv-snap, Delete", ready.Volume, ready.VolumeReclaimPolicy)
	}
	waitFor(t, "PV pv-snap to be Retain", func() bool { return f.reclaimPolicy("pv-snap") == corev1.PersistentVolumeReclaimRetain })

	// The etcd namespace goes: the PVC is deleted, the PV is Released and kept.
	ctx := context.Background()
	if err := f.admin.CoreV1().PersistentVolumeClaims(fxNS).Delete(ctx, snapshotPVCName(ready.ID), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	pv, err := f.admin.CoreV1().PersistentVolumes().Get(ctx, "pv-snap", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pv.Status.Phase = corev1.VolumeReleased
	if _, err := f.admin.CoreV1().PersistentVolumes().UpdateStatus(ctx, pv, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := f.admin.BatchV1().Jobs(fxNS).Delete(ctx, snapshotJobName(ready.ID), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if got, err := f.engine.Get(f.ctx, ready.ID); err != nil || got.Phase != PhaseReady {
			t.Fatalf("after the PVC went (its volume kept): %+v, %v; want Ready", got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	if err := f.engine.Delete(f.ctx, ready.ID); err != nil {
		t.Fatal(err)
	}
	if got := f.reclaimPolicy("pv-snap"); got != corev1.PersistentVolumeReclaimDelete {
		t.Errorf("after Delete PV pv-snap is %q; want its own policy Delete back", got)
	}
	if got := f.reclaimPolicy("pv-other"); got != corev1.PersistentVolumeReclaimDelete {
		t.Errorf("PV pv-other of another snapshot is %q; want it untouched (Delete)", got)
	}
	if f.exists("ConfigMap", fxMetaNS, ready.ID) {
		t.Errorf("record %s left after Delete", ready.ID)
	}
}

// A Ready snapshot whose volume is deleted anyway turns Lost: the record says which volume went, the
// lost counter grows, Create and Get answer it as not ready with an error saying it is lost, and
// Delete still removes it.
func TestReadySnapshotWithoutVolumeIsLost(t *testing.T) {
	f, tc := startEngineWithEtcd(t)
	req := groupRequest(tc, "groupsnapshot-lost")
	ready := readySnapshotOnVolume(t, f, tc, req.Name, "pv-lost")
	waitFor(t, "PV pv-lost to be Retain", func() bool { return f.reclaimPolicy("pv-lost") == corev1.PersistentVolumeReclaimRetain })
	before := testutil.ToFloat64(snapshotsLost)

	ctx := context.Background()
	if err := f.admin.CoreV1().PersistentVolumeClaims(fxNS).Delete(ctx, snapshotPVCName(ready.ID), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := f.admin.CoreV1().PersistentVolumes().Delete(ctx, "pv-lost", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	lost := f.waitRecord(ready.ID, func(r *Record) bool { return r.Phase != PhaseReady })
	if lost.Phase != PhaseLost || !strings.Contains(lost.Error, "pv-lost") || lost.ErrorCode != codes.DataLoss.String() {
		t.Fatalf("record after its volume went: phase %s, error %q (%s); want Lost naming pv-lost, DataLoss", lost.Phase, lost.Error, lost.ErrorCode)
	}
	if lost.ReadyToUse() {
		t.Error("a Lost record is ready to use")
	}
	if got := waitCounter(t, func() float64 { return testutil.ToFloat64(snapshotsLost) }, before, 1); got != before+1 {
		t.Errorf("snapshots_lost_total went from %v to %v; want +1", before, got)
	}
	_, err := f.engine.Create(f.ctx, req)
	if status.Code(err) != codes.DataLoss || !strings.Contains(err.Error(), "is lost") {
		t.Errorf("Create of a Lost snapshot: %v; want DataLoss saying it is lost", err)
	}
	if err := lost.Err(); status.Code(err) != codes.DataLoss || !strings.Contains(err.Error(), "pv-lost") {
		t.Errorf("Err() of a Lost record = %v", err)
	}
	if err := f.engine.Delete(f.ctx, ready.ID); err != nil {
		t.Fatal(err)
	}
	if f.exists("ConfigMap", fxMetaNS, ready.ID) {
		t.Errorf("record %s left after Delete", ready.ID)
	}
}

// The CSI answers for a Lost group snapshot: GetVolumeGroupSnapshot, GetSnapshot and ListSnapshots
// of a member answer DATA_LOSS saying it is lost and why; a full listing leaves it out; the
// snapshot can still be deleted.
func TestLostSnapshotCSIAnswers(t *testing.T) {
	v0 := fxNS + "/data-main-0"
	lost := listRecord("g-lost", true, PhaseLost, v0)
	lost.Error, lost.ErrorCode = "its PersistentVolume pv-gone is gone", codes.DataLoss.String()
	lost.Volume, lost.VolumeReclaimPolicy = "pv-gone", string(corev1.PersistentVolumeReclaimDelete)
	e := startCSI(t, listWorld(t, lost))
	ctx := context.Background()
	member := lost.Sources[0].SnapshotID

	_, err := e.group.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: lost.ID})
	wantCode(t, err, codes.DataLoss, lost.ID, "is lost", "pv-gone")
	_, err = e.ctrl.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: member})
	wantCode(t, err, codes.DataLoss, "is lost", "pv-gone")
	_, err = e.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SnapshotId: member})
	wantCode(t, err, codes.DataLoss, "is lost", "pv-gone")
	all, err := e.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{})
	if err != nil || len(all.GetEntries()) != 0 {
		t.Errorf("full listing with only a Lost snapshot: %v, %v; want it left out", all, err)
	}
	if _, err := e.group.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: lost.ID}); err != nil {
		t.Errorf("deleting a Lost snapshot: %v", err)
	}
}
