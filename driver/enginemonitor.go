package driver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/golang/glog"
	"google.golang.org/grpc/codes"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// The monitor follows snapshot Jobs through the Job and Pod informers: every event queues the
// snapshot id, and a worker compares the Job with the record. There is no polling.
const (
	// podSnapshotIndex indexes the driver's pods by "<namespace>/<snapshot id>".
	podSnapshotIndex = "snapshotID"
	// maxResultWaits bounds how often a Complete Job whose pod status has not shown the verify result
	// yet is looked at again (rate-limited, roughly three minutes in all) before the snapshot fails.
	maxResultWaits = 15
)

// errAwaitingResult requeues a snapshot whose Job completed before its pod's status reached the cache.
var errAwaitingResult = errors.New("monitor: Job complete, waiting for the verify result in the pod status")

func podSnapshotIndexFunc(obj any) ([]string, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Labels[labelSnapshotID] == "" {
		return nil, nil
	}
	return []string{pod.Namespace + "/" + pod.Labels[labelSnapshotID]}, nil
}

// enqueueObject queues the snapshot a Job or Pod event belongs to.
func (e *Engine) enqueueObject(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	if id := m.GetLabels()[labelSnapshotID]; isRecordID(id) {
		e.queue.Add(id)
	}
}

// enqueueUnfinishedRecord queues records that need the monitor without any Job event: Running ones
// (their Job may have vanished while the driver was down) and Failed ones not yet cleaned up.
func (e *Engine) enqueueUnfinishedRecord(obj any) {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return
	}
	rec, err := decodeRecord(cm)
	if err != nil {
		return
	}
	if rec.Phase == PhaseRunning || (rec.Phase == PhaseFailed && !rec.CleanedUp) {
		e.queue.Add(rec.ID)
	}
}

// metadataDeleted notes that the cache has caught up with a deleted record.
func (e *Engine) metadataDeleted(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if m, err := meta.Accessor(obj); err == nil {
		e.meta.forgetDeleted(m.GetName())
		e.forgetClusterIfGone(m)
	}
}

// reconcile moves the record of id forward from what its Job and pods show.
func (e *Engine) reconcile(ctx context.Context, id string) error {
	defer e.lock(id)()
	rec, err := e.meta.get(ctx, id)
	if err != nil || rec == nil {
		return err
	}
	switch rec.Phase {
	case PhaseReady:
		return e.keepVolume(ctx, rec)
	case PhaseLost:
		return nil
	case PhaseFailed:
		return e.finishFailed(ctx, rec)
	}
	job, err := e.jobs.Jobs(rec.Namespace).Get(snapshotJobName(id))
	if apierrors.IsNotFound(err) {
		if rec.Phase != PhaseRunning {
			// Pending without a Job: a Create is under way or will resume; nothing to follow yet.
			return nil
		}
		// The cache may not show a Job created a moment ago; only the API server can say it is gone.
		job, err = e.cfg.Kube.BatchV1().Jobs(rec.Namespace).Get(ctx, snapshotJobName(id), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return e.markFailed(ctx, id, fmt.Sprintf("Job %s/%s was deleted before it finished", rec.Namespace, id))
		}
	}
	if err != nil {
		return err
	}
	if job.Labels[labelSnapshotID] != id {
		return nil
	}
	pods := e.podsOf(rec.Namespace, id)
	out := jobOutcome(job, pods)
	switch out.state {
	case jobSucceeded:
		if out.result != nil {
			return e.markReady(ctx, rec, out.result)
		}
		if out.resultErr == nil && e.queue.NumRequeues(id) < maxResultWaits {
			return errAwaitingResult
		}
		reason := fmt.Sprintf("Job %s/%s completed but no pod reported a verify result", rec.Namespace, id)
		if out.resultErr != nil {
			reason = out.resultErr.Error()
		}
		return e.markFailed(ctx, id, reason)
	case jobFailed:
		return e.markFailed(ctx, id, jobFailureReason(rec, pods, out.reason))
	}
	// Suspended is not failed: the Job waits for provision to resume it. Only a Running record's Job
	// is resumed here (a driver restart cut provision short after the record turned Running, so its
	// Secret exists); a Pending record's Secret may not exist yet and waits for the CO's retry.
	if rec.Phase == PhaseRunning && isSuspended(job) {
		return e.resumeAfterRestart(ctx, rec, job)
	}
	return nil
}

// AwaitFinished gives the Job of a Running record up to EngineConfig.CreateWait to finish, and
// returns the record as it then is. The csi-snapshotter learns that a snapshot is ready only from
// a Create answer, and re-calls on its backoff. For a group, each not-ready answer it records (the
// content's status with its member list) also makes the upstream snapshot-controller (v8.7.0)
// sync the VolumeGroupSnapshot, about 20 API calls for three members under its client rate limit,
// and the sync that finally marks it ready waits behind those. A small database's Job finishes in
// about a second: waiting for it makes the first answer the ready one. A longer Job is answered
// not ready after the wait, as without it, and the wake-up (dynamicgroupwake.go) shortens the rest. The
// record is watched through the metadata cache, so a Job another replica follows wakes it too.
func (e *Engine) AwaitFinished(ctx context.Context, rec *Record) *Record {
	if e.cfg.CreateWait <= 0 || rec == nil || rec.Phase != PhaseRunning {
		return rec
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.CreateWait)
	defer cancel()
	for {
		// Watch before reading, so a change between the read and the wait is not missed.
		changed, stop := e.meta.watch(rec.ID)
		cur, err := e.meta.get(ctx, rec.ID)
		if err != nil || cur == nil {
			stop()
			return rec // the answer the caller already had; its next call reads again
		}
		switch cur.Phase {
		case PhaseReady, PhaseFailed, PhaseLost:
			stop()
			return cur
		case PhaseRunning:
			rec = cur
		}
		// Anything else is a Pending entry: the cache trailing Create's own write, since a record
		// never goes back from Running to Pending. Wait on, and answer at worst with the Running record.
		select {
		case <-changed:
		case <-ctx.Done():
			stop()
			return rec
		}
	}
}

// resumeAfterRestart resumes a Running snapshot's suspended Job. provision created the Secret before
// the record turned Running; only if the fallback credentials are configured is a missing one created
// again from them (a Secret that exists is kept: the driver cannot read it to compare).
func (e *Engine) resumeAfterRestart(ctx context.Context, rec *Record, cached *batchv1.Job) error {
	// The cache may trail provision's own resume; ask the API server before writing.
	job, err := e.cfg.Kube.BatchV1().Jobs(rec.Namespace).Get(ctx, snapshotJobName(rec.ID), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil // the delete event queues the snapshot again
	}
	if err != nil {
		return kubeStatus(err, "reading Job %s/%s", rec.Namespace, rec.ID)
	}
	if job.UID != cached.UID || !isSuspended(job) {
		return nil
	}
	if e.cfg.FallbackCreds != nil && mountsTLSSecret(job) {
		secret := newTLSSecret(rec, *e.cfg.FallbackCreds)
		secret.OwnerReferences = []metav1.OwnerReference{jobOwnerReference(job)}
		_, err := e.cfg.Kube.CoreV1().Secrets(rec.Namespace).Create(ctx, secret, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return kubeStatus(err, "creating Secret %s/%s", rec.Namespace, secret.Name)
		}
	}
	glog.Infof("Snapshot %s (%s): resuming Job %s/%s, left suspended by an earlier driver process", rec.ID, rec.Name, rec.Namespace, rec.ID)
	return e.resumeJob(ctx, rec.Namespace, rec.ID)
}

// mountsTLSSecret reports whether job's pod mounts the snapshot's credentials Secret.
func mountsTLSSecret(job *batchv1.Job) bool {
	for _, v := range job.Spec.Template.Spec.Volumes {
		if v.Secret != nil && v.Secret.SecretName == tlsSecretName(job.Name) {
			return true
		}
	}
	return false
}

// podsOf lists the cached pods of snapshot id in ns.
func (e *Engine) podsOf(ns, id string) []*corev1.Pod {
	objs, err := e.podIndexer.ByIndex(podSnapshotIndex, ns+"/"+id)
	if err != nil {
		return nil
	}
	pods := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			pods = append(pods, p)
		}
	}
	return pods
}

// markReady records the verified result. The credentials Secret goes at once (nothing needs it any
// more), before the record says Ready so that a Ready snapshot has left no credentials behind; the
// Job and its pods stay, for inspection, until the snapshot is deleted.
func (e *Engine) markReady(ctx context.Context, pending *Record, res *VerifyResult) error {
	id := pending.ID
	if err := e.deleteTLSSecret(ctx, pending.Namespace, id); err != nil {
		glog.Warningf("Snapshot %s is verified but its credentials Secret stays until the Job is deleted: %v", id, err)
	}
	now := time.Now().UTC()
	changed := false
	rec, err := e.meta.update(ctx, id, func(r *Record) error {
		// update calls this again after a conflict (the cache showed an older record): only the
		// attempt that is written may count as the change.
		changed = false
		if r.Phase != PhasePending && r.Phase != PhaseRunning {
			return errNoChange
		}
		r.Phase, r.ReadyAt, r.Error, r.ErrorCode = PhaseReady, &now, "", ""
		r.SizeBytes, r.SHA256, r.Hash, r.HashChecked = res.Size, res.SHA256, res.Hash, res.HashChecked
		r.Revision, r.CompactRevision, r.Keys, r.TotalKeys = res.Revision, res.CompactRevision, res.Keys, res.TotalKeys
		changed = true
		return nil
	})
	if err != nil || rec == nil || !changed {
		return err
	}
	snapshotOperations.WithLabelValues("create", "success").Inc()
	snapshotDuration.Observe(now.Sub(rec.CreatedAt).Seconds())
	snapshotSize.Observe(float64(res.Size))
	if rec.Group && e.cfg.OnGroupReady != nil {
		e.cfg.OnGroupReady(ctx, id, now)
	}
	glog.Infof("Snapshot %s (%s) of etcd cluster %s/%s is ready: %d bytes, revision %d, %d keys, sha256 %s, from member %s",
		id, rec.Name, rec.Namespace, rec.Cluster, res.Size, res.Revision, res.Keys, res.SHA256, rec.SourceMember.Name)
	return e.keepVolume(ctx, rec)
}

// markFailed records why the snapshot failed, then removes its Job, Secret and PVC.
func (e *Engine) markFailed(ctx context.Context, id, reason string) error {
	changed := false
	rec, err := e.meta.update(ctx, id, func(r *Record) error {
		changed = false // as in markReady: a conflict retries this with the API server's record
		if r.Phase != PhasePending && r.Phase != PhaseRunning {
			return errNoChange
		}
		r.Phase, r.Error, r.ErrorCode = PhaseFailed, reason, codes.Internal.String()
		changed = true
		return nil
	})
	if err != nil || rec == nil {
		return err
	}
	if changed {
		snapshotOperations.WithLabelValues("create", "failure").Inc()
		glog.Warningf("Snapshot %s (%s) of etcd cluster %s/%s failed: %s", id, rec.Name, rec.Namespace, rec.Cluster, reason)
	}
	if rec.Phase != PhaseFailed {
		return nil
	}
	return e.finishFailed(ctx, rec)
}

// finishFailed removes the objects of a Failed snapshot once and notes that in the record.
func (e *Engine) finishFailed(ctx context.Context, rec *Record) error {
	if rec.CleanedUp {
		return nil
	}
	if err := e.deleteSnapshotObjects(ctx, rec.Namespace, rec.ID); err != nil {
		return err
	}
	_, err := e.meta.update(ctx, rec.ID, func(r *Record) error {
		if r.Phase != PhaseFailed {
			// The cache has not seen the Failed write yet: writing this copy back would undo the failure.
			// A conflict makes update read the record from the API server.
			return apierrors.NewConflict(corev1.Resource("configmaps"), rec.ID, errors.New("metadata cache is behind"))
		}
		if r.CleanedUp {
			return errNoChange
		}
		r.CleanedUp = true
		return nil
	})
	return err
}
