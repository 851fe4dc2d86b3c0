package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// testTimeout bounds one test; CI is a loaded 2-core machine where one snapshot takes seconds to tens
// of seconds.
const testTimeout = 4 * time.Minute

// cleanupTimeout bounds the clean-up of one test, which runs after the test's context may be over.
const cleanupTimeout = 3 * time.Minute

// pollInterval is how often a condition no watch can express is re-checked.
const pollInterval = 250 * time.Millisecond

func TestMain(m *testing.M) { rig.Main(m) }

// setup returns the shared rig with the example classes installed and a context for the test.
func setup(t *testing.T) (*rig.Rig, context.Context) {
	t.Helper()
	r := rig.ForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	if err := r.InstallExampleClasses(ctx); err != nil {
		t.Fatalf("install example classes: %v", err)
	}
	return r, ctx
}

// uniqueName is base plus a random suffix, so that a rerun never meets an object of an earlier run.
func uniqueName(base string) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base + "-" + hex.EncodeToString(b)
}

// cleanupContext is a fresh context for t.Cleanup functions.
func cleanupContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	t.Cleanup(cancel)
	return ctx
}

// deleteAtCleanup registers as t's clean-up the deletion of the what name by del (a typed client's
// Delete); an object already gone is fine.
func deleteAtCleanup(t *testing.T, what, name string, del func(context.Context, string, metav1.DeleteOptions) error) {
	t.Cleanup(func() {
		if err := del(cleanupContext(t), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("clean-up: delete %s %s: %v", what, name, err)
		}
	})
}

// readyGroup creates a dynamic VolumeGroupSnapshot of the cluster under test, registers its deletion
// (and the wait for everything the driver made for it to go) as clean-up, and waits until it is ready.
func readyGroup(t *testing.T, ctx context.Context, r *rig.Rig, name string) (*groupsnapshotv1.VolumeGroupSnapshot, *driver.Record) {
	t.Helper()
	vgs := createGroup(t, ctx, r, name)
	ready, err := r.WaitGroupSnapshotReady(ctx, vgs.Name)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := r.GroupSnapshotRecord(ctx, ready)
	if err != nil {
		t.Fatal(err)
	}
	return ready, rec
}

// createGroup creates a dynamic VolumeGroupSnapshot and registers its clean-up.
func createGroup(t *testing.T, ctx context.Context, r *rig.Rig, name string) *groupsnapshotv1.VolumeGroupSnapshot {
	t.Helper()
	vgs, err := r.CreateGroupSnapshot(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteGroup(t, cleanupContext(t), r, name) })
	return vgs
}

// deleteGroup deletes a VolumeGroupSnapshot and waits until it, its content (deletionPolicy Delete)
// and every object the driver made for it are gone. It is a no-op for a group already deleted.
func deleteGroup(t *testing.T, ctx context.Context, r *rig.Rig, name string) {
	t.Helper()
	vgs, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshots(r.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		t.Errorf("clean-up: %v", err)
		return
	}
	content := "groupsnapcontent-" + string(vgs.UID)
	if vgs.Status != nil && ptr.Deref(vgs.Status.BoundVolumeGroupSnapshotContentName, "") != "" {
		content = *vgs.Status.BoundVolumeGroupSnapshotContentName
	}
	id := ""
	if c, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(ctx, content, metav1.GetOptions{}); err == nil && c.Status != nil {
		id = ptr.Deref(c.Status.VolumeGroupSnapshotHandle, "")
		if c.Spec.DeletionPolicy != snapshotv1.VolumeSnapshotContentDelete {
			content = "" // Retain: whoever made it deletes it
		}
	}
	if err := r.DeleteGroupSnapshot(ctx, name); err != nil {
		t.Errorf("clean-up: %v", err)
		return
	}
	if content != "" {
		waitGroupContentGone(t, ctx, r, content)
	}
	if id != "" {
		if err := waitSnapshotObjectsGone(ctx, r, id); err != nil {
			t.Errorf("clean-up of group %s (%s): %v", name, id, err)
		}
	}
}

func waitGroupContentGone(t *testing.T, ctx context.Context, r *rig.Rig, name string) {
	t.Helper()
	c := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotContents()
	err := rig.WaitGone(ctx, "VolumeGroupSnapshotContent "+name, name,
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return c.List(ctx, o) },
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return c.Watch(ctx, o) },
		&groupsnapshotv1.VolumeGroupSnapshotContent{})
	if err != nil {
		t.Errorf("clean-up: %v", err)
	}
}

// snapshotObjects lists, by kind, the UIDs of the objects labelled with snapshot id: its Job, Secret
// and PVC in the etcd namespace and its metadata ConfigMap.
func snapshotObjects(ctx context.Context, r *rig.Rig, id string) (map[string]types.UID, error) {
	sel := metav1.ListOptions{LabelSelector: labels.Set{rig.SnapshotIDLabel: id}.String()}
	out := map[string]types.UID{}
	jobs, err := r.Kube.BatchV1().Jobs(r.Namespace).List(ctx, sel)
	if err != nil {
		return nil, err
	}
	for _, o := range jobs.Items {
		out["Job "+o.Name] = o.UID
	}
	secrets, err := r.Kube.CoreV1().Secrets(r.Namespace).List(ctx, sel)
	if err != nil {
		return nil, err
	}
	for _, o := range secrets.Items {
		out["Secret "+o.Name] = o.UID
	}
	pvcs, err := r.Kube.CoreV1().PersistentVolumeClaims(r.Namespace).List(ctx, sel)
	if err != nil {
		return nil, err
	}
	for _, o := range pvcs.Items {
		out["PersistentVolumeClaim "+o.Name] = o.UID
	}
	cms, err := r.Kube.CoreV1().ConfigMaps(rig.DriverNamespace).List(ctx, sel)
	if err != nil {
		return nil, err
	}
	for _, o := range cms.Items {
		out["ConfigMap "+o.Name] = o.UID
	}
	return out, nil
}

// waitSnapshotObjectsGone waits until no Job, Secret, PVC or ConfigMap of snapshot id is left.
func waitSnapshotObjectsGone(ctx context.Context, r *rig.Rig, id string) error {
	var left map[string]types.UID
	err := wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		var err error
		left, err = snapshotObjects(ctx, r, id)
		return err == nil && len(left) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("objects of snapshot %s still there: %s: %w", id, describe(left), err)
	}
	return nil
}

func describe(objs map[string]types.UID) string {
	var names []string
	for n := range objs {
		names = append(names, n)
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// memberSnapshots returns the VolumeSnapshots the snapshot-controller made for a group: those in its
// namespace owned by it.
func memberSnapshots(ctx context.Context, r *rig.Rig, vgs *groupsnapshotv1.VolumeGroupSnapshot) ([]snapshotv1.VolumeSnapshot, error) {
	list, err := r.Snap.SnapshotV1().VolumeSnapshots(vgs.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []snapshotv1.VolumeSnapshot
	for _, vs := range list.Items {
		for _, ref := range vs.OwnerReferences {
			if ref.UID == vgs.UID {
				out = append(out, vs)
				break
			}
		}
	}
	return out, nil
}

// clusterPVCs returns the names of the PVCs of the etcd cluster under test.
func clusterPVCs(ctx context.Context, r *rig.Rig) ([]string, error) {
	list, err := r.Kube.CoreV1().PersistentVolumeClaims(r.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: labels.Set{rig.ClusterLabel: rig.EtcdClusterName}.String(),
	})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, p := range list.Items {
		names = append(names, p.Name)
	}
	return names, nil
}
