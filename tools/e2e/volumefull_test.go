package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig/provisioner"
)

// The volume of TestE2ESnapshotVolumeFull and the data that does not fit in it.
const (
	fullVolumeSize = "4Mi"
	fullDataValues = 24
	fullValueBytes = 512 << 10
)

// TestE2ESnapshotVolumeFull gives the snapshot a PVC too small for the database (class parameter
// snapshotSize) on a StorageClass whose volumes are real size-limited filesystems (tmpfs): the save
// hits ENOSPC, the VolumeGroupSnapshot shows a final error saying the volume is too small, the
// driver removes the Job, PVC and Secret, and once the VolumeGroupSnapshot is deleted nothing of the
// snapshot is left, its record and volume included.
func TestE2ESnapshotVolumeFull(t *testing.T) {
	r, ctx := setup(t)
	if os.Geteuid() != 0 {
		t.Skip("the rig mounts a tmpfs per volume of this test's StorageClass, which needs root")
	}
	const prefix = "/e2e-volume-full/"
	if err := writeLargeValues(ctx, r, prefix, fullDataValues, fullValueBytes); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deletePrefix(t, r, prefix) })

	storageClass := createTmpfsStorageClass(t, ctx, r, uniqueName("e2e-tmpfs"))
	class := createGroupClass(t, ctx, r, uniqueName("e2e-volume-full"), map[string]string{
		"csi.storage.k8s.io/group-snapshotter-secret-name":      r.Etcd.SecretName(),
		"csi.storage.k8s.io/group-snapshotter-secret-namespace": r.Namespace,
		"snapshotStorageClass":                                  storageClass,
		"snapshotSize":                                          fullVolumeSize,
	})
	jobs, err := r.WatchSnapshotJobs(ctx, r.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jobs.Stop)

	name := uniqueName("e2e-volume-full")
	vgs := createGroupWithClass(t, ctx, r, name, class)
	begin := time.Now()
	vgsErr, contentErr, err := waitGroupError(ctx, r, vgs, func(msg string) bool { return strings.Contains(msg, "too small") })
	if err != nil {
		t.Fatalf("no error saying the volume is too small on VolumeGroupSnapshot %s (status.error %q; content status.error %q): %v", name, vgsErr, contentErr, err)
	}
	msg := vgsErr
	if !strings.Contains(msg, "too small") {
		msg = contentErr
	}
	t.Logf("failed after %s: %s", time.Since(begin).Round(100*time.Millisecond), msg)
	for _, want := range []string{"no space left on device", "snapshot volume is too small", "of " + fullVolumeSize, "snapshotSize"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q: %s", want, msg)
		}
	}
	// Internal is a final code: the sidecar records the failure instead of retrying the Create.
	if !strings.Contains(msg, "code = Internal") {
		t.Errorf("error is not the final Internal: %s", msg)
	}

	var id string
	select {
	case job := <-jobs.First():
		id = job.Labels[rig.SnapshotIDLabel]
	default:
		t.Fatal("no snapshot Job was seen: the save never ran")
	}
	// The driver cleans up a failed snapshot by itself; the record stays, to answer the sidecar.
	if err := waitObjectsGone(ctx, r, id, "Job", "Secret", "PersistentVolumeClaim"); err != nil {
		t.Error(err)
	}
	deleteGroup(t, ctx, r, name)
	if err := waitSnapshotObjectsGone(ctx, r, id); err != nil {
		t.Error(err)
	}
	if err := waitClassVolumesGone(ctx, r, storageClass); err != nil {
		t.Error(err)
	}
}

// writeLargeValues writes n values of size bytes under prefix into the cluster under test, so its
// database grows by about n*size bytes.
func writeLargeValues(ctx context.Context, r *rig.Rig, prefix string, n, size int) error {
	cli, err := r.EtcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	value := strings.Repeat("x", size)
	for i := range n {
		// Each value differs, so nothing could share pages.
		v := fmt.Sprintf("%08d", i) + value[8:]
		if _, err := cli.Put(ctx, fmt.Sprintf("%s%06d", prefix, i), v); err != nil {
			return fmt.Errorf("write %s%06d: %w", prefix, i, err)
		}
	}
	return nil
}

// createTmpfsStorageClass creates a StorageClass of the rig's provisioner whose volumes are tmpfs
// mounts of the claim's size, and registers its deletion.
func createTmpfsStorageClass(t *testing.T, ctx context.Context, r *rig.Rig, name string) string {
	t.Helper()
	classes := r.Kube.StorageV1().StorageClasses()
	if _, err := classes.Create(ctx, &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: name},
		Provisioner:       provisioner.DriverName,
		Parameters:        map[string]string{provisioner.FilesystemParameter: provisioner.FilesystemTmpfs},
		ReclaimPolicy:     ptr.To(corev1.PersistentVolumeReclaimDelete),
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deleteAtCleanup(t, "StorageClass", name, classes.Delete)
	return name
}

// waitObjectsGone waits until snapshot id has no object of the given kinds (snapshotObjects' names).
func waitObjectsGone(ctx context.Context, r *rig.Rig, id string, kinds ...string) error {
	var left []string
	err := wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		objs, err := snapshotObjects(ctx, r, id)
		if err != nil {
			return false, nil
		}
		left = left[:0]
		for name := range objs {
			for _, k := range kinds {
				if strings.HasPrefix(name, k+" ") {
					left = append(left, name)
				}
			}
		}
		return len(left) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("failed snapshot %s still has %v: %w", id, left, err)
	}
	return nil
}

// waitClassVolumesGone waits until no PersistentVolume of StorageClass class is left: the provisioner
// unmounted and removed each volume.
func waitClassVolumesGone(ctx context.Context, r *rig.Rig, class string) error {
	var left []string
	err := wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		pvs, err := r.Kube.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		left = left[:0]
		for _, pv := range pvs.Items {
			if pv.Spec.StorageClassName == class {
				left = append(left, pv.Name)
			}
		}
		return len(left) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("PersistentVolumes of StorageClass %s still there: %v: %w", class, left, err)
	}
	return nil
}
