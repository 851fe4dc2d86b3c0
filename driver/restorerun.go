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
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

const (
	// restoreStepTimeout bounds waits for the API's own work (pods gone, claims bound, Jobs removed).
	restoreStepTimeout = 5 * time.Minute
	// defaultRestoreCheckTimeout bounds the wait for the restored cluster to turn healthy.
	defaultRestoreCheckTimeout = 5 * time.Minute
)

// preflight checks everything a restore relies on and reports every problem at once; it changes
// nothing, so a refused restore leaves the cluster exactly as it was.
func preflight(ctx context.Context, cfg RestoreConfig, p *restorePlan) error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	kube := cfg.Kube
	rec := p.Record

	snapPVC, err := kube.CoreV1().PersistentVolumeClaims(rec.Namespace).Get(ctx, rec.ID, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		add("the snapshot's PVC %s/%s is gone", rec.Namespace, rec.ID)
	case err != nil:
		add("snapshot PVC %s/%s: %v", rec.Namespace, rec.ID, err)
	case snapPVC.Status.Phase != corev1.ClaimBound:
		add("the snapshot's PVC %s/%s is %s, not Bound", rec.Namespace, rec.ID, snapPVC.Status.Phase)
	case p.snapshotViewRequired && snapPVC.Spec.VolumeName == "":
		add("the snapshot's PVC %s/%s names no PersistentVolume to read it from namespace %s", rec.Namespace, rec.ID, p.Namespace)
	}

	targets := map[string]bool{}
	for _, m := range p.Members {
		targets[m.PVC] = true
		pvc, err := kube.CoreV1().PersistentVolumeClaims(p.Namespace).Get(ctx, m.PVC, metav1.GetOptions{})
		switch {
		case p.InPlace && apierrors.IsNotFound(err):
			add("PVC %s/%s of member %s does not exist", p.Namespace, m.PVC, m.Name)
		case p.InPlace && err == nil && pvc.Status.Phase != corev1.ClaimBound:
			add("PVC %s/%s of member %s is %s, not Bound", p.Namespace, m.PVC, m.Name, pvc.Status.Phase)
		case !p.InPlace && err == nil && pvc.Labels[labelRestoreID] != p.ID:
			add("PVC %s/%s already exists and was not created by this restore; a new cluster is restored only into new PVCs (choose another -target-namespace or -statefulset, or restore in place)", p.Namespace, m.PVC)
		case err != nil && !apierrors.IsNotFound(err):
			add("PVC %s/%s: %v", p.Namespace, m.PVC, err)
		}
	}
	if !p.InPlace && p.NewPVC.Spec.StorageClassName != nil {
		if _, err := kube.StorageV1().StorageClasses().Get(ctx, *p.NewPVC.Spec.StorageClassName, metav1.GetOptions{}); err != nil {
			add("StorageClass %q for the new PVCs: %v", *p.NewPVC.Spec.StorageClassName, err)
		}
	}

	pods, err := kube.CoreV1().Pods(p.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		add("listing pods in namespace %s: %v", p.Namespace, err)
		pods = &corev1.PodList{}
	}
	var users []string
	for i := range pods.Items {
		pod := &pods.Items[i]
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed || pod.Labels[labelManagedBy] == restoreManagedBy {
			continue
		}
		claim := ""
		for _, v := range pod.Spec.Volumes {
			if v.PersistentVolumeClaim != nil && targets[v.PersistentVolumeClaim.ClaimName] {
				claim = v.PersistentVolumeClaim.ClaimName
			}
		}
		if claim == "" || (cfg.Scale && p.StatefulSet != nil && ownedBy(pod, "StatefulSet", p.StatefulSet.Name)) {
			continue
		}
		users = append(users, fmt.Sprintf("pod %s (%s, %s) mounts PVC %s", pod.Name, ownerOf(pod), pod.Status.Phase, claim))
	}
	if len(users) > 0 {
		hint := "stop them first"
		if p.StatefulSet != nil {
			hint = fmt.Sprintf("stop them first (kubectl scale statefulset %s -n %s --replicas=0), or rerun with -scale to have restore do it and scale back", p.StatefulSet.Name, p.Namespace)
		}
		add("%s; %s", strings.Join(users, "; "), hint)
	}
	if cfg.Scale && p.StatefulSet == nil {
		add("-scale needs the StatefulSet that runs the members (%s), and there is none in namespace %s", memberList(p.Members), p.Namespace)
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("restore refused, nothing was changed:\n  - %s", strings.Join(problems, "\n  - "))
}

func memberList(ms []plannedMember) string {
	names := make([]string, 0, len(ms))
	for _, m := range ms {
		names = append(names, m.Name)
	}
	return strings.Join(names, ", ")
}

func ownedBy(pod *corev1.Pod, kind, name string) bool {
	return slices.ContainsFunc(pod.OwnerReferences, func(o metav1.OwnerReference) bool { return o.Kind == kind && o.Name == name })
}

func ownerOf(pod *corev1.Pod) string {
	for _, o := range pod.OwnerReferences {
		if ptr.Deref(o.Controller, false) {
			return "owned by " + o.Kind + " " + o.Name
		}
	}
	return "no owner"
}

// runRestore does the restore a successful preflight allowed.
func runRestore(ctx context.Context, cfg RestoreConfig, p *restorePlan, progress func(string, ...any)) (*RestoreReport, error) {
	report := &RestoreReport{RestoreID: p.ID, SnapshotID: p.Record.ID, Namespace: p.Namespace}
	w, err := startRestoreWatch(ctx, cfg.Kube, p.Namespace)
	if err != nil {
		return report, err
	}
	defer w.close()

	if cfg.Scale {
		if err := scaleDown(ctx, cfg, p, w, progress); err != nil {
			return report, err
		}
	}
	created, err := createRestoreVolumes(ctx, cfg, p, w, progress)
	if err != nil {
		return report, undo(ctx, cfg, p, w, created, nil, progress, err)
	}
	jobs, err := ensureRestoreJobs(ctx, cfg, p, w, progress)
	if err != nil {
		return report, undo(ctx, cfg, p, w, created, jobs, progress, err)
	}
	results, failures, touched := waitRestoreJobs(ctx, p, w, jobs, progress)
	report.Members = results
	if len(failures) > 0 {
		err := fmt.Errorf("restore %s failed: %s", p.ID, strings.Join(failures, "; "))
		if touched {
			return report, fmt.Errorf("%w\nsome members' data dirs were already swapped, so nothing is rolled back: the StatefulSet stays scaled down and the Jobs stay for inspection; fix the cause and rerun the same command to finish restore %s", err, p.ID)
		}
		return report, undo(ctx, cfg, p, w, created, jobs, progress, err)
	}
	for _, j := range jobs {
		if err := deleteRestoreJob(ctx, cfg, j); err != nil {
			progress("warning: %v", err)
		}
	}
	if p.snapshotViewRequired {
		deleteSnapshotView(ctx, cfg, p, progress)
	}
	if cfg.Scale {
		if err := scaleUp(ctx, cfg, p, w, progress); err != nil {
			return report, err
		}
	}
	if cfg.Scale || cfg.Wait {
		check, err := checkRestoredCluster(ctx, cfg, p, progress)
		report.Check = check
		if err != nil {
			return report, err
		}
	}
	return report, nil
}

// undo rolls back a restore that failed before any data dir was swapped: it removes what this run
// created (Jobs, new PVCs, the snapshot view) and scales the StatefulSet back.
func undo(ctx context.Context, cfg RestoreConfig, p *restorePlan, w *restoreWatch, pvcs []string, jobs []*batchv1.Job, progress func(string, ...any), cause error) error {
	ctx = context.WithoutCancel(ctx)
	var errs []string
	for _, j := range jobs {
		if err := deleteRestoreJob(ctx, cfg, j); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for _, name := range pvcs {
		err := cfg.Kube.CoreV1().PersistentVolumeClaims(p.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Sprintf("deleting PVC %s/%s: %v", p.Namespace, name, err))
		}
	}
	if p.snapshotViewRequired {
		deleteSnapshotView(ctx, cfg, p, progress)
	}
	if cfg.Scale && p.StatefulSet != nil {
		if err := scaleUp(ctx, cfg, p, w, progress); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w\nno member data was changed, but cleaning up failed: %s", cause, strings.Join(errs, "; "))
	}
	return fmt.Errorf("%w\nno member data was changed; what this restore created was removed", cause)
}

// scaleDown records the replicas and the restore id on the StatefulSet, scales it to 0 and waits
// until its pods are gone.
func scaleDown(ctx context.Context, cfg RestoreConfig, p *restorePlan, w *restoreWatch, progress func(string, ...any)) error {
	sets := cfg.Kube.AppsV1().StatefulSets(p.Namespace)
	name := p.StatefulSet.Name
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sts, err := sets.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if sts.Annotations[annotationRestoreRunning] == p.ID {
			if n, err := strconv.Atoi(sts.Annotations[annotationRestoreReplicas]); err == nil {
				p.FormerReplicas = int32(n)
			}
		} else {
			p.FormerReplicas = ptr.Deref(sts.Spec.Replicas, 1)
		}
		if sts.Annotations == nil {
			sts.Annotations = map[string]string{}
		}
		sts.Annotations[annotationRestoreRunning] = p.ID
		sts.Annotations[annotationRestoreSnapshot] = p.Record.ID
		sts.Annotations[annotationRestoreReplicas] = strconv.Itoa(int(p.FormerReplicas))
		sts.Spec.Replicas = ptr.To[int32](0)
		_, err = sets.Update(ctx, sts, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("scaling StatefulSet %s/%s to 0: %w", p.Namespace, name, err)
	}
	progress("scaled StatefulSet %s to 0 (was %d replicas); waiting for its pods to stop", name, p.FormerReplicas)
	claims := map[string]bool{}
	for _, m := range p.Members {
		claims[m.PVC] = true
	}
	return w.until(ctx, restoreStepTimeout, "the pods of StatefulSet "+name+" to stop", func() (bool, error) {
		pods, err := w.podsMounting(claims)
		return len(pods) == 0, err
	})
}

// scaleUp scales the StatefulSet back to its former replicas, removes the restore annotations and
// waits until every replica is ready.
func scaleUp(ctx context.Context, cfg RestoreConfig, p *restorePlan, w *restoreWatch, progress func(string, ...any)) error {
	sets := cfg.Kube.AppsV1().StatefulSets(p.Namespace)
	name := p.StatefulSet.Name
	replicas := p.FormerReplicas
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		sts, err := sets.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if sts.Annotations[annotationRestoreRunning] != p.ID {
			return nil
		}
		if n, err := strconv.Atoi(sts.Annotations[annotationRestoreReplicas]); err == nil {
			replicas = int32(n)
		}
		delete(sts.Annotations, annotationRestoreRunning)
		delete(sts.Annotations, annotationRestoreSnapshot)
		delete(sts.Annotations, annotationRestoreReplicas)
		sts.Spec.Replicas = ptr.To(replicas)
		_, err = sets.Update(ctx, sts, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("scaling StatefulSet %s/%s back to %d replicas: %w (scale it by hand: kubectl scale statefulset %s -n %s --replicas=%d)", p.Namespace, name, replicas, err, name, p.Namespace, replicas)
	}
	progress("scaled StatefulSet %s back to %d replicas; waiting for them to be ready", name, replicas)
	return w.until(ctx, restoreStepTimeout, fmt.Sprintf("%d ready replicas of StatefulSet %s", replicas, name), func() (bool, error) {
		sts, err := w.statefulSet(name)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return sts.Status.ObservedGeneration >= sts.Generation && sts.Status.ReadyReplicas == replicas && sts.Status.UpdatedReplicas == replicas, nil
	})
}

// createRestoreVolumes creates a new cluster's PVCs and, across namespaces, the read-only view of the
// snapshot volume; it returns the PVCs it created (not those an interrupted run left).
func createRestoreVolumes(ctx context.Context, cfg RestoreConfig, p *restorePlan, w *restoreWatch, progress func(string, ...any)) ([]string, error) {
	var created []string
	if !p.InPlace {
		for _, m := range p.Members {
			pvc := p.NewPVC.DeepCopy()
			pvc.Name, pvc.Namespace = m.PVC, p.Namespace
			pvc.Labels = restoreLabels(p.ID, p.Record.ID)
			pvc.Labels[p.ClusterLabel] = p.NewCluster
			_, err := cfg.Kube.CoreV1().PersistentVolumeClaims(p.Namespace).Create(ctx, pvc, metav1.CreateOptions{})
			switch {
			case err == nil:
				created = append(created, m.PVC)
				progress("member %s: created PVC %s", m.Name, m.PVC)
			case !apierrors.IsAlreadyExists(err):
				return created, fmt.Errorf("creating PVC %s/%s: %w", p.Namespace, m.PVC, err)
			}
		}
	}
	if p.snapshotViewRequired {
		if err := createSnapshotView(ctx, cfg, p, w); err != nil {
			return created, err
		}
		progress("snapshot volume of %s/%s made readable in namespace %s as PVC %s (read-only)", p.Record.Namespace, p.Record.ID, p.Namespace, p.SnapshotClaim)
	}
	return created, nil
}

// snapshotViewName names the read-only PV and PVC through which a restore in another namespace
// reads the snapshot volume (a pod can only mount claims of its own namespace).
func snapshotViewName(rid string) string { return "etcd-restore-" + rid + "-snapshot" }

// createSnapshotView creates a second, read-only PersistentVolume for the snapshot's volume (same
// CSI volume handle, reclaim policy Retain, so deleting it never deletes the data) pre-bound to a PVC
// in the restore namespace, and waits for the two to bind.
func createSnapshotView(ctx context.Context, cfg RestoreConfig, p *restorePlan, w *restoreWatch) error {
	rec := p.Record
	snapPVC, err := cfg.Kube.CoreV1().PersistentVolumeClaims(rec.Namespace).Get(ctx, rec.ID, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("snapshot PVC %s/%s: %w", rec.Namespace, rec.ID, err)
	}
	pv, err := cfg.Kube.CoreV1().PersistentVolumes().Get(ctx, snapPVC.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("PersistentVolume %s of snapshot %s: %w", snapPVC.Spec.VolumeName, rec.ID, err)
	}
	name := p.SnapshotClaim
	source := pv.Spec.PersistentVolumeSource.DeepCopy()
	if source.CSI != nil {
		source.CSI.ReadOnly = true
	}
	view := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: restoreLabels(p.ID, rec.ID)},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      pv.Spec.Capacity,
			PersistentVolumeSource:        *source,
			AccessModes:                   pv.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              "",
			MountOptions:                  pv.Spec.MountOptions,
			VolumeMode:                    pv.Spec.VolumeMode,
			NodeAffinity:                  pv.Spec.NodeAffinity,
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: p.Namespace, Name: name},
		},
	}
	if _, err := cfg.Kube.CoreV1().PersistentVolumes().Create(ctx, view, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating PersistentVolume %s (read-only view of snapshot %s): %w", name, rec.ID, err)
	}
	claim := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: p.Namespace, Labels: restoreLabels(p.ID, rec.ID)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      pv.Spec.AccessModes,
			StorageClassName: ptr.To(""),
			VolumeName:       name,
			VolumeMode:       pv.Spec.VolumeMode,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: pv.Spec.Capacity[corev1.ResourceStorage]}},
		},
	}
	if _, err := cfg.Kube.CoreV1().PersistentVolumeClaims(p.Namespace).Create(ctx, claim, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating PVC %s/%s (read-only view of snapshot %s): %w", p.Namespace, name, rec.ID, err)
	}
	return w.until(ctx, restoreStepTimeout, "PVC "+p.Namespace+"/"+name+" to bind", func() (bool, error) {
		c, err := w.pvcs.PersistentVolumeClaims(p.Namespace).Get(name)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil && c.Status.Phase == corev1.ClaimBound, err
	})
}

// deleteSnapshotView removes the view PVC and PV; the PV's Retain policy leaves the volume alone.
func deleteSnapshotView(ctx context.Context, cfg RestoreConfig, p *restorePlan, progress func(string, ...any)) {
	name := snapshotViewName(p.ID)
	if err := cfg.Kube.CoreV1().PersistentVolumeClaims(p.Namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		progress("warning: deleting PVC %s/%s: %v (delete it by hand)", p.Namespace, name, err)
	}
	if err := cfg.Kube.CoreV1().PersistentVolumes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		progress("warning: deleting PersistentVolume %s: %v (delete it by hand; its reclaim policy is Retain)", name, err)
	}
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

// emitRestoreEvent records the outcome on the VolumeGroupSnapshot or VolumeSnapshot restored from.
func emitRestoreEvent(ctx context.Context, cfg RestoreConfig, p *restorePlan, eventType, reason, message string) {
	obj := p.Source.Object
	if obj == nil {
		return
	}
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", obj.Name, now.UnixNano()), Namespace: obj.Namespace},
		InvolvedObject: *obj,
		Reason:         reason,
		Message:        truncate(message, 1000),
		Type:           eventType,
		Source:         corev1.EventSource{Component: restoreManagedBy},
		FirstTimestamp: now,
		LastTimestamp:  now,
		Count:          1,
	}
	if _, err := cfg.Kube.CoreV1().Events(obj.Namespace).Create(context.WithoutCancel(ctx), ev, metav1.CreateOptions{}); err != nil {
		fmt.Fprintf(cfg.Progress, "restore %s: warning: recording Event %s on %s %s/%s: %v\n", p.ID, reason, obj.Kind, obj.Namespace, obj.Name, err)
	}
}
