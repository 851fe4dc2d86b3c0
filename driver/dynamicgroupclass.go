package driver

import (
	"context"
	"fmt"
	"sort"

	"github.com/golang/glog"
	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
)

// classFor returns the class of vgs if it names this driver, and whether it was
// resolved as the default because the VolumeGroupSnapshot names none. A nil class
// means the VolumeGroupSnapshot is not ours.
func (c *DynamicGroupController) classFor(vgs *groupsnapshotv1.VolumeGroupSnapshot) (*groupsnapshotv1.VolumeGroupSnapshotClass, bool, error) {
	if vgs.Spec.VolumeGroupSnapshotClassName != nil {
		class, err := c.classLister.Get(*vgs.Spec.VolumeGroupSnapshotClassName)
		if apierrors.IsNotFound(err) {
			// upstream reports the missing class; its creation requeues us
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		if class.Driver != c.driverName {
			return nil, false, nil
		}
		return class, false, nil
	}
	classes, err := c.classLister.List(labels.Everything())
	if err != nil {
		return nil, false, err
	}
	var ours []*groupsnapshotv1.VolumeGroupSnapshotClass
	for _, class := range classes {
		if class.Annotations[upstreamGroupIsDefaultClassAnnotation] == "true" && class.Driver == c.driverName {
			ours = append(ours, class)
		}
	}
	switch len(ours) {
	case 0:
		return nil, false, nil
	case 1:
		return ours[0], true, nil
	}
	names := make([]string, 0, len(ours))
	for _, class := range ours {
		names = append(names, class.Name)
	}
	sort.Strings(names)
	c.recorder.Eventf(vgs, corev1.EventTypeWarning, dgReasonDefaultClass,
		"%d default VolumeGroupSnapshotClasses of driver %s (%v); set spec.volumeGroupSnapshotClassName", len(ours), c.driverName, names)
	return nil, false, nil
}

// upstreamHasDefault reports whether the upstream controller resolves a missing
// class itself: it picks the default class of the selected PVs' CSI driver
// (SetDefaultGroupSnapshotClass), and such a VolumeGroupSnapshot is not ours.
func (c *DynamicGroupController) upstreamHasDefault(ctx context.Context, vgs *groupsnapshotv1.VolumeGroupSnapshot, pvcs []*corev1.PersistentVolumeClaim) (bool, error) {
	classes, err := c.classLister.List(labels.Everything())
	if err != nil {
		return false, err
	}
	defaults := sets.New[string]()
	for _, class := range classes {
		if class.Annotations[upstreamGroupIsDefaultClassAnnotation] == "true" {
			defaults.Insert(class.Driver)
		}
	}
	for _, pvc := range pvcs {
		pv, err := c.pvLister.Get(pvc.Spec.VolumeName)
		if err != nil {
			return false, fmt.Errorf("reading PV %s of PVC %s/%s: %w", pvc.Spec.VolumeName, pvc.Namespace, pvc.Name, err)
		}
		if pv.Spec.CSI != nil && defaults.Has(pv.Spec.CSI.Driver) {
			glog.V(2).Infof("dynamicgroup: VolumeGroupSnapshot %s/%s names no class and PV %s has default class driver %s; leaving it to the snapshot-controller",
				vgs.Namespace, vgs.Name, pv.Name, pv.Spec.CSI.Driver)
			return true, nil
		}
	}
	return false, nil
}

// setClassName records the default class on the VolumeGroupSnapshot, as upstream's
// SetDefaultGroupSnapshotClass does for the PVs' own driver: without it upstream
// never gets past class resolution to the content.
func (c *DynamicGroupController) setClassName(ctx context.Context, vgs *groupsnapshotv1.VolumeGroupSnapshot, className string) error {
	clone := vgs.DeepCopy()
	clone.Spec.VolumeGroupSnapshotClassName = &className
	if _, err := c.snap.GroupsnapshotV1().VolumeGroupSnapshots(vgs.Namespace).Update(ctx, clone, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting default class %s: %w", className, err)
	}
	glog.V(2).Infof("dynamicgroup: VolumeGroupSnapshot %s/%s: set default class %s", vgs.Namespace, vgs.Name, className)
	return nil
}
