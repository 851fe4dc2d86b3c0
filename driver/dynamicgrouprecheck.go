package driver

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/golang/glog"
	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Member VolumeSnapshots of a dynamic group can stay readyToUse=false for up to the
// csi-snapshotter's resync period (15 minutes) after the VolumeGroupSnapshot is ready.
// The upstream snapshot-controller (v8.7.0, groupsnapshot_controller_helper.go
// syncUnreadyGroupSnapshot -> createSnapshotsForGroupSnapshotContent ->
// updateVolumeSnapshotContentStatus) rewrites each member VolumeSnapshotContent's whole
// status from the group content's volumeSnapshotInfoList on every sync until the group
// is ready, including the sync that marks it ready. The sidecar fills that list once,
// from the first CreateVolumeGroupSnapshot reply, while the Job still runs, so every
// rewrite says "not ready". The sidecar ignores status-only changes
// (utils.ShouldEnqueueContentChange), so a member it had already found ready is not
// looked at again. Once the group is ready the rewrites stop, and an annotation change
// makes the sidecar sync the member, call ListSnapshots and record the true readiness.
// annotationReadinessCheck (labels.go) is the annotation whose change triggers that sync;
// its value is the time of the request, so every request is a change.

// dgMemberCheckLimit bounds the requests per VolumeGroupSnapshot. With upstream's
// backoff (1s doubling to 5m) ten retries span about 13 minutes; past that the
// sidecar's own resync re-checks the members anyway.
const dgMemberCheckLimit = 10

// recheckMembers asks the csi-snapshotter to re-check each member content of a ready,
// bound VolumeGroupSnapshot of this driver that is not ready yet. It returns an error
// wrapping errDGRetry while any member is not ready, so the workqueue's backoff brings
// the VolumeGroupSnapshot back, at most dgMemberCheckLimit times.
func (c *DynamicGroupController) recheckMembers(ctx context.Context, key string, vgs *groupsnapshotv1.VolumeGroupSnapshot) error {
	if vgs.Status == nil || vgs.Status.ReadyToUse == nil || !*vgs.Status.ReadyToUse {
		// Members still get their status rewritten; a request now would be overwritten.
		return nil
	}
	group, err := c.contentLister.Get(*vgs.Status.BoundVolumeGroupSnapshotContentName)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if group.Spec.Driver != c.driverName || group.Status == nil {
		return nil
	}

	// No VolumeSnapshotContent informer: this runs a few times per group snapshot,
	// not worth caching every content of the cluster for.
	contents := c.snap.SnapshotV1().VolumeSnapshotContents()
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		annotationReadinessCheck: time.Now().UTC().Format(time.RFC3339Nano)}}})
	if err != nil {
		return err
	}
	var pending []string
	for _, info := range group.Status.VolumeSnapshotInfoList {
		name := upstreamMemberContentName(vgs.UID, info.VolumeHandle)
		member, err := contents.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			pending = append(pending, name) // upstream creates it before marking the group ready; a stale cache
			continue
		}
		if err != nil {
			return fmt.Errorf("reading member VolumeSnapshotContent %s: %w", name, err)
		}
		if member.Spec.Driver != c.driverName {
			continue
		}
		if member.Status != nil && member.Status.ReadyToUse != nil && *member.Status.ReadyToUse {
			continue
		}
		pending = append(pending, name)
		if _, err := contents.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("annotating member VolumeSnapshotContent %s: %w", name, err)
		}
		glog.V(2).Infof("dynamicgroup: VolumeGroupSnapshot %s is ready; asked the csi-snapshotter to re-check member content %s", key, name)
	}
	if len(pending) == 0 {
		return nil
	}
	if n := c.queue.NumRequeues(key); n >= dgMemberCheckLimit {
		glog.Warningf("dynamicgroup: VolumeGroupSnapshot %s: member contents %v still not ready after %d re-checks; leaving them to the csi-snapshotter's resync", key, pending, n)
		return nil
	}
	return fmt.Errorf("%w: member contents %v not ready", errDGRetry, pending)
}
