package driver

import (
	"fmt"
	"sort"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// selectVolumes returns the selected claims and their sorted "namespace/pvc"
// volume ids; every claim must be Bound, as upstream requires. Unlike upstream
// v8.7.0, which lists with matchLabels only, matchExpressions are honoured too.
func (c *DynamicGroupController) selectVolumes(vgs *groupsnapshotv1.VolumeGroupSnapshot) ([]*corev1.PersistentVolumeClaim, []string, error) {
	selector, err := metav1.LabelSelectorAsSelector(vgs.Spec.Source.Selector)
	if err != nil {
		c.recorder.Eventf(vgs, corev1.EventTypeWarning, dgReasonBadSelector, "Invalid spec.source.selector: %v", err)
		return nil, nil, fmt.Errorf("invalid selector: %w", err)
	}
	pvcs, err := c.pvcLister.PersistentVolumeClaims(vgs.Namespace).List(selector)
	if err != nil {
		return nil, nil, err
	}
	if len(pvcs) == 0 {
		c.recorder.Eventf(vgs, corev1.EventTypeWarning, dgReasonNoVolumes,
			"No PersistentVolumeClaim in namespace %s matches selector %s; waiting for one", vgs.Namespace, selector)
		return nil, nil, fmt.Errorf("%w: no PVC matches %s", errDGRetry, selector)
	}
	handles := make([]string, 0, len(pvcs))
	var unbound []string
	for _, pvc := range pvcs {
		if pvc.Status.Phase != corev1.ClaimBound {
			unbound = append(unbound, pvc.Name)
		}
		handles = append(handles, pvc.Namespace+"/"+pvc.Name)
	}
	if len(unbound) > 0 {
		sort.Strings(unbound)
		c.recorder.Eventf(vgs, corev1.EventTypeWarning, dgReasonNotBound,
			"PersistentVolumeClaims %v are not Bound; waiting before taking the group snapshot", unbound)
		return nil, nil, fmt.Errorf("%w: PVCs %v not bound", errDGRetry, unbound)
	}
	sort.Strings(handles)
	return pvcs, handles, nil
}

func dgIsBound(vgs *groupsnapshotv1.VolumeGroupSnapshot) bool {
	return vgs.Status != nil && vgs.Status.BoundVolumeGroupSnapshotContentName != nil && *vgs.Status.BoundVolumeGroupSnapshotContentName != ""
}
