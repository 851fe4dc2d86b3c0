package driver

// Label and annotation keys of this project: every one the driver sets or reads on Kubernetes
// objects, in one place. manifests/admission-policy.yaml and the tools/ rig spell some of them as
// literals (other module; they cannot import these), so a change here is a change there too.
// Upstream's keys (external-snapshotter, CSI) are in upstreamnames.go.
const (
	// labelManagedBy: on everything the driver or a restore creates; informers, sweeper, restore and admission select on it.
	labelManagedBy = "app.kubernetes.io/managed-by"
	// managedByDriver: labelManagedBy's value on a snapshot's Job, pods, PVC, Secret, record and pre-created group contents.
	managedByDriver = "etcd-snapshot-driver"
	// managedByRestore: labelManagedBy's value on a restore's Jobs, PVCs and PVs, so the driver's controllers never take them.
	managedByRestore = "etcd-snapshot-driver-restore"

	// labelSnapshotID: on a snapshot's Job, pods, PVC, Secret and record; the monitor, adoption and deletion check it.
	labelSnapshotID = "snapshot.etcd.io/id"
	// labelCluster: the etcd cluster's name, on the same objects; metrics.go and etcdfallback.go read it from records.
	labelCluster = "snapshot.etcd.io/cluster"
	// labelNamespace: the etcd cluster's namespace, on records only; metrics.go and etcdfallback.go read it.
	labelNamespace = "snapshot.etcd.io/namespace"

	// annotationReadyAt: on a group content once its record is Ready; its change makes the csi-snapshotter sync (value unread).
	annotationReadyAt = "snapshot.etcd.io/ready-at"
	// annotationReadinessCheck: on a ready group's member contents; its change makes the csi-snapshotter sync (value unread).
	annotationReadinessCheck = "snapshot.etcd.io/readiness-check"

	// labelSchedule: the schedule's name on each VolumeGroupSnapshot it created; its runs and retention select on it.
	labelSchedule = "snapshot.etcd.io/schedule"
	// annotationScheduledTime: a run's nominal time (RFC 3339, UTC) on the same VolumeGroupSnapshots; retention reads it.
	annotationScheduledTime = "snapshot.etcd.io/scheduled-time"

	// keyRestoreID: label on a restore's objects, annotation on the StatefulSet it scaled to 0; a rerun finds its restore by it.
	keyRestoreID = "snapshot.etcd.io/restore-id"
	// keyRestoreSource: the restored snapshot's id, on the same objects; a rerun refuses another snapshot's restore by it.
	keyRestoreSource = "snapshot.etcd.io/restore-source"
	// annotationRestoreReplicas: on the StatefulSet a restore scaled to 0, its former replicas; the restore scales back to it.
	annotationRestoreReplicas = "snapshot.etcd.io/restore-replicas"
	// annotationRestorePVC: on a restore Job, the member PVC it restores into; a rerun matches Jobs to PVCs by it.
	annotationRestorePVC = "snapshot.etcd.io/restore-pvc"
	// annotationRestoreMember: on a restore Job, the etcd member it restores; for operators, the driver never reads it.
	annotationRestoreMember = "snapshot.etcd.io/restore-member"
)

// objectLabels are the labels on every object of snapshot id.
func objectLabels(id, cluster string) map[string]string {
	return map[string]string{labelManagedBy: managedByDriver, labelSnapshotID: id, labelCluster: cluster}
}

// restoreLabels are on every object a restore creates.
func restoreLabels(rid, snapshotID string) map[string]string {
	return map[string]string{labelManagedBy: managedByRestore, keyRestoreID: rid, keyRestoreSource: snapshotID}
}
