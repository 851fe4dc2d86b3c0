package driver

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/golang/glog"
	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
)

var metaUpdateOptions = metav1.UpdateOptions{FieldManager: "etcd-snapshot-driver"}

// scheduleSync is one pass over one schedule at one instant. Its steps read and change st, the
// status written at the end.
type scheduleSync struct {
	c   *ScheduleController
	u   *unstructured.Unstructured
	s   *etcdSnapshotSchedule
	st  scheduleStatus
	now time.Time

	// runs are the schedule's VolumeGroupSnapshots after pruning, oldest first.
	runs []scheduleRun
	// interval is the time between the next two runs; 0 when the schedule does not parse.
	interval time.Duration
	// reports are the events and counter increments of what this pass observed (a run ready or
	// failed, runs missed). They happen only once st is written: a pass whose write fails (a cache
	// behind the API, a conflict) is repeated, and must not report twice. Actions (create, delete)
	// report at once.
	reports []func()
}

// report queues an observation for after the status write.
func (r *scheduleSync) report(f func()) { r.reports = append(r.reports, f) }

func (r *scheduleSync) run(ctx context.Context) (time.Duration, error) {
	r.st.ObservedGeneration = r.s.Generation
	runs, err := r.listRuns()
	if err != nil {
		return 0, err
	}
	r.observe(ctx, runs)
	r.runs, err = r.prune(ctx, runs)
	r.st.ReadySnapshots = int32(countState(r.runs, runReady))
	if err != nil {
		return 0, err
	}

	sched, err := parseSchedule(r.s.Spec.Schedule, ptrValue(r.s.Spec.TimeZone))
	if err != nil {
		r.st.NextScheduleTime = nil
		r.setCondition(condReady, metav1.ConditionFalse, reasonInvalidSchedule, err.Error())
		r.setCondition(condBackupStale, metav1.ConditionUnknown, reasonInvalidSchedule, "No interval to measure against: "+err.Error())
		return 0, nil
	}
	r.interval = scheduleInterval(sched, r.now)
	// The schedule times run on from the last one accounted for (an @every schedule counts from
	// there, not from now); the next run is the first of them after now.
	since := r.s.CreationTimestamp.Time
	for _, t := range []*metav1.Time{r.st.LastScheduleTime, r.st.LastMissedScheduleTime} {
		if t != nil && t.After(since) {
			since = t.Time
		}
	}
	due := findDueRuns(sched, since, r.now)
	next := sched.Next(since)
	if due.count > 0 {
		next = sched.Next(due.latest)
	}
	r.st.NextScheduleTime = &metav1.Time{Time: next}
	var startErr error
	switch reason, msg := r.checkSource(); {
	case r.s.Spec.Suspend:
		r.st.NextScheduleTime = nil
		r.setCondition(condReady, metav1.ConditionFalse, reasonSuspended, "spec.suspend is true: no run starts until it is false")
	case reason != "":
		r.setCondition(condReady, metav1.ConditionFalse, reason, msg)
	default:
		startErr = r.startDue(ctx, due)
	}
	// Wake up for the next run, for the moment the backup turns stale, and for a run whose unbound
	// error will count as a failure (and so stop holding back the next run).
	var wake []time.Time
	if !r.s.Spec.Suspend {
		wake = append(wake, next)
	}
	wake = append(wake, r.staleness())
	for _, run := range r.runs {
		if run.state == runInFlight && run.vgs.Status != nil && run.vgs.Status.Error != nil {
			wake = append(wake, run.vgs.CreationTimestamp.Add(unboundErrorGrace))
		}
	}
	var after time.Duration
	for _, t := range wake {
		if d := t.Sub(r.now); d > 0 && (after == 0 || d < after) {
			after = d
		}
	}
	return after, startErr
}

// listRuns returns the VolumeGroupSnapshots labelled with this schedule, oldest first, leaving out
// those being deleted.
func (r *scheduleSync) listRuns() ([]scheduleRun, error) {
	sel := labels.SelectorFromSet(labels.Set{labelSchedule: r.s.Name})
	list, err := r.c.vgsLister.VolumeGroupSnapshots(r.s.Namespace).List(sel)
	if err != nil {
		return nil, err
	}
	runs := make([]scheduleRun, 0, len(list))
	for _, vgs := range list {
		if vgs.DeletionTimestamp == nil {
			runs = append(runs, classifyRun(vgs, r.now))
		}
	}
	sortRuns(runs)
	return runs, nil
}

// observe reports the progress of the latest run once: status.lastSnapshot remembers what was
// reported, so a resync or a restart does not repeat an event.
func (r *scheduleSync) observe(ctx context.Context, runs []scheduleRun) {
	for _, run := range runs {
		if run.state != runReady {
			continue
		}
		at := run.at
		if run.vgs.Status.CreationTime != nil {
			at = run.vgs.Status.CreationTime.Time
		}
		if r.st.LastSuccessfulTime == nil || at.After(r.st.LastSuccessfulTime.Time) {
			r.st.LastSuccessfulTime = &metav1.Time{Time: at}
		}
	}
	if len(runs) == 0 {
		return
	}
	latest := runs[len(runs)-1]
	ls := r.st.LastSnapshot
	if ls != nil && ls.Name != latest.vgs.Name {
		// A newer run exists already (made by a pass whose status write failed): report the end of the
		// one the status describes before moving on.
		for _, run := range runs {
			if run.vgs.Name == ls.Name {
				r.reportEnd(ctx, run, ls)
			}
		}
	}
	if ls == nil || ls.Name != latest.vgs.Name {
		ls = &lastSnapshot{Name: latest.vgs.Name}
		r.st.LastSnapshot = ls
	}
	r.reportEnd(ctx, latest, ls)
}

// reportEnd records in ls, and reports once, that run became ready or failed.
func (r *scheduleSync) reportEnd(ctx context.Context, latest scheduleRun, ls *lastSnapshot) {
	switch {
	case latest.state == runReady && !ls.ReadyToUse:
		ls.ReadyToUse, ls.Error = true, ""
		ls.Revision, ls.Size = r.recordOf(ctx, latest.vgs)
		msg := fmt.Sprintf("VolumeGroupSnapshot %s is ready (revision %d, %d bytes)", latest.vgs.Name, ls.Revision, ls.Size)
		r.report(func() {
			scheduleRuns.WithLabelValues(r.s.Namespace, r.s.Name, "success").Inc()
			r.c.recorder.Event(r.u, corev1.EventTypeNormal, evSnapshotReady, msg)
		})
	case latest.state == runFailed && ls.Error == "" && !ls.ReadyToUse:
		ls.Error = latest.err
		msg := fmt.Sprintf("VolumeGroupSnapshot %s failed: %s", latest.vgs.Name, latest.err)
		r.report(func() {
			scheduleRuns.WithLabelValues(r.s.Namespace, r.s.Name, "failure").Inc()
			r.c.recorder.Event(r.u, corev1.EventTypeWarning, evSnapshotFailed, msg)
		})
	}
}

// recordOf reads the revision and size of a ready run from the driver's record; zeros when unknown.
func (r *scheduleSync) recordOf(ctx context.Context, vgs *groupsnapshotv1.VolumeGroupSnapshot) (int64, int64) {
	if r.c.cfg.Records == nil || !dgIsBound(vgs) {
		return 0, 0
	}
	content, err := r.c.cfg.Snapshots.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(ctx, *vgs.Status.BoundVolumeGroupSnapshotContentName, metav1.GetOptions{})
	if err != nil || content.Status == nil || content.Status.VolumeGroupSnapshotHandle == nil {
		glog.V(2).Infof("schedule %s/%s: no group snapshot handle for %s yet: %v", r.s.Namespace, r.s.Name, vgs.Name, err)
		return 0, 0
	}
	rec, err := r.c.cfg.Records(ctx, *content.Status.VolumeGroupSnapshotHandle)
	if err != nil || rec == nil {
		glog.V(2).Infof("schedule %s/%s: no record for %s: %v", r.s.Namespace, r.s.Name, vgs.Name, err)
		return 0, 0
	}
	return rec.Revision, rec.SizeBytes
}

// prune deletes what retention does not keep and returns the runs left.
func (r *scheduleSync) prune(ctx context.Context, runs []scheduleRun) ([]scheduleRun, error) {
	spec := &r.s.Spec
	doomed := pruneRuns(runs, spec.keep(), spec.keepFailed(), spec.maxAge(), r.now)
	if len(doomed) == 0 {
		return runs, nil
	}
	gone := make(map[string]bool, len(doomed))
	var firstErr error
	for _, run := range doomed {
		uid := run.vgs.UID
		err := r.c.cfg.Snapshots.GroupsnapshotV1().VolumeGroupSnapshots(run.vgs.Namespace).Delete(ctx, run.vgs.Name,
			metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) {
			if firstErr == nil {
				firstErr = fmt.Errorf("pruning VolumeGroupSnapshot %s: %w", run.vgs.Name, err)
			}
			continue
		}
		gone[run.vgs.Name] = true
		why := fmt.Sprintf("retention keeps the newest %d ready and %d failed", spec.keep(), spec.keepFailed())
		if ma := spec.maxAge(); ma != nil && r.now.Sub(run.at) > ma.Duration {
			why = fmt.Sprintf("older than retention.maxAge %s", ma.Duration)
		}
		glog.V(2).Infof("schedule %s/%s: pruned %s VolumeGroupSnapshot %s (%s)", r.s.Namespace, r.s.Name, run.state, run.vgs.Name, why)
		r.c.recorder.Eventf(r.u, corev1.EventTypeNormal, evSnapshotPruned,
			"Deleted %s VolumeGroupSnapshot %s of the run at %s: %s", run.state, run.vgs.Name, run.at.UTC().Format(time.RFC3339), why)
	}
	left := runs[:0:0]
	for _, run := range runs {
		if !gone[run.vgs.Name] {
			left = append(left, run)
		}
	}
	return left, firstErr
}

// checkSource returns a Ready reason and message when the schedule cannot take a snapshot as written.
func (r *scheduleSync) checkSource() (string, string) {
	src := r.s.Spec.Source
	if (src.Selector == nil) == (src.Cluster == nil) {
		return reasonInvalidSource, "Set exactly one of spec.source.selector and spec.source.cluster"
	}
	if src.Selector != nil {
		if _, err := metav1.LabelSelectorAsSelector(src.Selector); err != nil {
			return reasonInvalidSource, fmt.Sprintf("spec.source.selector: %v", err)
		}
	}
	className := r.s.Spec.VolumeGroupSnapshotClassName
	class, err := r.c.classLister.Get(className)
	if apierrors.IsNotFound(err) {
		return reasonClassNotFound, fmt.Sprintf("VolumeGroupSnapshotClass %q does not exist: create it or fix spec.volumeGroupSnapshotClassName; no run starts until then", className)
	}
	if err != nil {
		return reasonClassNotFound, fmt.Sprintf("VolumeGroupSnapshotClass %q: %v", className, err)
	}
	if class.Driver != r.c.cfg.DriverName {
		return reasonClassNotOurs, fmt.Sprintf("VolumeGroupSnapshotClass %q is for driver %s, not %s: name a class of %s", className, class.Driver, r.c.cfg.DriverName, r.c.cfg.DriverName)
	}
	return "", ""
}

// staleness sets BackupStale and returns when it will turn True (zero when it already is or cannot).
func (r *scheduleSync) staleness() time.Time {
	limit := 2 * r.interval
	ref, reason := r.s.CreationTimestamp.Time, reasonNeverSucceeded
	if r.st.LastSuccessfulTime != nil {
		ref, reason = r.st.LastSuccessfulTime.Time, reasonNoRecentSuccess
	}
	staleAt := ref.Add(limit)
	if r.now.After(staleAt) {
		msg := fmt.Sprintf("No successful snapshot since the schedule was created at %s, more than two intervals (%s) ago", ref.UTC().Format(time.RFC3339), limit)
		if reason == reasonNoRecentSuccess {
			msg = fmt.Sprintf("The last successful snapshot is from %s, more than two intervals (%s) ago", ref.UTC().Format(time.RFC3339), limit)
		}
		if ls := r.st.LastSnapshot; ls != nil && ls.Error != "" {
			msg += fmt.Sprintf("; the latest run %s failed: %s", ls.Name, ls.Error)
		}
		if cond := meta.FindStatusCondition(r.st.Conditions, condReady); cond != nil && cond.Status != metav1.ConditionTrue {
			msg += fmt.Sprintf("; the schedule is not running (%s)", cond.Reason)
		}
		r.setCondition(condBackupStale, metav1.ConditionTrue, reason, msg)
		return time.Time{}
	}
	r.setCondition(condBackupStale, metav1.ConditionFalse, reasonRecentSuccess,
		fmt.Sprintf("A successful snapshot is due within two intervals (%s) of %s", limit, ref.UTC().Format(time.RFC3339)))
	return staleAt
}

// setCondition sets a condition, keeping its transition time unless its status changes.
func (r *scheduleSync) setCondition(t string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&r.st.Conditions, metav1.Condition{
		Type: t, Status: status, Reason: reason, Message: msg,
		ObservedGeneration: r.s.Generation, LastTransitionTime: metav1.Time{Time: r.now},
	})
	sort.Slice(r.st.Conditions, func(i, j int) bool { return r.st.Conditions[i].Type > r.st.Conditions[j].Type })
}

func countState(runs []scheduleRun, s runState) int {
	n := 0
	for _, run := range runs {
		if run.state == s {
			n++
		}
	}
	return n
}

// statusEqual compares statuses as the API stores them (times to the second).
func statusEqual(a, b *scheduleStatus) bool {
	trim := func(s *scheduleStatus) *scheduleStatus {
		c := *s
		c.Conditions = append([]metav1.Condition(nil), s.Conditions...)
		for i := range c.Conditions {
			c.Conditions[i].LastTransitionTime = metav1.Time{Time: c.Conditions[i].LastTransitionTime.Truncate(time.Second)}
			c.Conditions[i].Message = strings.TrimSpace(c.Conditions[i].Message)
		}
		return &c
	}
	return equality.Semantic.DeepEqual(trim(a), trim(b))
}

func ptrValue(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
