package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Layout of the restore Jobs (their labels are restoreLabels, labels.go).
const (
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
	// The same verify as the snapshot Job's, so the same memory for the same file.
	verify.Resources.Limits[corev1.ResourceMemory] = verifyMemoryLimit(p.Record.SizeBytes)
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

// ensureRestoreJobs creates each member's Job, keeps one an interrupted run left running or complete,
// and replaces one that failed (every step is idempotent, so a new pod finishes the work).
func ensureRestoreJobs(ctx context.Context, cfg RestoreConfig, p *restorePlan, w *restoreWatch, progress func(string, ...any)) ([]*batchv1.Job, error) {
	client := cfg.Kube.BatchV1().Jobs(p.Namespace)
	var jobs []*batchv1.Job
	for i, m := range p.Members {
		want := p.newRestoreJob(i, m)
		job, err := client.Create(ctx, want, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			if job, err = client.Get(ctx, want.Name, metav1.GetOptions{}); err == nil && jobCondition(job, batchv1.JobFailed) != nil {
				progress("member %s: replacing failed Job %s of the interrupted run", m.Name, job.Name)
				if err = deleteRestoreJob(ctx, cfg, job); err == nil {
					err = w.until(ctx, restoreStepTimeout, "Job "+job.Name+" to be deleted", func() (bool, error) {
						_, err := w.jobs.Jobs(p.Namespace).Get(want.Name)
						return apierrors.IsNotFound(err), nil
					})
				}
				if err == nil {
					job, err = client.Create(ctx, want, metav1.CreateOptions{})
				}
			} else if err == nil {
				progress("member %s: Job %s of the interrupted run is kept", m.Name, job.Name)
			}
		} else if err == nil {
			progress("member %s: Job %s created (PVC %s, peer URL %s)", m.Name, job.Name, m.PVC, m.PeerURL)
		}
		if err != nil {
			return jobs, fmt.Errorf("restore Job %s/%s of member %s: %w", p.Namespace, want.Name, m.Name, err)
		}
		jobs = append(jobs, job)
	}
	return jobs, nil
}

func deleteRestoreJob(ctx context.Context, cfg RestoreConfig, job *batchv1.Job) error {
	err := cfg.Kube.BatchV1().Jobs(job.Namespace).Delete(ctx, job.Name, metav1.DeleteOptions{
		PropagationPolicy: ptr.To(metav1.DeletePropagationBackground),
		Preconditions:     &metav1.Preconditions{UID: ptr.To(job.UID)},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting restore Job %s/%s: %w", job.Namespace, job.Name, err)
	}
	return nil
}

// waitRestoreJobs follows the Jobs until each completed or failed, printing each member's steps as
// its pod finishes them. touched reports whether any member's data dir may have been swapped.
func waitRestoreJobs(ctx context.Context, p *restorePlan, w *restoreWatch, jobs []*batchv1.Job, progress func(string, ...any)) (results []RestoreMemberResult, failures []string, touched bool) {
	type state struct {
		started time.Time
		printed map[string]bool
		done    bool
		result  RestoreMemberResult
	}
	states := make([]*state, len(jobs))
	for i := range jobs {
		states[i] = &state{started: time.Now(), printed: map[string]bool{}}
	}
	err := w.until(ctx, time.Duration(jobDeadline(p.Record.SizeBytes)+60)*time.Second, "the restore Jobs to finish", func() (bool, error) {
		finished := 0
		for i, j := range jobs {
			st, m := states[i], p.Members[i]
			if st.done {
				finished++
				continue
			}
			job, err := w.jobs.Jobs(p.Namespace).Get(j.Name)
			if apierrors.IsNotFound(err) || (err == nil && job.UID != j.UID) {
				continue
			}
			if err != nil {
				return false, err
			}
			pods, err := w.jobPods(job)
			if err != nil {
				return false, err
			}
			for _, pod := range pods {
				for _, cs := range pod.Status.InitContainerStatuses {
					if t := cs.State.Terminated; t != nil && t.ExitCode == 0 && !st.printed[cs.Name] {
						st.printed[cs.Name] = true
						progress("member %s: %s", m.Name, describeRestoreStep(cs.Name, p))
					}
				}
				for _, cs := range pod.Status.ContainerStatuses {
					if cs.Name == restoreSwapContainer && (cs.State.Running != nil || cs.State.Terminated != nil || cs.RestartCount > 0) {
						touched = true
					}
				}
			}
			switch {
			case jobCondition(job, batchv1.JobComplete) != nil:
				res, err := restoreStepResultOf(pods)
				st.done, touched = true, true
				if err != nil {
					failures = append(failures, fmt.Sprintf("member %s: %v", m.Name, err))
					break
				}
				st.result = RestoreMemberResult{Member: m.Name, PVC: m.PVC, Revision: res.Revision, Keys: res.Keys, KeptAt: res.KeptAt,
					Duration: jobDuration(job, st.started), AlreadyDone: res.AlreadyDone}
				kept := "no earlier data dir to keep"
				switch {
				case res.KeptAt != "":
					kept = "old data kept at " + res.KeptAt
				case p.DeleteOldData:
					kept = "old data deleted (-delete-old-data)"
				}
				progress("member %s: swapped into %s at revision %d with %d keys; %s", m.Name, p.Layout.DataDir, res.Revision, res.Keys, kept)
			case jobCondition(job, batchv1.JobFailed) != nil:
				st.done = true
				failures = append(failures, fmt.Sprintf("member %s: %s", m.Name, failureReason(job, jobCondition(job, batchv1.JobFailed), restoreBackoffLimit, pods)))
			}
			if st.done {
				finished++
			}
		}
		return finished == len(jobs), nil
	})
	if err != nil {
		failures = append(failures, err.Error())
	}
	for _, st := range states {
		if st.result.Member != "" {
			results = append(results, st.result)
		}
	}
	slices.SortFunc(results, func(a, b RestoreMemberResult) int { return strings.Compare(a.Member, b.Member) })
	return results, failures, touched
}

// jobDuration is how long the Job ran, from the API's times when it has them.
func jobDuration(job *batchv1.Job, fallback time.Time) time.Duration {
	if job.Status.StartTime != nil && job.Status.CompletionTime != nil {
		return job.Status.CompletionTime.Sub(job.Status.StartTime.Time)
	}
	return time.Since(fallback)
}

// restoreStepResultOf reads the swap container's result from the succeeded pod.
func restoreStepResultOf(pods []*corev1.Pod) (*RestoreStepResult, error) {
	pod, msg, found := resultMessage(pods, restoreSwapContainer)
	if !found {
		return nil, errors.New("the Job completed but no pod shows the swap result")
	}
	res := &RestoreStepResult{}
	if err := json.Unmarshal([]byte(msg), res); err != nil {
		return nil, fmt.Errorf("pod %s/%s: container %q reported an unreadable result %q: %v", pod.Namespace, pod.Name, restoreSwapContainer, truncate(msg, 256), err)
	}
	return res, nil
}
