package driver

import (
	"context"
	"time"

	"github.com/golang/glog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// cleanupTimeout bounds cleanup that runs after the caller's context is gone (a cancelled or timed
// out RPC must still not leak objects).
const cleanupTimeout = 30 * time.Second

// Delete removes the Job, Secret and PVC of snapshot id, sets its volume's reclaim policy back to the
// one it had before the snapshot kept it (releaseVolume), then removes its metadata. An unknown id is
// already deleted (nil). A group member id is refused: its file belongs to the whole group.
func (e *Engine) Delete(ctx context.Context, id string) error {
	if IsMemberSnapshotID(id) {
		return status.Errorf(codes.InvalidArgument, "snapshot %s is a member of group snapshot %s; delete the group snapshot", id, GroupIDOfMember(id))
	}
	if !isRecordID(id) {
		return nil
	}
	defer e.lock(id)()
	rec, err := e.meta.get(ctx, id)
	if err != nil || rec == nil {
		return err
	}
	if err := e.deleteSnapshotObjects(ctx, rec.Namespace, id); err != nil {
		snapshotOperations.WithLabelValues("delete", "failure").Inc()
		return err
	}
	if err := e.releaseVolume(ctx, rec); err != nil {
		snapshotOperations.WithLabelValues("delete", "failure").Inc()
		return err
	}
	if err := e.meta.delete(ctx, id); err != nil {
		snapshotOperations.WithLabelValues("delete", "failure").Inc()
		return err
	}
	snapshotOperations.WithLabelValues("delete", "success").Inc()
	glog.V(2).Infof("Deleted snapshot %s (%s) of cluster %s/%s", id, rec.Name, rec.Namespace, rec.Cluster)
	return nil
}

// snapshotObject is one kind of namespaced object the driver creates per snapshot.
type snapshotObject struct {
	kind string
	name string
	// get reads the object so its id label can be checked before deleting it; nil deletes by name
	// without reading (Secrets, which the driver may not read).
	get    func(ctx context.Context) (metav1.Object, error)
	delete func(ctx context.Context, opts metav1.DeleteOptions) error
}

// snapshotObjects lists the Job, Secret and PVC of snapshot id in ns, in deletion order: the Job first
// so no pod is left writing to the PVC or reading the Secret.
func (e *Engine) snapshotObjects(ns, id string) []snapshotObject {
	jobs := e.cfg.Kube.BatchV1().Jobs(ns)
	pvcs := e.cfg.Kube.CoreV1().PersistentVolumeClaims(ns)
	return []snapshotObject{{
		kind: "Job", name: snapshotJobName(id),
		get: func(ctx context.Context) (metav1.Object, error) {
			return jobs.Get(ctx, snapshotJobName(id), metav1.GetOptions{})
		},
		delete: func(ctx context.Context, o metav1.DeleteOptions) error {
			// Background propagation: the garbage collector removes the pods (and the owned Secret).
			o.PropagationPolicy = ptr.To(metav1.DeletePropagationBackground)
			return jobs.Delete(ctx, snapshotJobName(id), o)
		},
	}, {
		kind: "Secret", name: tlsSecretName(id),
		delete: func(ctx context.Context, _ metav1.DeleteOptions) error { return e.deleteTLSSecret(ctx, ns, id) },
	}, {
		kind: "PersistentVolumeClaim", name: snapshotPVCName(id),
		get: func(ctx context.Context) (metav1.Object, error) {
			return pvcs.Get(ctx, snapshotPVCName(id), metav1.GetOptions{})
		},
		delete: func(ctx context.Context, o metav1.DeleteOptions) error {
			return pvcs.Delete(ctx, snapshotPVCName(id), o)
		},
	}}
}

// deleteSnapshotObjects deletes the Job, Secret and PVC of snapshot id. The Job and PVC are deleted
// only if their id label is this id, with a UID precondition so an object recreated meanwhile under
// the same name is left alone; the Secret by name (see deleteTLSSecret). Missing objects are fine.
// All objects are tried; the first error is returned.
func (e *Engine) deleteSnapshotObjects(ctx context.Context, ns, id string) error {
	var first error
	for _, o := range e.snapshotObjects(ns, id) {
		if err := deleteIfOurs(ctx, ns, id, o); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// deleteIfOurs deletes one object when it carries snapshot id's label, or by name when it cannot be read.
func deleteIfOurs(ctx context.Context, ns, id string, o snapshotObject) error {
	if o.get == nil {
		return o.delete(ctx, metav1.DeleteOptions{})
	}
	obj, err := o.get(ctx)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return kubeStatus(err, "reading %s %s/%s", o.kind, ns, o.name)
	}
	if obj.GetLabels()[labelSnapshotID] != id {
		glog.Warningf("Not deleting %s %s/%s: it is not part of snapshot %s (label %s=%q)", o.kind, ns, o.name, id, labelSnapshotID, obj.GetLabels()[labelSnapshotID])
		return nil
	}
	opts := metav1.DeleteOptions{}
	if uid := obj.GetUID(); uid != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	err = o.delete(ctx, opts)
	if err == nil || apierrors.IsNotFound(err) {
		glog.V(2).Infof("Deleted %s %s/%s of snapshot %s", o.kind, ns, o.name, id)
		return nil
	}
	if apierrors.IsConflict(err) {
		// The UID precondition failed: the name now belongs to a different object.
		return nil
	}
	return kubeStatus(err, "deleting %s %s/%s", o.kind, ns, o.name)
}

// rollback undoes a Create that failed after its metadata was written: every object of the snapshot,
// then the metadata, so a retried Create starts from scratch. It runs on its own deadline because
// the failure may be the caller's context ending.
func (e *Engine) rollback(ctx context.Context, rec *Record, cause error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	glog.V(2).Infof("Rolling back snapshot %s (%s): %v", rec.ID, rec.Name, cause)
	err := e.deleteSnapshotObjects(ctx, rec.Namespace, rec.ID)
	if err == nil {
		err = e.meta.delete(ctx, rec.ID)
	}
	if err != nil {
		// The record stays Pending; the sweeper retries, unless the next Create or Delete comes first.
		glog.Errorf("Rolling back snapshot %s left objects behind: %v", rec.ID, err)
		if e.rollbackFailed != nil {
			e.rollbackFailed(rec.ID)
		}
	}
}
