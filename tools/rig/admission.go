package rig

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// ImagesConfigMap is the parameter object of manifests/admission-policy.yaml: the images the driver's
// snapshot Jobs may run, which must match its -etcd-image and -driver-image flags.
const ImagesConfigMap = "etcd-snapshot-driver-images"

// allowDriverImages points the admission policy's image parameters at the images the rig starts the
// driver with, as an operator does when changing -etcd-image or -driver-image.
func (r *Rig) allowDriverImages(ctx context.Context) error {
	patch := fmt.Sprintf(`{"data":{"etcdImages":%q,"driverImages":%q}}`, r.EtcdImage, r.DriverImage)
	_, err := r.Kube.CoreV1().ConfigMaps(DriverNamespace).Patch(ctx, ImagesConfigMap, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: fieldManager})
	if err != nil {
		return fmt.Errorf("rig: set the allowed images in ConfigMap %s/%s (manifests/admission-policy.yaml): %w", DriverNamespace, ImagesConfigMap, err)
	}
	return nil
}
