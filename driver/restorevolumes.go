package driver

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// createRestoreVolumes creates a new cluster's PVCs and, across namespaces, the read-only view of the
// snapshot volume; it returns the PVCs it created (not those an interrupted run left).
func createRestoreVolumes(ctx context.Context, cfg RestoreConfig, p *restorePlan, w *restoreWatch, progress func(string, ...any)) ([]string, error) {
	var created []string
	if !p.InPlace {
		for _, m := range p.Members {
			pvc := p.NewPVC.DeepCopy()
			pvc.Name, pvc.Namespace = m.PVC, p.Namespace
			pvc.Labels = restoreLabels(p.ID, p.Record.ID)
			pvc.Labels[p.ClusterLabel] = p.NewCluster
			_, err := cfg.Kube.CoreV1().PersistentVolumeClaims(p.Namespace).Create(ctx, pvc, metav1.CreateOptions{})
			switch {
			case err == nil:
				created = append(created, m.PVC)
				progress("member %s: created PVC %s", m.Name, m.PVC)
			case !apierrors.IsAlreadyExists(err):
				return created, fmt.Errorf("creating PVC %s/%s: %w", p.Namespace, m.PVC, err)
			}
		}
	}
	if p.snapshotViewRequired {
		if err := createSnapshotView(ctx, cfg, p, w); err != nil {
			return created, err
		}
		progress("snapshot volume of %s/%s made readable in namespace %s as PVC %s (read-only)", p.Record.Namespace, p.Record.ID, p.Namespace, p.SnapshotClaim)
	}
	return created, nil
}

// snapshotViewName names the read-only PV and PVC through which a restore in another namespace
// reads the snapshot volume (a pod can only mount claims of its own namespace).
func snapshotViewName(rid string) string { return "etcd-restore-" + rid + "-snapshot" }

// createSnapshotView creates a second, read-only PersistentVolume for the snapshot's volume (same
// CSI volume handle, reclaim policy Retain, so deleting it never deletes the data) pre-bound to a PVC
// in the restore namespace, and waits for the two to bind.
func createSnapshotView(ctx context.Context, cfg RestoreConfig, p *restorePlan, w *restoreWatch) error {
	rec := p.Record
	pv, err := snapshotVolumeOf(ctx, cfg.Kube, rec)
	if err != nil {
		return err
	}
	name := p.SnapshotClaim
	source := pv.Spec.PersistentVolumeSource.DeepCopy()
	if source.CSI != nil {
		source.CSI.ReadOnly = true
	}
	view := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: restoreLabels(p.ID, rec.ID)},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      pv.Spec.Capacity,
			PersistentVolumeSource:        *source,
			AccessModes:                   pv.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              "",
			MountOptions:                  pv.Spec.MountOptions,
			VolumeMode:                    pv.Spec.VolumeMode,
			NodeAffinity:                  pv.Spec.NodeAffinity,
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: p.Namespace, Name: name},
		},
	}
	if _, err := cfg.Kube.CoreV1().PersistentVolumes().Create(ctx, view, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating PersistentVolume %s (read-only view of snapshot %s): %w", name, rec.ID, err)
	}
	claim := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: p.Namespace, Labels: restoreLabels(p.ID, rec.ID)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      pv.Spec.AccessModes,
			StorageClassName: ptr.To(""),
			VolumeName:       name,
			VolumeMode:       pv.Spec.VolumeMode,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: pv.Spec.Capacity[corev1.ResourceStorage]}},
		},
	}
	if _, err := cfg.Kube.CoreV1().PersistentVolumeClaims(p.Namespace).Create(ctx, claim, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating PVC %s/%s (read-only view of snapshot %s): %w", p.Namespace, name, rec.ID, err)
	}
	return w.until(ctx, restoreStepTimeout, "PVC "+p.Namespace+"/"+name+" to bind", func() (bool, error) {
		c, err := w.pvcs.PersistentVolumeClaims(p.Namespace).Get(name)
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil && c.Status.Phase == corev1.ClaimBound, err
	})
}

// snapshotVolumeOf is the PersistentVolume holding rec's file: the one its PVC is bound to or, once the
// PVC is gone (deleted with its namespace), the volume the record names, which the driver keeps with
// reclaim policy Retain while the snapshot exists (driver/enginevolume.go).
func snapshotVolumeOf(ctx context.Context, kube kubernetes.Interface, rec *Record) (*corev1.PersistentVolume, error) {
	snapPVC, err := kube.CoreV1().PersistentVolumeClaims(rec.Namespace).Get(ctx, snapshotPVCName(rec.ID), metav1.GetOptions{})
	name := ""
	switch {
	case err == nil:
		name = snapPVC.Spec.VolumeName
	case apierrors.IsNotFound(err) && rec.Volume != "":
		name = rec.Volume
	default:
		return nil, fmt.Errorf("snapshot PVC %s/%s: %w", rec.Namespace, rec.ID, err)
	}
	pv, err := kube.CoreV1().PersistentVolumes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("PersistentVolume %s of snapshot %s: %w", name, rec.ID, err)
	}
	if !claimsSnapshotPVC(pv, rec) {
		return nil, fmt.Errorf("PersistentVolume %s is not snapshot %s's volume any more (it is not bound to PVC %s/%s)", name, rec.ID, rec.Namespace, snapshotPVCName(rec.ID))
	}
	return pv, nil
}

// snapshotClaimGone reports whether rec's snapshot PVC is gone while the record names the volume it
// was bound to: the restore then reads that volume through the snapshot view, whatever the namespace.
func snapshotClaimGone(ctx context.Context, kube kubernetes.Interface, rec *Record) (bool, error) {
	if rec.Volume == "" {
		return false, nil
	}
	_, err := kube.CoreV1().PersistentVolumeClaims(rec.Namespace).Get(ctx, snapshotPVCName(rec.ID), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("snapshot PVC %s/%s: %w", rec.Namespace, rec.ID, err)
	}
	return false, nil
}

// deleteSnapshotView removes the view PVC and PV; the PV's Retain policy leaves the volume alone.
func deleteSnapshotView(ctx context.Context, cfg RestoreConfig, p *restorePlan, progress func(string, ...any)) {
	name := snapshotViewName(p.ID)
	if err := cfg.Kube.CoreV1().PersistentVolumeClaims(p.Namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		progress("warning: deleting PVC %s/%s: %v (delete it by hand)", p.Namespace, name, err)
	}
	if err := cfg.Kube.CoreV1().PersistentVolumes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		progress("warning: deleting PersistentVolume %s: %v (delete it by hand; its reclaim policy is Retain)", name, err)
	}
}
