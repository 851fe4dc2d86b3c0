package driver

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	mi = int64(1) << 20
	// pvcHeadroom covers the snapshot's sha256 trailer, the bbolt freelist and the "<file>.part" rename.
	pvcHeadroom = 64 * mi
	// maxSizedDB bounds the database size the PVC and the Job deadline are computed from, so the
	// arithmetic cannot overflow whatever size a member reports; it is 1 PiB, far above any etcd.
	maxSizedDB = int64(1) << 50
)

// snapshotPVCSize sizes the snapshot volume: twice the db size reported by the chosen member (the
// database may grow between the health check and the save) plus headroom, rounded up to a whole MiB,
// and never below minSize.
func snapshotPVCSize(dbSize int64, minSize resource.Quantity) resource.Quantity {
	dbSize = min(max(dbSize, 0), maxSizedDB)
	want := dbSize*2 + pvcHeadroom
	want = (want + mi - 1) / mi * mi
	size := *resource.NewQuantity(want, resource.BinarySI)
	if size.Cmp(minSize) < 0 {
		return minSize.DeepCopy()
	}
	return size
}

// newSnapshotPVC is the PVC holding snapshot.db for rec. An empty class leaves storageClassName unset
// so the cluster's default class applies.
func newSnapshotPVC(rec *Record, size resource.Quantity, class string) *corev1.PersistentVolumeClaim {
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: rec.ID, Namespace: rec.Namespace, Labels: objectLabels(rec.ID, rec.Cluster)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		},
	}
	if class != "" {
		pvc.Spec.StorageClassName = &class
	}
	return pvc
}

// ensureSnapshotPVC creates the snapshot PVC, or adopts it when an earlier attempt of the same
// snapshot left it. A quota refusal comes back as ResourceExhausted (see kubeStatus).
func (e *Engine) ensureSnapshotPVC(ctx context.Context, rec *Record, size resource.Quantity) error {
	pvc := newSnapshotPVC(rec, size, rec.StorageClass)
	client := e.cfg.Kube.CoreV1().PersistentVolumeClaims(rec.Namespace)
	_, err := client.Create(ctx, pvc, metav1.CreateOptions{})
	return e.adoptOnExists(ctx, err, "PersistentVolumeClaim", rec, rec.ID, func() (metav1.Object, error) {
		return client.Get(ctx, rec.ID, metav1.GetOptions{})
	})
}
