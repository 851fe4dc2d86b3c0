package driver

import (
	"context"
	"encoding/json"
	"time"

	"github.com/golang/glog"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// The csi-snapshotter learns that a group snapshot is ready only when it calls
// CreateVolumeGroupSnapshot again, and while the Job runs it re-calls with its workqueue's
// backoff (--retry-interval-start doubling to --retry-interval-max): a group that turns ready
// just after a call waits for the next one, up to the current interval (seconds for a small
// database, minutes for a large one). An annotation change of the VolumeGroupSnapshotContent is a
// change the sidecar does not ignore (ShouldEnqueueGroupContentChange in external-snapshotter
// v8.7.0 pkg/utils), so writing one the moment the record turns Ready makes it sync, and re-call
// Create, at once. dynamicgrouprecheck.go does the same for the member contents afterwards. The
// annotation is annotationReadyAt (labels.go); its value is the time the record turned Ready, so
// every wake-up is a change.

// WakeGroupContent annotates the VolumeGroupSnapshotContent of this driver whose group snapshot
// handle is id (status of a dynamic group, spec of a static import), so the csi-snapshotter
// re-calls the driver now rather than at its next backed-off retry. It only speeds things up:
// without it the sidecar still finds the snapshot ready at its next call, so failures are logged,
// not returned.
func (c *DynamicGroupController) WakeGroupContent(ctx context.Context, id string, readyAt time.Time) {
	contents, err := c.contentLister.List(labels.Everything())
	if err != nil {
		glog.Warningf("dynamicgroup: group snapshot %s is ready; listing VolumeGroupSnapshotContents to tell the csi-snapshotter: %v", id, err)
		return
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		annotationReadyAt: readyAt.UTC().Format(time.RFC3339Nano)}}})
	if err != nil {
		return
	}
	for _, content := range contents {
		handle := ""
		if content.Status != nil {
			handle = ptr.Deref(content.Status.VolumeGroupSnapshotHandle, "")
		}
		if content.Spec.Source.GroupSnapshotHandles != nil && handle == "" {
			handle = content.Spec.Source.GroupSnapshotHandles.VolumeGroupSnapshotHandle
		}
		if content.Spec.Driver != c.driverName || handle != id || content.DeletionTimestamp != nil {
			continue
		}
		_, err := c.snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Patch(ctx, content.Name, types.MergePatchType, patch, metav1.PatchOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			glog.Warningf("dynamicgroup: group snapshot %s is ready; annotating VolumeGroupSnapshotContent %s to tell the csi-snapshotter: %v", id, content.Name, err)
			continue
		}
		glog.V(2).Infof("dynamicgroup: group snapshot %s is ready; annotated VolumeGroupSnapshotContent %s so the csi-snapshotter re-checks it now", id, content.Name)
	}
}
