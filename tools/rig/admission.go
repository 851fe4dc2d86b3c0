package rig

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
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

// waitAdmissionEnforced waits until the apiserver enforces the admission policies of manifests/: a
// dry-run create, as the driver, of a kube-system ConfigMap that is no snapshot record must be
// refused. The apiserver loads new policies and their params from its informers a moment after they
// are applied, and a test that relies on a refusal must not start before.
func (r *Rig) waitAdmissionEnforced(ctx context.Context) error {
	cfg, err := r.DriverRESTConfig(ctx)
	if err != nil {
		return err
	}
	asDriver, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	probe := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "rig-admission-probe", Namespace: DriverNamespace}}
	return r.waitReady(ctx, nil, "admission policies enforced", time.Minute, func(ctx context.Context) error {
		_, err := asDriver.CoreV1().ConfigMaps(DriverNamespace).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) {
			return nil
		}
		return fmt.Errorf("a dry-run ConfigMap %s/%s that is no snapshot record was not refused (%v)", DriverNamespace, probe.Name, err)
	})
}
