package driver

import (
	"context"
	"errors"
	"fmt"

	"github.com/golang/glog"
	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

// A Ready snapshot's file lives on the PersistentVolume bound to its PVC. The PVC sits in the etcd
// cluster's namespace and goes with it; with the class's usual reclaim policy Delete the volume would
// go too while the record still says Ready. So the driver keeps the volume with reclaim policy Retain
// while the snapshot exists, records the policy it had, and sets that back when the snapshot itself
// is deleted. A Ready snapshot whose volume is gone anyway turns Lost.

// enqueueSnapshotVolume queues the snapshot whose PVC a PersistentVolume event's volume is bound to.
func (e *Engine) enqueueSnapshotVolume(obj any) {
	if pv := volumeOf(obj); pv != nil && pv.Spec.ClaimRef != nil && isRecordID(pv.Spec.ClaimRef.Name) {
		e.queue.Add(pv.Spec.ClaimRef.Name)
	}
}

// claimsSnapshotPVC reports whether pv is (or was) bound to the snapshot PVC of rec.
func claimsSnapshotPVC(pv *corev1.PersistentVolume, rec *Record) bool {
	ref := pv.Spec.ClaimRef
	return ref != nil && ref.Namespace == rec.Namespace && ref.Name == snapshotPVCName(rec.ID)
}

// keepVolume runs for every Ready record the monitor looks at: it records the snapshot's volume and
// sets its reclaim policy to Retain, or turns the record Lost when the volume is gone.
func (e *Engine) keepVolume(ctx context.Context, rec *Record) error {
	if rec.Volume == "" {
		pvName, err := e.snapshotVolumeName(ctx, rec)
		if err != nil || pvName == "" {
			return err
		}
		pv, err := e.cfg.Kube.CoreV1().PersistentVolumes().Get(ctx, pvName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return e.markLost(ctx, rec.ID, fmt.Sprintf("its PersistentVolume %s is gone", pvName))
		}
		if err != nil {
			return kubeStatus(err, "reading PersistentVolume %s of snapshot %s", pvName, rec.ID)
		}
		if !claimsSnapshotPVC(pv, rec) {
			return nil // bound elsewhere meanwhile; nothing of this snapshot's to keep
		}
		policy := string(pv.Spec.PersistentVolumeReclaimPolicy)
		// Recorded before the policy changes: a retry after a failed patch must not take Retain, set
		// by the driver, for the policy to set back.
		if rec, err = e.meta.update(ctx, rec.ID, func(r *Record) error {
			if r.Phase == PhasePending || r.Phase == PhaseRunning {
				// The cache has not seen markReady's write yet; a conflict makes update ask the API server.
				return apierrors.NewConflict(corev1.Resource("configmaps"), r.ID, errors.New("metadata cache is behind"))
			}
			if r.Phase != PhaseReady || r.Volume != "" {
				return errNoChange
			}
			r.Volume, r.VolumeReclaimPolicy = pvName, policy
			return nil
		}); err != nil || rec == nil || rec.Phase != PhaseReady {
			return err
		}
	}
	// Every Job and pod event of a Ready snapshot (all of them at a driver start) comes here: a volume
	// the cache shows kept costs no request. Anything else is read from the API server, which alone
	// may say that a volume is gone.
	if obj, ok, _ := e.pvIndexer.GetByKey(rec.Volume); ok {
		if pv := volumeOf(obj); pv != nil && claimsSnapshotPVC(pv, rec) && pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimRetain {
			return nil
		}
	}
	pv, err := e.cfg.Kube.CoreV1().PersistentVolumes().Get(ctx, rec.Volume, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return e.markLost(ctx, rec.ID, fmt.Sprintf("its PersistentVolume %s (claim %s/%s) is gone", rec.Volume, rec.Namespace, snapshotPVCName(rec.ID)))
	}
	if err != nil {
		return kubeStatus(err, "reading PersistentVolume %s of snapshot %s", rec.Volume, rec.ID)
	}
	if !claimsSnapshotPVC(pv, rec) {
		// A PV of the same name that is not this snapshot's: the recorded one was deleted.
		return e.markLost(ctx, rec.ID, fmt.Sprintf("its PersistentVolume %s is gone (that name is now another volume's)", rec.Volume))
	}
	if pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimRetain {
		return nil
	}
	if err := e.setReclaimPolicy(ctx, pv, corev1.PersistentVolumeReclaimRetain); err != nil {
		return err
	}
	glog.V(2).Infof("Snapshot %s: PersistentVolume %s kept with reclaim policy Retain (was %s) while the snapshot exists", rec.ID, pv.Name, pv.Spec.PersistentVolumeReclaimPolicy)
	return nil
}

// snapshotVolumeName is the PV bound to rec's snapshot PVC, "" while it is not bound. When the PVC is
// gone and no PV is bound to it any more, the record turns Lost.
func (e *Engine) snapshotVolumeName(ctx context.Context, rec *Record) (string, error) {
	pvc, err := e.cfg.Kube.CoreV1().PersistentVolumeClaims(rec.Namespace).Get(ctx, snapshotPVCName(rec.ID), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		// Its volume may outlive it (Released); the PV cache knows which one was bound to it.
		for _, obj := range e.pvIndexer.List() {
			if pv := volumeOf(obj); pv != nil && claimsSnapshotPVC(pv, rec) {
				return pv.Name, nil
			}
		}
		return "", e.markLost(ctx, rec.ID, fmt.Sprintf("its PVC %s/%s is gone and no PersistentVolume is bound to it", rec.Namespace, snapshotPVCName(rec.ID)))
	case err != nil:
		return "", kubeStatus(err, "reading PVC %s/%s", rec.Namespace, snapshotPVCName(rec.ID))
	case pvc.Labels[labelSnapshotID] != rec.ID:
		return "", nil
	}
	return pvc.Spec.VolumeName, nil
}

// releaseVolume sets the reclaim policy of a deleted snapshot's volume back to the one it had, so a
// volume of a Delete class is deleted with its claim (or at once, when the claim is already gone). A
// volume bound to anything else than this snapshot's PVC is left alone.
func (e *Engine) releaseVolume(ctx context.Context, rec *Record) error {
	want := corev1.PersistentVolumeReclaimPolicy(rec.VolumeReclaimPolicy)
	if rec.Volume == "" || want == "" || want == corev1.PersistentVolumeReclaimRetain {
		return nil
	}
	pv, err := e.cfg.Kube.CoreV1().PersistentVolumes().Get(ctx, rec.Volume, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return kubeStatus(err, "reading PersistentVolume %s of snapshot %s", rec.Volume, rec.ID)
	}
	if !claimsSnapshotPVC(pv, rec) || pv.Spec.PersistentVolumeReclaimPolicy == want {
		return nil
	}
	if err := e.setReclaimPolicy(ctx, pv, want); err != nil {
		return err
	}
	glog.V(2).Infof("Snapshot %s: PersistentVolume %s reclaim policy set back to %s", rec.ID, pv.Name, want)
	return nil
}

// setReclaimPolicy patches pv's reclaim policy, on the condition that pv is still the object read.
func (e *Engine) setReclaimPolicy(ctx context.Context, pv *corev1.PersistentVolume, policy corev1.PersistentVolumeReclaimPolicy) error {
	patch := fmt.Sprintf(`{"metadata":{"uid":%q},"spec":{"persistentVolumeReclaimPolicy":%q}}`, pv.UID, policy)
	_, err := e.cfg.Kube.CoreV1().PersistentVolumes().Patch(ctx, pv.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		return kubeStatus(err, "setting the reclaim policy of PersistentVolume %s to %s", pv.Name, policy)
	}
	return nil
}

// markLost turns a Ready record Lost with the reason its file is gone.
func (e *Engine) markLost(ctx context.Context, id, reason string) error {
	changed := false
	rec, err := e.meta.update(ctx, id, func(r *Record) error {
		changed = false // as in markReady: a conflict retries this with the API server's record
		if r.Phase == PhasePending || r.Phase == PhaseRunning {
			// Only a Ready record is looked at for its volume: the cache has not seen it Ready yet.
			return apierrors.NewConflict(corev1.Resource("configmaps"), r.ID, errors.New("metadata cache is behind"))
		}
		if r.Phase != PhaseReady {
			return errNoChange
		}
		r.Phase, r.Error, r.ErrorCode = PhaseLost, reason, codes.DataLoss.String()
		changed = true
		return nil
	})
	if err != nil || rec == nil || !changed {
		return err
	}
	snapshotsLost.Inc()
	glog.Errorf("Snapshot %s (%s) of etcd cluster %s/%s is lost: %s", id, rec.Name, rec.Namespace, rec.Cluster, reason)
	return nil
}

// volumeOf is the PersistentVolume of an informer event, nil for anything else.
func volumeOf(obj any) *corev1.PersistentVolume {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pv, _ := obj.(*corev1.PersistentVolume)
	return pv
}
