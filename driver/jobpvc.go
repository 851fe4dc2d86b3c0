package driver

import (
	"context"
	"math"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	mi = int64(1) << 20
	// defaultSnapshotSizeFactor sizes the snapshot PVC at 1.2 times the database: the snapshot file is
	// at most the database's size (etcd writes the pages in use, the member reports its file), the
	// database may grow between the health check and the save, and a filesystem keeps some of a
	// volume for itself (ext4 reserves 5% for root, and the Job does not run as root). One copy of the
	// file is on the volume at a time: etcdctl writes "<file>.part" and renames it, a retried save
	// truncates a ".part" a killed one left, and a file verify rejects is never saved over
	// (jobFailurePolicy).
	defaultSnapshotSizeFactor = 1.2
	// pvcHeadroom covers the filesystem's metadata on small volumes and the sha256 trailer.
	pvcHeadroom = 64 * mi
	// maxSizedDB bounds the database size the PVC and the Job deadline are computed from, so the
	// arithmetic cannot overflow whatever size a member reports; it is 1 PiB, far above any etcd.
	maxSizedDB = int64(1) << 50
)

// snapshotPVCSize sizes the snapshot volume: the db size reported by the chosen member times the
// class's snapshotSizeFactor (default 1.2) plus headroom, rounded up to a whole MiB, and never below
// the class's snapshotMinSize.
func snapshotPVCSize(dbSize int64, p snapshotParams) resource.Quantity {
	dbSize = min(max(dbSize, 0), maxSizedDB)
	factor := p.SizeFactor
	if factor == 0 {
		factor = defaultSnapshotSizeFactor
	}
	// maxSizedDB times maxSnapshotSizeFactor stays far inside an int64 and exact in a float64 to the MiB.
	want := int64(math.Ceil(float64(dbSize)*factor)) + pvcHeadroom
	want = (want + mi - 1) / mi * mi
	size := *resource.NewQuantity(want, resource.BinarySI)
	if size.Cmp(p.MinSize) < 0 {
		return p.MinSize.DeepCopy()
	}
	return size
}

// newSnapshotPVC is the PVC holding snapshot.db for rec. An empty class leaves storageClassName unset
// so the cluster's default class applies.
func newSnapshotPVC(rec *Record, size resource.Quantity, class string) *corev1.PersistentVolumeClaim {
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: snapshotPVCName(rec.ID), Namespace: rec.Namespace, Labels: objectLabels(rec.ID, rec.Cluster)},
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
	return e.adoptOnExists(ctx, err, "PersistentVolumeClaim", rec, snapshotPVCName(rec.ID), func() (metav1.Object, error) {
		return client.Get(ctx, snapshotPVCName(rec.ID), metav1.GetOptions{})
	})
}
