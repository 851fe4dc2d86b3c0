package driver

import (
	"context"
	"fmt"
	"time"

	"github.com/golang/glog"
	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// startDue starts the run that is due, if any, under CronJob's Forbid policy and startingDeadlineSeconds.
func (r *scheduleSync) startDue(ctx context.Context, due dueRuns) error {
	r.setCondition(condReady, metav1.ConditionTrue, reasonScheduled, fmt.Sprintf("Next run at %s", r.st.NextScheduleTime.UTC().Format(time.RFC3339)))
	if due.count == 0 {
		return nil
	}
	dueName := runName(r.s.Name, due.latest)
	exists := false
	for _, run := range r.runs {
		if run.vgs.Name == dueName {
			// Started by a pass whose status write failed, or by another replica.
			exists = true
			continue
		}
		if run.state == runInFlight {
			// Forbid: the due run waits (and may become missed); the run's progress requeues us.
			glog.V(4).Infof("schedule %s/%s: run at %s waits for %s", r.s.Namespace, r.s.Name, due.latest.UTC().Format(time.RFC3339), run.vgs.Name)
			return nil
		}
	}
	if d := r.s.Spec.StartingDeadlineSeconds; !exists && d != nil && r.now.Sub(due.latest) > time.Duration(*d)*time.Second {
		r.st.LastMissedScheduleTime = &metav1.Time{Time: due.latest}
		r.missed(due.count, due.latest, fmt.Sprintf("the latest, at %s, is more than startingDeadlineSeconds (%ds) in the past",
			due.latest.UTC().Format(time.RFC3339), *d))
		return nil
	}
	if due.count > 1 {
		r.missed(due.count-1, due.latest, fmt.Sprintf("before the run at %s (the driver was not running, or the previous run was still in progress)",
			due.latest.UTC().Format(time.RFC3339)))
	}
	if exists {
		r.adopt(dueName, due.latest)
		return nil
	}
	return r.create(ctx, due.latest)
}

// adopt accounts for the existing run at t as started.
func (r *scheduleSync) adopt(name string, t time.Time) {
	r.st.LastScheduleTime = &metav1.Time{Time: t}
	if r.st.LastSnapshot == nil || r.st.LastSnapshot.Name != name {
		r.st.LastSnapshot = &lastSnapshot{Name: name}
	}
}

// missed counts n missed runs once and says why.
func (r *scheduleSync) missed(n int64, latest time.Time, why string) {
	msg := fmt.Sprintf("Missed %d run(s): %s", n, why)
	if n > tooManyMissedRuns {
		msg += fmt.Sprintf("; more than %d missed runs: check the clocks, or set spec.startingDeadlineSeconds", tooManyMissedRuns)
	}
	r.report(func() {
		scheduleMissedRuns.WithLabelValues(r.s.Namespace, r.s.Name).Add(float64(n))
		glog.Warningf("schedule %s/%s: %s", r.s.Namespace, r.s.Name, msg)
		r.c.recorder.Event(r.u, corev1.EventTypeWarning, evRunMissed, msg)
	})
}

// create makes the VolumeGroupSnapshot of the run at t. Its name is the idempotency key: a second
// replica, or this one after a crash, finds it existing and adopts it.
func (r *scheduleSync) create(ctx context.Context, t time.Time) error {
	name := runName(r.s.Name, t)
	vgs := r.buildRun(name, t)
	_, err := r.c.cfg.Snapshots.GroupsnapshotV1().VolumeGroupSnapshots(r.s.Namespace).Create(ctx, vgs, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
		existing, getErr := r.c.cfg.Snapshots.GroupsnapshotV1().VolumeGroupSnapshots(r.s.Namespace).Get(ctx, name, metav1.GetOptions{})
		if getErr != nil {
			return fmt.Errorf("reading existing VolumeGroupSnapshot %s: %w", name, getErr)
		}
		if existing.Labels[labelSchedule] != r.s.Name {
			msg := fmt.Sprintf("VolumeGroupSnapshot %s exists and was not created by this schedule (no label %s=%s); rename it or the schedule", name, labelSchedule, r.s.Name)
			r.setCondition(condReady, metav1.ConditionFalse, reasonCreateFailed, msg)
			return fmt.Errorf("%s", msg)
		}
		glog.V(2).Infof("schedule %s/%s: run %s exists already", r.s.Namespace, r.s.Name, name)
		r.adopt(name, t)
		return nil
	case err != nil:
		msg := fmt.Sprintf("Creating VolumeGroupSnapshot %s failed: %v", name, err)
		r.setCondition(condReady, metav1.ConditionFalse, reasonCreateFailed, msg)
		return fmt.Errorf("creating VolumeGroupSnapshot %s: %w", name, err)
	default:
		glog.V(2).Infof("schedule %s/%s: created VolumeGroupSnapshot %s", r.s.Namespace, r.s.Name, name)
		r.c.recorder.Eventf(r.u, corev1.EventTypeNormal, evSnapshotCreated, "Created VolumeGroupSnapshot %s for the run at %s", name, t.UTC().Format(time.RFC3339))
	}
	r.adopt(name, t)
	return nil
}

// buildRun is the VolumeGroupSnapshot of one run. It has no owner reference: deleting the schedule
// must not delete its backups.
func (r *scheduleSync) buildRun(name string, t time.Time) *groupsnapshotv1.VolumeGroupSnapshot {
	lbls := map[string]string{}
	for k, v := range r.s.Spec.SnapshotLabels {
		lbls[k] = v
	}
	lbls[labelSchedule] = r.s.Name
	anns := map[string]string{}
	for k, v := range r.s.Spec.SnapshotAnnotations {
		anns[k] = v
	}
	anns[annotationScheduledTime] = t.UTC().Format(time.RFC3339)
	selector := r.s.Spec.Source.Selector
	if c := r.s.Spec.Source.Cluster; c != nil {
		selector = &metav1.LabelSelector{MatchLabels: map[string]string{r.c.cfg.ClusterLabel: *c}}
	}
	className := r.s.Spec.VolumeGroupSnapshotClassName
	return &groupsnapshotv1.VolumeGroupSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.s.Namespace, Labels: lbls, Annotations: anns},
		Spec: groupsnapshotv1.VolumeGroupSnapshotSpec{
			VolumeGroupSnapshotClassName: &className,
			Source:                       groupsnapshotv1.VolumeGroupSnapshotSource{Selector: selector.DeepCopy()},
		},
	}
}
