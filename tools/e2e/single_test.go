package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// TestE2ESingleSnapshot takes a VolumeSnapshot of one member PVC with the example VolumeSnapshotClass:
// the snapshot-controller and csi-snapshotter call CreateSnapshot with the PV's handle and the whole
// cluster is saved.
func TestE2ESingleSnapshot(t *testing.T) {
	r, ctx := setup(t)
	class, err := r.SnapshotClassName()
	if err != nil {
		t.Fatal(err)
	}
	claim := r.Etcd.ClaimName(0)
	name := uniqueName("e2e-single")
	vs := &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.Namespace},
		Spec: snapshotv1.VolumeSnapshotSpec{
			Source:                  snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To(claim)},
			VolumeSnapshotClassName: ptr.To(class),
		},
	}
	client := r.Snap.SnapshotV1().VolumeSnapshots(r.Namespace)
	if _, err := client.Create(ctx, vs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteSingle(t, cleanupContext(t), r, name) })

	ready, err := waitSnapshotReady(ctx, r, name)
	if err != nil {
		t.Fatal(err)
	}
	if ready.Status.Error != nil {
		t.Errorf("ready VolumeSnapshot carries status.error %q", ptr.Deref(ready.Status.Error.Message, ""))
	}
	rec, err := r.SingleSnapshotRecord(ctx, ready)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Phase != driver.PhaseReady || rec.Group || rec.Error != "" {
		t.Fatalf("record %s: phase %s, group %v, error %q; want a Ready single snapshot", rec.ID, rec.Phase, rec.Group, rec.Error)
	}
	if len(rec.Sources) != 1 || rec.Sources[0].PVC != claim || rec.Sources[0].SnapshotID != rec.ID {
		t.Errorf("record %s sources = %+v, want one source: PVC %s with snapshot id %s", rec.ID, rec.Sources, claim, rec.ID)
	}
	if rec.Namespace != r.Namespace || rec.Cluster != rig.EtcdClusterName {
		t.Errorf("record %s is of cluster %s/%s, want %s/%s", rec.ID, rec.Namespace, rec.Cluster, r.Namespace, rig.EtcdClusterName)
	}
	if ready.Status.RestoreSize == nil || ready.Status.RestoreSize.Value() != rec.SizeBytes {
		t.Logf("VolumeSnapshot restoreSize %v, record sizeBytes %d", ready.Status.RestoreSize, rec.SizeBytes)
	}
	file, res := verifiedFile(t, ctx, r, rec)
	if res.SHA256 != rec.SHA256 || res.Revision != rec.Revision {
		t.Errorf("snapshot file %s: sha256 %s revision %d; record: sha256 %s revision %d", file, res.SHA256, res.Revision, rec.SHA256, rec.Revision)
	}
}

// verifiedFile locates the snapshot file of rec and reads it as the snapshot Job's verify does.
func verifiedFile(t *testing.T, ctx context.Context, r *rig.Rig, rec *driver.Record) (string, *driver.VerifyResult) {
	t.Helper()
	file, err := r.SnapshotFilePath(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	res, err := driver.VerifySnapshot(file)
	if err != nil {
		t.Fatal(err)
	}
	return file, res
}

// waitSnapshotReady watches the VolumeSnapshot name until it is ready to use.
func waitSnapshotReady(ctx context.Context, r *rig.Rig, name string) (*snapshotv1.VolumeSnapshot, error) {
	client := r.Snap.SnapshotV1().VolumeSnapshots(r.Namespace)
	var last *snapshotv1.VolumeSnapshot
	_, err := rig.WatchNamed(ctx, name,
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return client.List(ctx, o) },
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return client.Watch(ctx, o) },
		&snapshotv1.VolumeSnapshot{},
		func(ev watch.Event) (bool, error) {
			vs, ok := ev.Object.(*snapshotv1.VolumeSnapshot)
			if !ok {
				return false, nil
			}
			if ev.Type == watch.Deleted {
				return false, fmt.Errorf("VolumeSnapshot %s deleted while waiting for it", name)
			}
			last = vs
			return vs.Status != nil && ptr.Deref(vs.Status.ReadyToUse, false), nil
		})
	if err != nil {
		msg := "no status"
		if last != nil && last.Status != nil {
			msg = "readyToUse " + boolString(last.Status.ReadyToUse)
			if last.Status.Error != nil {
				msg += ", error " + ptr.Deref(last.Status.Error.Message, "")
			}
		}
		return last, fmt.Errorf("VolumeSnapshot %s/%s not ready (%s): %w", r.Namespace, name, msg, err)
	}
	return last, nil
}

// deleteSingle deletes a VolumeSnapshot and waits until it, its content and the driver's objects are gone.
func deleteSingle(t *testing.T, ctx context.Context, r *rig.Rig, name string) {
	t.Helper()
	client := r.Snap.SnapshotV1().VolumeSnapshots(r.Namespace)
	vs, err := client.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		t.Errorf("clean-up: %v", err)
		return
	}
	content, id := "", ""
	if vs.Status != nil {
		content = ptr.Deref(vs.Status.BoundVolumeSnapshotContentName, "")
	}
	if content != "" {
		if c, err := r.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, content, metav1.GetOptions{}); err == nil && c.Status != nil {
			id = ptr.Deref(c.Status.SnapshotHandle, "")
		}
	}
	if content != "" {
		waitSnapshotContentSettled(ctx, r, content)
	}
	if err := client.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("clean-up: %v", err)
		return
	}
	if err := rig.WaitGone(ctx, "VolumeSnapshot "+name, name,
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return client.List(ctx, o) },
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return client.Watch(ctx, o) },
		&snapshotv1.VolumeSnapshot{}); err != nil {
		t.Errorf("clean-up: %v", err)
	}
	if content != "" {
		cc := r.Snap.SnapshotV1().VolumeSnapshotContents()
		if err := rig.WaitGone(ctx, "VolumeSnapshotContent "+content, content,
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return cc.List(ctx, o) },
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return cc.Watch(ctx, o) },
			&snapshotv1.VolumeSnapshotContent{}); err != nil {
			t.Errorf("clean-up: %v", err)
		}
	}
	if id != "" {
		if err := waitSnapshotObjectsGone(ctx, r, id); err != nil {
			t.Errorf("clean-up of VolumeSnapshot %s (%s): %v", name, id, err)
		}
	}
}

// snapshotBeingCreated is the csi-snapshotter's annotation on a VolumeSnapshotContent whose
// CreateSnapshot call is unanswered (external-snapshotter pkg/utils/util.go
// AnnVolumeSnapshotBeingCreated).
const snapshotBeingCreated = "snapshot.storage.kubernetes.io/volumesnapshot-being-created"

// waitSnapshotContentSettled waits, for at most a minute, until the content carries no being-created
// annotation, for the reason rig.DeleteGroupSnapshot gives: csi-snapshotter v8.7.0 can miss a
// deletion that arrives while it is set.
func waitSnapshotContentSettled(ctx context.Context, r *rig.Rig, name string) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cc := r.Snap.SnapshotV1().VolumeSnapshotContents()
	_, _ = rig.WatchNamed(ctx, name,
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return cc.List(ctx, o) },
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return cc.Watch(ctx, o) },
		&snapshotv1.VolumeSnapshotContent{},
		func(ev watch.Event) (bool, error) {
			c, ok := ev.Object.(*snapshotv1.VolumeSnapshotContent)
			if ev.Type == watch.Deleted || !ok {
				return ev.Type == watch.Deleted, nil
			}
			_, creating := c.Annotations[snapshotBeingCreated]
			return !creating, nil
		})
}
