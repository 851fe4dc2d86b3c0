package driver

import (
	"context"
	"fmt"
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
)

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
		if sts.Annotations[keyRestoreID] == p.ID {
			if n, err := strconv.Atoi(sts.Annotations[annotationRestoreReplicas]); err == nil {
				p.FormerReplicas = int32(n)
			}
		} else {
			p.FormerReplicas = ptr.Deref(sts.Spec.Replicas, 1)
		}
		if sts.Annotations == nil {
			sts.Annotations = map[string]string{}
		}
		sts.Annotations[keyRestoreID] = p.ID
		sts.Annotations[keyRestoreSource] = p.Record.ID
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
		if sts.Annotations[keyRestoreID] != p.ID {
			return nil
		}
		if n, err := strconv.Atoi(sts.Annotations[annotationRestoreReplicas]); err == nil {
			replicas = int32(n)
		}
		delete(sts.Annotations, keyRestoreID)
		delete(sts.Annotations, keyRestoreSource)
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
		Source:         corev1.EventSource{Component: managedByRestore},
		FirstTimestamp: now,
		LastTimestamp:  now,
		Count:          1,
	}
	if _, err := cfg.Kube.CoreV1().Events(obj.Namespace).Create(context.WithoutCancel(ctx), ev, metav1.CreateOptions{}); err != nil {
		fmt.Fprintf(cfg.Progress, "restore %s: warning: recording Event %s on %s %s/%s: %v\n", p.ID, reason, obj.Kind, obj.Namespace, obj.Name, err)
	}
}
