package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

const (
	// nsDeleteRounds is how many namespaces TestE2ENamespaceDeletionCompletes deletes in a row.
	nsDeleteRounds = 10
	// nsDeleteLimit is how long one namespace deletion may take.
	nsDeleteLimit = time.Minute
	// nsDeleteTimeout bounds the whole test: ten one-member clusters started, snapshotted and deleted
	// on a loaded 2-core machine.
	nsDeleteTimeout = 12 * time.Minute
	// nsCredentialsRoleBinding is the example credentials RoleBinding (manifests/examples) that
	// InstallSnapshotClasses puts in the cluster's namespace.
	nsCredentialsRoleBinding = "etcd-snapshot-driver-credentials-reader"
)

// TestE2ENamespaceDeletionCompletes deletes ten namespaces in a row, each holding a one-member etcd
// cluster with the example classes (policy Delete, credentials Secret and RoleBinding in the same
// namespace), and wants each deletion complete within a minute, whatever its snapshots: none, a
// ready group snapshot, a group snapshot still running, and a ready group snapshot whose RoleBinding
// and credentials Secret are deleted before the namespace, so that the csi-snapshotter can no longer
// read the Secret its content names for deletion (issue 18, defect 2). Afterwards no group content
// refers to the namespace and the driver's records of its snapshots are gone.
func TestE2ENamespaceDeletionCompletes(t *testing.T) {
	r, _ := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), nsDeleteTimeout)
	defer cancel()
	kinds := []string{"no snapshot", "a ready group snapshot", "a group snapshot still running",
		"a ready group snapshot, its credentials RoleBinding and Secret deleted first"}
	for i := range nsDeleteRounds {
		kind := i % len(kinds)
		t.Logf("round %d: namespace with %s", i, kinds[kind])
		name := uniqueName("nsdel")
		ns := "etcd-" + name
		src, err := r.StartEtcdStatefulSet(ctx, name, ns, 1)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { // after a failure before the namespace went
			ctx := cleanupContext(t)
			if err := src.Delete(ctx); err != nil && !apierrors.IsNotFound(err) && !strings.Contains(err.Error(), "not found") {
				t.Logf("clean-up: %v", err)
			}
			if err := r.Kube.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				t.Logf("clean-up: delete namespace %s: %v", ns, err)
			}
		})
		if err := src.InstallSnapshotClasses(ctx); err != nil {
			t.Fatal(err)
		}
		var id string // the group snapshot's, once ready
		switch kind {
		case 1, 3:
			vgsName := uniqueName("nsdel-snap")
			if _, err := src.CreateGroupSnapshot(ctx, vgsName); err != nil {
				t.Fatal(err)
			}
			ready, err := r.WaitGroupSnapshotReadyIn(ctx, ns, vgsName)
			if err != nil {
				t.Fatal(err)
			}
			rec, err := r.GroupSnapshotRecord(ctx, ready)
			if err != nil {
				t.Fatal(err)
			}
			id = rec.ID
		case 2:
			if _, err := src.CreateGroupSnapshot(ctx, uniqueName("nsdel-snap")); err != nil {
				t.Fatal(err)
			}
		}
		if kind == 3 {
			if err := r.Kube.RbacV1().RoleBindings(ns).Delete(ctx, nsCredentialsRoleBinding, metav1.DeleteOptions{}); err != nil {
				t.Fatalf("delete RoleBinding %s/%s: %v", ns, nsCredentialsRoleBinding, err)
			}
			if err := r.Kube.CoreV1().Secrets(ns).Delete(ctx, src.SecretName(), metav1.DeleteOptions{}); err != nil {
				t.Fatalf("delete Secret %s/%s: %v", ns, src.SecretName(), err)
			}
		}

		start := time.Now()
		if err := r.Kube.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := wait.PollUntilContextTimeout(ctx, pollInterval, nsDeleteLimit, true, func(ctx context.Context) (bool, error) {
			_, err := r.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		}); err != nil {
			t.Fatalf("round %d (%s): namespace %s still there %v after its deletion: %v\n%s",
				i, kinds[kind], ns, time.Since(start).Round(time.Second), err, nsLeftovers(r, ns))
		}
		t.Logf("round %d (%s): namespace %s deleted in %v", i, kinds[kind], ns, time.Since(start).Round(100*time.Millisecond))

		if err := src.Delete(ctx); err != nil && !strings.Contains(err.Error(), "not found") {
			t.Logf("round %d: removing the cluster's classes: %v", i, err)
		}
		if refs := groupContentsOf(ctx, r, ns); len(refs) > 0 {
			t.Errorf("round %d: VolumeGroupSnapshotContents still refer to deleted namespace %s: %v", i, ns, refs)
		}
		if id != "" {
			if err := wait.PollUntilContextTimeout(ctx, pollInterval, 30*time.Second, true, func(ctx context.Context) (bool, error) {
				_, err := r.Kube.CoreV1().ConfigMaps(rig.DriverNamespace).Get(ctx, id, metav1.GetOptions{})
				return apierrors.IsNotFound(err), nil
			}); err != nil {
				t.Errorf("round %d: the record of snapshot %s is left after its namespace went: %v", i, id, err)
			}
		}
	}
}

// groupContentsOf names the VolumeGroupSnapshotContents whose VolumeGroupSnapshot was in ns.
func groupContentsOf(ctx context.Context, r *rig.Rig, ns string) []string {
	list, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotContents().List(ctx, metav1.ListOptions{})
	if err != nil {
		return []string{err.Error()}
	}
	var names []string
	for _, c := range list.Items {
		if c.Spec.VolumeGroupSnapshotRef.Namespace == ns {
			names = append(names, c.Name)
		}
	}
	return names
}

// nsLeftovers describes what keeps namespace ns: its snapshots' finalizers, and the annotations and
// status of the contents that refer to it.
func nsLeftovers(r *rig.Rig, ns string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var b strings.Builder
	if n, err := r.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err == nil {
		for _, c := range n.Status.Conditions {
			if c.Status == corev1.ConditionTrue {
				fmt.Fprintf(&b, "namespace condition %s: %s\n", c.Type, c.Message)
			}
		}
	}
	if list, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshots(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, v := range list.Items {
			fmt.Fprintf(&b, "VolumeGroupSnapshot %s: finalizers %v\n", v.Name, v.Finalizers)
		}
	}
	if list, err := r.Snap.SnapshotV1().VolumeSnapshots(ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, v := range list.Items {
			fmt.Fprintf(&b, "VolumeSnapshot %s: finalizers %v\n", v.Name, v.Finalizers)
		}
	}
	if list, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotContents().List(ctx, metav1.ListOptions{}); err == nil {
		for _, c := range list.Items {
			if c.Spec.VolumeGroupSnapshotRef.Namespace == ns {
				fmt.Fprintf(&b, "VolumeGroupSnapshotContent %s: finalizers %v, annotations %v, status %+v\n", c.Name, c.Finalizers, c.Annotations, ptr.Deref(c.Status, groupsnapshotv1.VolumeGroupSnapshotContentStatus{}))
			}
		}
	}
	if list, err := r.Snap.SnapshotV1().VolumeSnapshotContents().List(ctx, metav1.ListOptions{}); err == nil {
		for _, c := range list.Items {
			if c.Spec.VolumeSnapshotRef.Namespace == ns {
				fmt.Fprintf(&b, "VolumeSnapshotContent %s: finalizers %v, annotations %v\n", c.Name, c.Finalizers, c.Annotations)
			}
		}
	}
	return b.String()
}
