package driver

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/golang/glog"
	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// The csi-snapshotter reads the Secret named by a VolumeGroupSnapshotContent's deletion-secret
// annotations before it calls DeleteVolumeGroupSnapshot, and when that Secret cannot be read (its
// namespace is being deleted and the Secret or the RoleBinding letting the sidecar read it is gone)
// it records GroupSnapshotDeleteError "Failed to get snapshot credentials" and retries forever
// without calling the driver (external-snapshotter v8.7.0 pkg/sidecar-controller,
// deleteCSIGroupSnapshotOperation). The content's finalizer then stays, and with it the
// VolumeGroupSnapshot's, its members' and the namespace. With both annotations absent it calls
// Delete without secrets, and the driver's Delete needs none (Engine.Delete works with the
// driver's own RBAC). So once a content of this driver is being deleted, or its
// VolumeGroupSnapshot is, the driver removes the two annotations. Create still gets its
// credentials: the annotations stay until deletion starts, and a repeat Create of a Running or
// Ready snapshot ignores secrets. An annotation change is one the sidecar does not ignore, so it
// re-syncs the content at once rather than after its backoff.

// dgDeletionWorkers is the number of contents stripped at once.
const dgDeletionWorkers = 1

// enqueueDeletingContent queues a VolumeGroupSnapshotContent of this driver that is being deleted
// and still names a deletion secret. It makes no API call.
func (c *DynamicGroupController) enqueueDeletingContent(obj interface{}) {
	content, ok := obj.(*groupsnapshotv1.VolumeGroupSnapshotContent)
	if !ok || content.DeletionTimestamp == nil || !c.namesDeletionSecret(content) {
		return
	}
	c.deletionQueue.Add(content.Name)
}

// namesDeletionSecret reports whether content is this driver's and carries either deletion-secret
// annotation.
func (c *DynamicGroupController) namesDeletionSecret(content *groupsnapshotv1.VolumeGroupSnapshotContent) bool {
	if content.Spec.Driver != c.driverName {
		return false
	}
	_, name := content.Annotations[upstreamGroupDeletionSecretNameAnnotation]
	_, namespace := content.Annotations[upstreamGroupDeletionSecretNamespaceAnnotation]
	return name || namespace
}

// syncDeletingContent removes the deletion-secret annotations of the content named key if it is
// this driver's and is being deleted.
func (c *DynamicGroupController) syncDeletingContent(ctx context.Context, key string) error {
	content, err := c.contentLister.Get(key)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if content.DeletionTimestamp == nil {
		return nil
	}
	return c.dropDeletionSecret(ctx, content)
}

// dropDeletionSecretOf removes the deletion-secret annotations of the content bound to vgs, which is
// being deleted: status.boundVolumeGroupSnapshotContentName, else the name of the content this
// controller pre-creates. A content of another driver is left alone.
func (c *DynamicGroupController) dropDeletionSecretOf(ctx context.Context, vgs *groupsnapshotv1.VolumeGroupSnapshot) error {
	name := upstreamGroupContentPrefix + string(vgs.UID)
	if dgIsBound(vgs) {
		name = *vgs.Status.BoundVolumeGroupSnapshotContentName
	}
	content, err := c.contentLister.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return c.dropDeletionSecret(ctx, content)
}

// dropDeletionSecret merge-patches both deletion-secret annotations of content to null when it is
// this driver's and names a deletion secret. A content already gone is fine.
func (c *DynamicGroupController) dropDeletionSecret(ctx context.Context, content *groupsnapshotv1.VolumeGroupSnapshotContent) error {
	if !c.namesDeletionSecret(content) {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{
		upstreamGroupDeletionSecretNameAnnotation:      nil,
		upstreamGroupDeletionSecretNamespaceAnnotation: nil,
	}}})
	if err != nil {
		return err
	}
	_, err = c.snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Patch(ctx, content.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("removing the deletion secret of VolumeGroupSnapshotContent %s: %w", content.Name, err)
	}
	glog.V(2).Infof("dynamicgroup: VolumeGroupSnapshotContent %s is being deleted; removed its deletion secret %s/%s so the csi-snapshotter deletes it without reading that Secret",
		content.Name, content.Annotations[upstreamGroupDeletionSecretNamespaceAnnotation], content.Annotations[upstreamGroupDeletionSecretNameAnnotation])
	return nil
}

// addDeletionHandlers makes the content informer queue deleting contents of this driver.
func (c *DynamicGroupController) addDeletionHandlers(contentInformer cache.SharedIndexInformer) {
	_, _ = contentInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueDeletingContent,
		UpdateFunc: func(_, obj interface{}) { c.enqueueDeletingContent(obj) },
	})
}
