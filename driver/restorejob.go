package driver

import (
	"fmt"
	"strconv"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Labels and layout of the restore Jobs. Their managed-by value differs from the snapshot Jobs' so
// the driver's own controllers never take a restore Job for one of theirs.
const (
	restoreManagedBy        = "etcd-snapshot-driver-restore"
	labelRestoreID          = "snapshot.etcd.io/restore-id"
	labelRestoreSource      = "snapshot.etcd.io/restore-source"
	annotationRestorePVC    = "snapshot.etcd.io/restore-pvc"
	annotationRestoreMember = "snapshot.etcd.io/restore-member"

	restoreVerifyContainer  = "verify"
	restorePrepareContainer = "prepare"
	restoreRestoreContainer = "restore"
	restoreSwapContainer    = "swap"
	memberVolume            = "member"
	memberMountPath         = "/var/lib/etcd-member"
	etcdutlPath             = "/usr/local/bin/etcdutl"

	// restoreBackoffLimit allows one more pod after a failure: every step is idempotent, but a snapshot
	// refused by verify fails the same way every time.
	restoreBackoffLimit = 1
)

// restoreLabels are on every object a restore creates.
func restoreLabels(rid, snapshotID string) map[string]string {
	return map[string]string{labelManagedBy: restoreManagedBy, labelRestoreID: rid, labelRestoreSource: snapshotID}
}

// restoreJobName names member m's Job; the ordinal (or the member's index) keeps it short and stable.
func restoreJobName(rid string, index int, m plannedMember) string {
	n := index
	if m.Ordinal >= 0 {
		n = m.Ordinal
	}
	return "etcd-restore-" + rid + "-" + strconv.Itoa(n)
}

// restoredDirName is where etcdutl writes the member's new data dir, beside the old one.
func restoredDirName(dataDir, rid string) string { return dataDir + ".restore-" + rid }

// keptDirName is where the member's old data dir is kept after the swap.
func keptDirName(dataDir, rid string) string { return dataDir + ".before-restore-" + rid }

// newRestoreJob builds the Job that restores member m of plan into its PVC: verify the snapshot file
// against the record's sha256, clear a partial attempt, etcdutl snapshot restore beside the data
// dir, then swap the restored dir into place keeping the old one.
func (p *restorePlan) newRestoreJob(index int, m plannedMember) *batchv1.Job {
	labels := restoreLabels(p.ID, p.Record.ID)
	snapFile := snapshotMountPath + "/" + snapshotFileName
	verify := snapshotContainer(restoreVerifyContainer, p.DriverImage, driverBinaryPath,
		[]string{"verify", "-file=" + snapFile, "-sha256=" + p.Record.SHA256, "-termination-log=" + terminationLogPath},
		[]corev1.VolumeMount{{Name: snapshotVolume, MountPath: snapshotMountPath, ReadOnly: true}})
	stepArgs := func(step string) []string {
		return []string{"restore-step", step, "-volume=" + memberMountPath, "-data-dir=" + p.Layout.DataDir, "-restore-id=" + p.ID, "-termination-log=" + terminationLogPath}
	}
	memberMount := []corev1.VolumeMount{{Name: memberVolume, MountPath: memberMountPath}}
	prepare := snapshotContainer(restorePrepareContainer, p.DriverImage, driverBinaryPath, stepArgs("prepare"), memberMount)
	restoreArgs := []string{"snapshot", "restore", snapFile,
		"--data-dir=" + memberMountPath + "/" + restoredDirName(p.Layout.DataDir, p.ID),
		"--name=" + m.Name,
		"--initial-cluster=" + p.InitialCluster,
		"--initial-cluster-token=" + p.Token,
		"--initial-advertise-peer-urls=" + m.PeerURL,
	}
	if p.BumpRevision > 0 {
		// Watchers (Kubernetes among them) must see revisions move forward and re-list (etcd-io/etcd#16028).
		restoreArgs = append(restoreArgs, "--bump-revision="+strconv.FormatInt(p.BumpRevision, 10), "--mark-compacted")
	}
	restore := snapshotContainer(restoreRestoreContainer, p.EtcdImage, etcdutlPath, restoreArgs,
		[]corev1.VolumeMount{{Name: snapshotVolume, MountPath: snapshotMountPath, ReadOnly: true}, {Name: memberVolume, MountPath: memberMountPath}})
	swapArgs := stepArgs("swap")
	if p.DeleteOldData {
		swapArgs = append(swapArgs, "-delete-old")
	}
	swap := snapshotContainer(restoreSwapContainer, p.DriverImage, driverBinaryPath, swapArgs, memberMount)

	containers := []*corev1.Container{&verify, &prepare, &restore, &swap}
	if p.Layout.UID == 0 {
		// The StatefulSet runs etcd as root; the restored files must be written as that user too.
		for _, c := range containers {
			c.SecurityContext.RunAsNonRoot = ptr.To(false)
		}
	}
	fsGroup := ptr.Deref(p.Layout.FSGroup, p.Layout.GID)
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name: restoreJobName(p.ID, index, m), Namespace: p.Namespace, Labels: labels,
			Annotations: map[string]string{annotationRestorePVC: m.PVC, annotationRestoreMember: m.Name},
		},
		Spec: batchv1.JobSpec{
			BackoffLimit:          ptr.To[int32](restoreBackoffLimit),
			ActiveDeadlineSeconds: ptr.To(jobDeadline(p.Record.SizeBytes)),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					RestartPolicy:                corev1.RestartPolicyNever,
					AutomountServiceAccountToken: ptr.To(false),
					SecurityContext:              podSecurity(p.Layout.UID, p.Layout.GID, fsGroup),
					InitContainers:               []corev1.Container{verify, prepare, restore},
					Containers:                   []corev1.Container{swap},
					Volumes: []corev1.Volume{
						{Name: snapshotVolume, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: p.SnapshotClaim, ReadOnly: true}}},
						{Name: memberVolume, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: m.PVC}}},
					},
				},
			},
		},
	}
}

// describeRestoreStep turns a finished init container of a restore pod into a progress line.
func describeRestoreStep(container string, p *restorePlan) string {
	switch container {
	case restoreVerifyContainer:
		return fmt.Sprintf("snapshot file verified (sha256 %s)", shortHash(p.Record.SHA256))
	case restorePrepareContainer:
		return "volume prepared"
	case restoreRestoreContainer:
		return fmt.Sprintf("etcdutl snapshot restore wrote %s", restoredDirName(p.Layout.DataDir, p.ID))
	}
	return container + " done"
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12] + "…"
	}
	return h
}
