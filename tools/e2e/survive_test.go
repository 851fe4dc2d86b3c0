package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// surviveTimeout bounds the test: two StatefulSet clusters, a snapshot, a namespace deletion and a
// restore, on a loaded 2-core machine.
const surviveTimeout = 10 * time.Minute

// TestE2ESnapshotSurvivesNamespaceDeletion takes a group snapshot with a Retain class of a cluster in
// its own namespace, deletes the namespace, and checks that the snapshot is still Ready with its
// volume Released and kept (Retain), that a new cluster restored from it in another namespace holds
// every key, and that deleting the snapshot then leaves no volume behind (issue 18, defect 1).
func TestE2ESnapshotSurvivesNamespaceDeletion(t *testing.T) {
	r, _ := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), surviveTimeout)
	defer cancel()
	kube := r.Kube

	name := uniqueName("surv")
	ns := "etcd-" + name
	src, err := r.StartEtcdStatefulSet(ctx, name, ns, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after a failure before the namespace went; a namespace already gone is fine
		if err := src.Delete(cleanupContext(t)); err != nil && !apierrors.IsNotFound(err) && !strings.Contains(err.Error(), "not found") {
			t.Logf("clean-up: %v", err)
		}
	})
	if err := src.InstallSnapshotClasses(ctx); err != nil {
		t.Fatal(err)
	}
	class, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotClasses().Get(ctx, src.SnapshotClassName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// deletionPolicy is immutable: the class is made again with Retain.
	classes := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotClasses()
	if err := classes.Delete(ctx, class.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	class.ObjectMeta = metav1.ObjectMeta{Name: class.Name, Labels: class.Labels, Annotations: class.Annotations}
	class.DeletionPolicy = snapshotv1.VolumeSnapshotContentRetain
	if _, err := classes.Create(ctx, class, metav1.CreateOptions{}); err != nil {
		t.Fatalf("VolumeGroupSnapshotClass %s with deletionPolicy Retain: %v", class.Name, err)
	}
	srcClaim, err := kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, src.ClaimName(0), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	size := srcClaim.Spec.Resources.Requests[corev1.ResourceStorage]

	cli := stsClient(t, src)
	writeKeys(t, ctx, cli, "/survive/k", 0, 40, "v1")
	want, _ := dump(t, ctx, cli)
	cli.Close()

	vgsName := uniqueName("surv-snap")
	if _, err := src.CreateGroupSnapshot(ctx, vgsName); err != nil {
		t.Fatal(err)
	}
	ready, err := r.WaitGroupSnapshotReadyIn(ctx, ns, vgsName)
	if err != nil {
		t.Fatal(err)
	}
	contentName := ptr.Deref(ready.Status.BoundVolumeGroupSnapshotContentName, "")
	rec, err := r.GroupSnapshotRecord(ctx, ready)
	if err != nil {
		t.Fatal(err)
	}
	// Whatever happens below, the snapshot is deleted at the end through its content, whose policy
	// then says Delete, so that the driver removes it and sets its volume's policy back.
	t.Cleanup(func() { deleteSnapshotOfRetainedContent(t, r, contentName, rec) })

	// The driver keeps the snapshot's volume once the snapshot is Ready.
	var pvName string
	if err := wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		cur, err := r.SnapshotRecord(ctx, rec.ID)
		if err != nil || cur.Volume == "" {
			return false, err
		}
		pv, err := kube.CoreV1().PersistentVolumes().Get(ctx, cur.Volume, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		pvName = pv.Name
		return pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimRetain, nil
	}); err != nil {
		t.Fatalf("snapshot %s: its volume was not kept with reclaim policy Retain: %v", rec.ID, err)
	}

	// The user deletes the etcd cluster's namespace.
	t.Logf("deleting namespace %s", ns)
	if err := kube.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		t.Fatalf("namespace %s was not deleted: %v", ns, err)
	}

	// The content still says readyToUse, the record Ready, the volume Released and Retain.
	content, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(ctx, contentName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("VolumeGroupSnapshotContent %s after the namespace went: %v", contentName, err)
	}
	if content.Status == nil || !ptr.Deref(content.Status.ReadyToUse, false) {
		t.Errorf("VolumeGroupSnapshotContent %s is not readyToUse after the namespace went: %+v", contentName, content.Status)
	}
	var pv *corev1.PersistentVolume
	if err := wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		pv, err = kube.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		return err == nil && pv.Status.Phase == corev1.VolumeReleased, err
	}); err != nil {
		t.Fatalf("PersistentVolume %s of the snapshot is not Released: %v (%+v)", pvName, err, pv)
	}
	if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		t.Errorf("PersistentVolume %s reclaim policy %s; want Retain", pvName, pv.Spec.PersistentVolumeReclaimPolicy)
	}
	after, err := r.SnapshotRecord(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Phase != driver.PhaseReady || after.Volume != pvName || after.VolumeReclaimPolicy != string(corev1.PersistentVolumeReclaimDelete) {
		t.Errorf("record after the namespace went: phase %s, volume %q (policy %q), error %q; want Ready on %s (Delete)",
			after.Phase, after.Volume, after.VolumeReclaimPolicy, after.Error, pvName)
	}

	// Restore into a new namespace from the snapshot id (the VolumeGroupSnapshot went with the namespace).
	env := &restoreEnv{r: r, ctx: ctx}
	env.kubeconfig = restorerKubeconfig(t, ctx, r)
	dst, targetArgs := newRestoreTarget(t, ctx, r, "surv-restored", "surv-copy")
	args := append([]string{"-snapshot-id=" + rec.ID, "-size=" + size.String()}, targetArgs...)
	if sc := ptr.Deref(srcClaim.Spec.StorageClassName, ""); sc != "" {
		args = append(args, "-storage-class="+sc)
	}
	if code, _, _ := env.restore(t, args...); code != 0 {
		t.Fatalf("restore from the snapshot of the deleted namespace exited %d", code)
	}
	if err := dst.Start(ctx); err != nil {
		t.Fatal(err)
	}
	dcli := stsClient(t, dst)
	got, _ := dump(t, ctx, dcli)
	dcli.Close()
	delete(got, readyKey)
	delete(want, readyKey)
	if d := diffKV(got, want); d != "" {
		t.Errorf("restored cluster's keys differ from the snapshot's: %s", d)
	}

	// Deleting the snapshot gives the volume its own policy back, and it goes.
	deleteSnapshotOfRetainedContent(t, r, contentName, rec)
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := kube.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		t.Errorf("PersistentVolume %s of the deleted snapshot is left behind: %v", pvName, err)
	}
}

// deleteSnapshotOfRetainedContent deletes a VolumeGroupSnapshotContent of policy Retain, and the members'
// VolumeSnapshotContents that outlived their VolumeSnapshots, as a user who wants the snapshot gone
// does: each policy set to Delete first, so the driver is asked to delete the snapshot, leaving the
// deletion-secret annotations, which name the class's Secret in the deleted namespace, as they are
// (the driver removes them from its content once it is being deleted, so the csi-snapshotter deletes
// without that Secret; members never read it); then waits for the record to go. Already gone is fine.
func deleteSnapshotOfRetainedContent(t *testing.T, r *rig.Rig, name string, rec *driver.Record) {
	t.Helper()
	ctx := cleanupContext(t)
	id := rec.ID
	members := map[string]bool{}
	for _, s := range rec.Sources {
		members[s.SnapshotID] = true
	}
	if list, err := r.Snap.SnapshotV1().VolumeSnapshotContents().List(ctx, metav1.ListOptions{}); err == nil {
		for _, c := range list.Items {
			if c.Status == nil || !members[ptr.Deref(c.Status.SnapshotHandle, "")] {
				continue
			}
			c.Spec.DeletionPolicy = snapshotv1.VolumeSnapshotContentDelete
			if _, err := r.Snap.SnapshotV1().VolumeSnapshotContents().Update(ctx, &c, metav1.UpdateOptions{}); err != nil {
				t.Errorf("clean-up: VolumeSnapshotContent %s: set deletionPolicy Delete: %v", c.Name, err)
			}
			if err := r.Snap.SnapshotV1().VolumeSnapshotContents().Delete(ctx, c.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("clean-up: delete VolumeSnapshotContent %s: %v", c.Name, err)
			}
		}
	}
	contents := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotContents()
	content, err := contents.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		t.Errorf("clean-up: VolumeGroupSnapshotContent %s: %v", name, err)
		return
	}
	content.Spec.DeletionPolicy = snapshotv1.VolumeSnapshotContentDelete
	if _, err := contents.Update(ctx, content, metav1.UpdateOptions{}); err != nil {
		t.Errorf("clean-up: VolumeGroupSnapshotContent %s: set deletionPolicy Delete: %v", name, err)
		return
	}
	if err := contents.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("clean-up: delete VolumeGroupSnapshotContent %s: %v", name, err)
		return
	}
	if err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := r.Kube.CoreV1().ConfigMaps(rig.DriverNamespace).Get(ctx, id, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		t.Errorf("clean-up: the record of snapshot %s is left after its content was deleted: %v", id, err)
	}
}
