package etcdcluster

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig/provisioner"
)

const (
	// ClusterLabel is the label that ties the PVCs and the client Service to the cluster.
	ClusterLabel = "etcd.io/cluster"
	// memberVolumeSize is the size the members' PVs and PVCs declare.
	memberVolumeSize = "1Gi"
	bindTimeout      = 2 * time.Minute
)

// ClaimName is the PVC of member i, as a StatefulSet with a volumeClaimTemplate "data" names it.
func (c *Cluster) ClaimName(i int) string { return fmt.Sprintf("data-%s-%d", c.cfg.Name, i) }

// VolumeName is the PersistentVolume of member i in namespace ns.
func (c *Cluster) VolumeName(ns string, i int) string {
	return fmt.Sprintf("%s-%s", ns, c.ClaimName(i))
}

// ServiceName is the cluster's client Service.
func (c *Cluster) ServiceName() string { return c.cfg.Name + "-client" }

// SecretName is the Secret holding client credentials (ca.crt, tls.crt, tls.key).
func (c *Cluster) SecretName() string { return c.cfg.Name + "-client-tls" }

// Register describes the cluster to Kubernetes as a StatefulSet's would look: the namespace, one
// static PV per member (driver hostpath.csi.k8s.io, volume handle = the member's volume directory)
// pre-bound to the member's PVC, the ExternalName client Service and the client credentials Secret.
// It returns once every PVC is Bound.
func (c *Cluster) Register(ctx context.Context, kube kubernetes.Interface, namespace string) error {
	labels := map[string]string{ClusterLabel: c.cfg.Name}
	_, err := kube.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("etcdcluster: namespace %s: %w", namespace, err)
	}

	size := resource.MustParse(memberVolumeSize)
	for i, m := range c.members {
		pv := &v1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: c.VolumeName(namespace, i), Labels: labels},
			Spec: v1.PersistentVolumeSpec{
				Capacity:                      v1.ResourceList{v1.ResourceStorage: size},
				AccessModes:                   []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
				PersistentVolumeReclaimPolicy: v1.PersistentVolumeReclaimRetain,
				StorageClassName:              provisioner.StorageClassName,
				VolumeMode:                    ptr.To(v1.PersistentVolumeFilesystem),
				ClaimRef: &v1.ObjectReference{
					APIVersion: "v1", Kind: "PersistentVolumeClaim", Namespace: namespace, Name: c.ClaimName(i),
				},
				PersistentVolumeSource: v1.PersistentVolumeSource{
					CSI: &v1.CSIPersistentVolumeSource{Driver: provisioner.DriverName, VolumeHandle: m.dir},
				},
			},
		}
		if _, err := kube.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
			old, gerr := kube.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
			if gerr != nil {
				return fmt.Errorf("etcdcluster: PV %s: %w", pv.Name, gerr)
			}
			if old.Spec.CSI == nil || old.Spec.CSI.VolumeHandle != m.dir {
				return fmt.Errorf("etcdcluster: PV %s exists for another volume than %s", pv.Name, m.dir)
			}
		} else if err != nil {
			return fmt.Errorf("etcdcluster: PV %s: %w", pv.Name, err)
		}

		pvc := &v1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: c.ClaimName(i), Namespace: namespace, Labels: labels},
			Spec: v1.PersistentVolumeClaimSpec{
				AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
				Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: size}},
				StorageClassName: ptr.To(provisioner.StorageClassName),
				VolumeMode:       ptr.To(v1.PersistentVolumeFilesystem),
				VolumeName:       pv.Name,
			},
		}
		if _, err := kube.CoreV1().PersistentVolumeClaims(namespace).Create(ctx, pvc, metav1.CreateOptions{}); apierrors.IsAlreadyExists(err) {
			old, gerr := kube.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, pvc.Name, metav1.GetOptions{})
			if gerr != nil {
				return fmt.Errorf("etcdcluster: PVC %s/%s: %w", namespace, pvc.Name, gerr)
			}
			if old.Spec.VolumeName != pv.Name {
				return fmt.Errorf("etcdcluster: PVC %s/%s exists bound to %q, not %s", namespace, pvc.Name, old.Spec.VolumeName, pv.Name)
			}
		} else if err != nil {
			return fmt.Errorf("etcdcluster: PVC %s/%s: %w", namespace, pvc.Name, err)
		}
	}

	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: c.ServiceName(), Namespace: namespace, Labels: labels},
		Spec: v1.ServiceSpec{
			Type:         v1.ServiceTypeExternalName,
			ExternalName: "localhost",
			Ports:        []v1.ServicePort{{Name: "client", Port: int32(c.members[0].clientPort), Protocol: v1.ProtocolTCP}},
		},
	}
	if err := createOrUpdate(
		func() error {
			_, err := kube.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{})
			return err
		},
		func() error {
			old, err := kube.CoreV1().Services(namespace).Get(ctx, svc.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			old.Labels, old.Spec.Type, old.Spec.ExternalName, old.Spec.Ports = labels, svc.Spec.Type, svc.Spec.ExternalName, svc.Spec.Ports
			_, err = kube.CoreV1().Services(namespace).Update(ctx, old, metav1.UpdateOptions{})
			return err
		}); err != nil {
		return fmt.Errorf("etcdcluster: Service %s/%s: %w", namespace, svc.Name, err)
	}

	sec := &v1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: c.SecretName(), Namespace: namespace, Labels: labels},
		Type:       v1.SecretTypeOpaque,
		Data:       map[string][]byte{"ca.crt": clone(c.ca), "tls.crt": clone(c.clientCert), "tls.key": clone(c.clientKey)},
	}
	if err := createOrUpdate(
		func() error {
			_, err := kube.CoreV1().Secrets(namespace).Create(ctx, sec, metav1.CreateOptions{})
			return err
		},
		func() error {
			old, err := kube.CoreV1().Secrets(namespace).Get(ctx, sec.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			old.Labels, old.Data = labels, sec.Data
			_, err = kube.CoreV1().Secrets(namespace).Update(ctx, old, metav1.UpdateOptions{})
			return err
		}); err != nil {
		return fmt.Errorf("etcdcluster: Secret %s/%s: %w", namespace, sec.Name, err)
	}

	// The PV controller binds pre-bound pairs as soon as it sees them.
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, bindTimeout, true, func(ctx context.Context) (bool, error) {
		for i := range c.members {
			pvc, err := kube.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, c.ClaimName(i), metav1.GetOptions{})
			if err != nil || pvc.Status.Phase != v1.ClaimBound {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("etcdcluster: PVCs of %s in %s not Bound within %s: %w", c.cfg.Name, namespace, bindTimeout, err)
	}
	return nil
}

// createOrUpdate creates, or updates what exists.
func createOrUpdate(create, update func() error) error {
	err := create()
	if apierrors.IsAlreadyExists(err) {
		return update()
	}
	return err
}
