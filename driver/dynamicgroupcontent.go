package driver

import (
	"fmt"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/reference"
)

// buildContent mirrors upstream's createGroupSnapshotContent, with volume ids in
// place of PV handles (the driver accepts both).
func (c *DynamicGroupController) buildContent(vgs *groupsnapshotv1.VolumeGroupSnapshot, class *groupsnapshotv1.VolumeGroupSnapshotClass,
	contentName string, handles []string, secret *corev1.SecretReference) (*groupsnapshotv1.VolumeGroupSnapshotContent, error) {
	ref, err := reference.GetReference(c.scheme, vgs)
	if err != nil {
		return nil, fmt.Errorf("reference to VolumeGroupSnapshot: %w", err)
	}
	className := class.Name
	content := &groupsnapshotv1.VolumeGroupSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{
			Name:   contentName,
			Labels: map[string]string{labelManagedBy: managedByDriver},
		},
		Spec: groupsnapshotv1.VolumeGroupSnapshotContentSpec{
			VolumeGroupSnapshotRef:       *ref,
			Source:                       groupsnapshotv1.VolumeGroupSnapshotContentSource{VolumeHandles: handles},
			VolumeGroupSnapshotClassName: &className,
			DeletionPolicy:               class.DeletionPolicy,
			Driver:                       class.Driver,
		},
	}
	if secret != nil {
		content.Annotations = map[string]string{
			upstreamGroupDeletionSecretNameAnnotation:      secret.Name,
			upstreamGroupDeletionSecretNamespaceAnnotation: secret.Namespace,
		}
	}
	return content, nil
}
