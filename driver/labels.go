package driver

// Label and annotation keys of this project: every one the driver sets or reads on Kubernetes
// objects, in one place. manifests/admission-policy.yaml and the tools/ rig spell some of them as
// literals (other module; they cannot import these), so a change here is a change there too.
// Upstream's keys (external-snapshotter, CSI) are in upstreamnames.go.
const (
	// labelManagedBy is on every object the driver or a restore creates (Jobs and their pods, PVCs,
	// Secrets, record ConfigMaps, pre-created VolumeGroupSnapshotContents; a restore's Jobs, PVCs and
	// PVs), valued managedByDriver or managedByRestore. The engine's and RecordStore's informers
	// (managedSelector), the sweeper, the dynamic group controller, the restore command and
	// manifests/admission-policy.yaml select on it.
	labelManagedBy = "app.kubernetes.io/managed-by"
	// managedByDriver is labelManagedBy's value on the snapshot's objects.
	managedByDriver = "etcd-snapshot-driver"
	// managedByRestore is labelManagedBy's value on a restore's objects; it differs from
	// managedByDriver so the driver's own controllers never take a restore Job for one of theirs.
	managedByRestore = "etcd-snapshot-driver-restore"

	// labelSnapshotID is on a snapshot's Job, its pods, PVC, TLS Secret and record ConfigMap; the
	// engine's monitor maps pods and Jobs back to their record by it, and adoption and deletion check
	// it before touching an object (enginecreate.go, enginedelete.go).
	labelSnapshotID = "snapshot.etcd.io/id"
	// labelCluster is on the same objects as labelSnapshotID: the etcd cluster's name; the metrics
	// (metrics.go) and the cluster fallback (etcdfallback.go) read it from record ConfigMaps.
	labelCluster = "snapshot.etcd.io/cluster"
	// labelNamespace is on record ConfigMaps only: the etcd cluster's namespace (the records live in
	// the metadata namespace); read with labelCluster by metrics.go and etcdfallback.go.
	labelNamespace = "snapshot.etcd.io/namespace"

	// annotationReadyAt is on a VolumeGroupSnapshotContent of this driver: the time its record turned
	// Ready. Nobody reads the value; its change makes the csi-snapshotter sync the content
	// (dynamicgroupwake.go).
	annotationReadyAt = "snapshot.etcd.io/ready-at"
	// annotationReadinessCheck is on the member VolumeSnapshotContents of a ready group snapshot: the
	// time of a re-check request. Nobody reads the value; its change makes the csi-snapshotter sync
	// the member (dynamicgrouprecheck.go).
	annotationReadinessCheck = "snapshot.etcd.io/readiness-check"

	// labelSchedule is on every VolumeGroupSnapshot an EtcdSnapshotSchedule created: the schedule's
	// name. Its schedule's runs and retention select on it (schedulerun.go, schedulesync.go);
	// manifests/etcdsnapshotschedule-crd.yaml forbids it in the schedule's own template.
	labelSchedule = "snapshot.etcd.io/schedule"
	// annotationScheduledTime is on the same VolumeGroupSnapshots: the run's nominal time (RFC 3339,
	// UTC); retention orders by it (scheduleretention.go).
	annotationScheduledTime = "snapshot.etcd.io/scheduled-time"

	// keyRestoreID is the restore id, as a label on every object a restore creates (restoreLabels)
	// and as an annotation on the StatefulSet a restore scaled to 0. A rerun after an interruption
	// finds its restore by it (restoreid.go, restorerun.go, restorepreflight.go).
	keyRestoreID = "snapshot.etcd.io/restore-id"
	// keyRestoreSource is the restored snapshot's id, on the same objects as keyRestoreID; a rerun
	// refuses to resume another snapshot's restore (restoreid.go).
	keyRestoreSource = "snapshot.etcd.io/restore-source"
	// annotationRestoreReplicas is on the StatefulSet a restore scaled to 0: its former replicas,
	// which the restore (or its rerun) scales back to (restorerun.go, restoreid.go).
	annotationRestoreReplicas = "snapshot.etcd.io/restore-replicas"
	// annotationRestorePVC is on a restore Job: the member PVC it restores into; a rerun matches
	// existing Jobs to its targets by it (restoreid.go).
	annotationRestorePVC = "snapshot.etcd.io/restore-pvc"
	// annotationRestoreMember is on a restore Job: the etcd member name it restores, for operators
	// reading the Job; the driver does not read it back.
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
