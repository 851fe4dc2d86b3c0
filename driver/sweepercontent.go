package driver

import (
	"context"
	"fmt"
	"slices"

	"github.com/golang/glog"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// sweepContent removes a VolumeGroupSnapshotContent the dynamic group watch created once its grace
// period has passed, its VolumeGroupSnapshot is gone and no Create call on it is unanswered, then the
// snapshot the sidecar took for it.
// A Retain content is left alone: its deletion policy says the snapshot outlives the request.
func (s *Sweeper) sweepContent(ctx context.Context, name string) error {
	c, err := s.contentLister.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if c.Labels[labelManagedBy] != managedByDriver || c.DeletionTimestamp != nil ||
		c.Spec.DeletionPolicy != snapshotv1.VolumeSnapshotContentDelete {
		return nil
	}
	if wait := s.remaining(c.CreationTimestamp.Time); wait > 0 {
		s.queue.AddAfter(sweepContentPrefix+name, wait)
		return nil
	}
	gone, err := s.groupSnapshotGone(ctx, c.Spec.VolumeGroupSnapshotRef)
	if err != nil || !gone {
		return err
	}
	// The snapshot the sidecar took: the handle it recorded, and any record it requested for this
	// VolumeGroupSnapshot whose answer it has not recorded yet.
	ids, err := s.recordsOf(string(c.Spec.VolumeGroupSnapshotRef.UID))
	if err != nil {
		return err
	}
	if c.Status != nil && c.Status.VolumeGroupSnapshotHandle != nil && *c.Status.VolumeGroupSnapshotHandle != "" {
		if h := *c.Status.VolumeGroupSnapshotHandle; !slices.Contains(ids, h) {
			ids = append(ids, h)
		}
	}
	contents := s.snap.GroupsnapshotV1().VolumeGroupSnapshotContents()
	// The cache may not show a deletion this sweeper asked for a moment ago; counting it twice would
	// make the metric lie.
	if c, err = contents.Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) || (err == nil && c.DeletionTimestamp != nil) {
		return nil
	} else if err != nil {
		return fmt.Errorf("reading VolumeGroupSnapshotContent %s: %w", name, err)
	}
	// A Create call is unanswered: the snapshot removed now would be taken again by that call or by
	// the sidecar's next one (it calls Create on a deleted content while the annotation is there), and
	// csi-snapshotter v8.7.0 skips a content deleted in that state until its resync. The sidecar's
	// removal of the annotation is an update that brings the content back here (contentChanged).
	if _, creating := c.Annotations[upstreamGroupBeingCreatedAnnotation]; creating {
		glog.V(2).Infof("sweeper: VolumeGroupSnapshotContent %s is abandoned but a Create call on it is unanswered; waiting for the answer", name)
		return nil
	}
	// The snapshots to remove, found before the content goes: the sidecar may delete them itself once
	// it does (DeleteVolumeGroupSnapshot), and they are counted either way.
	var snapshots []*Record
	for _, id := range ids {
		rec, err := s.engine.Get(ctx, id)
		switch {
		case status.Code(err) == codes.NotFound:
			continue
		case err != nil:
			return err
		case !rec.Group:
			continue
		}
		snapshots = append(snapshots, rec)
	}

	// The content goes first, so that the sidecar calls Create on it no more. Once the
	// snapshot-controller has put its bound-protection finalizer on it, only the csi-snapshotter
	// removes that, and only with the being-deleted annotation, which the snapshot-controller sets
	// when it deletes a VolumeGroupSnapshot (processGroupSnapshotWithDeletionTimestamp in v8.7.0) and
	// never for one that is gone. The sidecar then calls DeleteVolumeGroupSnapshot and lets the
	// content go. The resourceVersion precondition makes the deletion fail if the sidecar has started
	// a Create since the look above; its update brings the content back here.
	rv := c.ResourceVersion
	if _, ok := c.Annotations[upstreamGroupBeingDeletedAnnotation]; !ok && len(c.Finalizers) > 0 {
		patch := []byte(`{"metadata":{"annotations":{"` + upstreamGroupBeingDeletedAnnotation + `":"yes"},"resourceVersion":"` + rv + `"}}`)
		patched, err := contents.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
		switch {
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
			return nil
		case err != nil:
			return fmt.Errorf("annotating VolumeGroupSnapshotContent %s for deletion: %w", name, err)
		}
		rv = patched.ResourceVersion
	}
	uid := c.UID
	err = contents.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return nil
	case err != nil:
		return fmt.Errorf("deleting VolumeGroupSnapshotContent %s: %w", name, err)
	}
	sweeperRemoved.WithLabelValues(sweptContent).Inc()
	glog.Infof("sweeper: removed VolumeGroupSnapshotContent %s: its VolumeGroupSnapshot %s/%s (uid %s) is gone",
		name, c.Spec.VolumeGroupSnapshotRef.Namespace, c.Spec.VolumeGroupSnapshotRef.Name, c.Spec.VolumeGroupSnapshotRef.UID)

	for _, rec := range snapshots {
		if err := s.sweepSnapshot(ctx, rec.ID); err != nil {
			// No event brings the deleted content back here: the snapshot is retried by its own key.
			glog.Warningf("sweeper: group snapshot %s of the removed VolumeGroupSnapshotContent %s: %v; retrying", rec.ID, name, err)
			s.queue.AddRateLimited(sweepSnapshotPrefix + rec.ID)
		}
	}
	return nil
}

// sweepSnapshot removes the group snapshot id of a removed content. It counts it also when the
// sidecar's DeleteVolumeGroupSnapshot for the deleted content came first: the sweep removed it
// either way.
func (s *Sweeper) sweepSnapshot(ctx context.Context, id string) error {
	if err := s.engine.Delete(ctx, id); err != nil {
		return err
	}
	sweeperRemoved.WithLabelValues(sweptSnapshot).Inc()
	glog.Infof("sweeper: removed group snapshot %s: its VolumeGroupSnapshot and content are gone", id)
	return nil
}

// recordsOf returns the ids of the group snapshot records the csi-snapshotter requested for the
// VolumeGroupSnapshot with uid (the UID ends the request name).
func (s *Sweeper) recordsOf(uid string) ([]string, error) {
	records, err := s.engine.meta.list()
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, r := range records {
		if m := requestUIDPattern.FindStringSubmatch(r.Name); r.Group && m != nil && m[1] == uid && !s.engine.meta.isDeleted(r.ID) {
			ids = append(ids, r.ID)
		}
	}
	return ids, nil
}

// groupSnapshotGone reports whether the VolumeGroupSnapshot ref names no longer exists (or is another
// object of the same name), asking the API server before saying so.
func (s *Sweeper) groupSnapshotGone(ctx context.Context, ref corev1.ObjectReference) (bool, error) {
	if vgs, err := s.vgsLister.VolumeGroupSnapshots(ref.Namespace).Get(ref.Name); err == nil && vgs.UID == ref.UID {
		return false, nil
	}
	vgs, err := s.snap.GroupsnapshotV1().VolumeGroupSnapshots(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("reading VolumeGroupSnapshot %s/%s: %w", ref.Namespace, ref.Name, err)
	}
	return vgs.UID != ref.UID, nil
}
