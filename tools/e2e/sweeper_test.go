package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// sweeperRemoved reads sweeper_removed_total by kind.
func sweeperRemoved(t *testing.T, ctx context.Context, r *rig.Rig) map[string]float64 {
	t.Helper()
	samples, err := scrape(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, s := range find(samples, "etcd_snapshot_driver_sweeper_removed_total", nil) {
		out[s.labels["kind"]] = s.value
	}
	for _, kind := range []string{"pending", "rollback", "content", "snapshot"} {
		if _, ok := out[kind]; !ok {
			t.Fatalf("/metrics has no sweeper_removed_total{kind=%q}", kind)
		}
	}
	return out
}

// TestE2ESweeperCollectsAbandoned leaves what a VolumeGroupSnapshot deleted before upstream bound it
// leaves: the VolumeGroupSnapshotContent the driver pre-created for it (upstream v8.7.0 treats it as
// bound to a missing group snapshot and does nothing), for which the csi-snapshotter then takes a
// snapshot. After the grace period (the shared rig's driver restarted with -sweep-grace for the test)
// the driver's sweeper has removed the content, the snapshot's Job, PVC, Secret and record, and
// counted both once.
func TestE2ESweeperCollectsAbandoned(t *testing.T) {
	const grace = 20 * time.Second
	// Not a rig of its own: a second rig in this process races the first on client-go's global scheme
	// (tools/rig/provisioner/provisioner.go New).
	r, ctx := setup(t)
	if err := r.RestartDriverWith("-sweep-grace=" + grace.String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.RestartDriverWith(); err != nil {
			t.Errorf("clean-up: restoring the driver's flags: %v", err)
		}
	})
	className, err := r.GroupSnapshotClassName()
	if err != nil {
		t.Fatal(err)
	}
	class, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotClasses().Get(ctx, className, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// A VolumeGroupSnapshot that is gone. Its selector matches nothing, so that no controller makes a
	// content for it while it exists; the content it would have had is made below, as the race leaves it.
	vgsClient := r.Snap.GroupsnapshotV1().VolumeGroupSnapshots(r.Namespace)
	vgs, err := vgsClient.Create(ctx, &groupsnapshotv1.VolumeGroupSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("abandoned"), Namespace: r.Namespace},
		Spec: groupsnapshotv1.VolumeGroupSnapshotSpec{
			VolumeGroupSnapshotClassName: ptr.To(className),
			Source: groupsnapshotv1.VolumeGroupSnapshotSource{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{rig.ClusterLabel: uniqueName("no-such-cluster")}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := vgsClient.Delete(ctx, vgs.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := r.WaitGroupSnapshotGone(ctx, r.Namespace, vgs.Name); err != nil {
		t.Fatal(err)
	}

	// The content the dynamic group watch (driver/dynamicgroup.go buildContent) makes, for this cluster.
	pvcs, err := clusterPVCs(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	var handles []string
	for _, p := range pvcs {
		handles = append(handles, r.Namespace+"/"+p)
	}
	slices.Sort(handles)
	before := sweeperRemoved(t, ctx, r)
	contents := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotContents()
	content, err := contents.Create(ctx, &groupsnapshotv1.VolumeGroupSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{
			Name:   "groupsnapcontent-" + string(vgs.UID),
			Labels: map[string]string{"app.kubernetes.io/managed-by": "etcd-snapshot-driver"},
			Annotations: map[string]string{
				"groupsnapshot.storage.kubernetes.io/deletion-secret-name":      class.Parameters["csi.storage.k8s.io/group-snapshotter-secret-name"],
				"groupsnapshot.storage.kubernetes.io/deletion-secret-namespace": class.Parameters["csi.storage.k8s.io/group-snapshotter-secret-namespace"],
			},
		},
		Spec: groupsnapshotv1.VolumeGroupSnapshotContentSpec{
			VolumeGroupSnapshotRef: corev1.ObjectReference{APIVersion: "groupsnapshot.storage.k8s.io/v1", Kind: "VolumeGroupSnapshot",
				Namespace: vgs.Namespace, Name: vgs.Name, UID: vgs.UID, ResourceVersion: vgs.ResourceVersion},
			Source:                       groupsnapshotv1.VolumeGroupSnapshotContentSource{VolumeHandles: handles},
			VolumeGroupSnapshotClassName: ptr.To(className),
			DeletionPolicy:               snapshotv1.VolumeSnapshotContentDelete,
			Driver:                       class.Driver,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The grace period runs from the content's creationTimestamp, which the API server truncates to the
	// second: measure from there, as the sweeper does.
	created := content.CreationTimestamp.Time

	// The sidecar takes the snapshot for it: it does not look at the VolumeGroupSnapshot.
	id := ""
	err = wait.PollUntilContextTimeout(ctx, pollInterval, grace, true, func(ctx context.Context) (bool, error) {
		c, err := contents.Get(ctx, content.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil // gone already: checked below
		}
		if c.Status != nil {
			id = ptr.Deref(c.Status.VolumeGroupSnapshotHandle, "")
		}
		return id != "", nil
	})
	if err != nil {
		t.Fatalf("the csi-snapshotter recorded no group snapshot handle on %s within %s: %v", content.Name, grace, err)
	}
	objs, err := snapshotObjects(ctx, r, id)
	if err != nil || len(objs) == 0 {
		t.Fatalf("snapshot %s of the abandoned content has no objects to sweep (%v, %v)", id, describe(objs), err)
	}
	t.Logf("the csi-snapshotter took snapshot %s for abandoned content %s: %s", id, content.Name, describe(objs))

	waitGroupContentGone(t, ctx, r, content.Name)
	if err := waitSnapshotObjectsGone(ctx, r, id); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(created); took < grace {
		t.Errorf("content %s was removed %s after its creation, before the grace period %s", content.Name, took.Round(time.Millisecond), grace)
	}
	after := sweeperRemoved(t, ctx, r)
	for kind, want := range map[string]float64{"content": 1, "snapshot": 1, "pending": 0, "rollback": 0} {
		if got := after[kind] - before[kind]; got != want {
			t.Errorf("sweeper_removed_total{kind=%q} grew by %v, want %v", kind, got, want)
		}
	}
	t.Logf("content and snapshot swept %s after the content appeared (grace %s)", time.Since(created).Round(time.Second), grace)
}
