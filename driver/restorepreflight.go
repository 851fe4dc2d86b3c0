package driver

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// preflight checks everything a restore relies on and reports every problem at once; it changes
// nothing, so a refused restore leaves the cluster exactly as it was.
func preflight(ctx context.Context, cfg RestoreConfig, p *restorePlan) error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	kube := cfg.Kube
	rec := p.Record

	snapPVC, err := kube.CoreV1().PersistentVolumeClaims(rec.Namespace).Get(ctx, snapshotPVCName(rec.ID), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) && rec.Volume != "":
		// The claim went with its namespace; the volume the driver kept (Retain) is read through the view.
		if _, err := snapshotVolumeOf(ctx, kube, rec); err != nil {
			add("the snapshot's PVC %s/%s is gone and its volume cannot be read: %v", rec.Namespace, rec.ID, err)
		}
	case apierrors.IsNotFound(err):
		add("the snapshot's PVC %s/%s is gone", rec.Namespace, rec.ID)
	case err != nil:
		add("snapshot PVC %s/%s: %v", rec.Namespace, rec.ID, err)
	case snapPVC.Status.Phase != corev1.ClaimBound:
		add("the snapshot's PVC %s/%s is %s, not Bound", rec.Namespace, rec.ID, snapPVC.Status.Phase)
	case p.snapshotViewRequired && snapPVC.Spec.VolumeName == "":
		add("the snapshot's PVC %s/%s names no PersistentVolume to read it from namespace %s", rec.Namespace, rec.ID, p.Namespace)
	}

	targets := map[string]bool{}
	for _, m := range p.Members {
		targets[m.PVC] = true
		pvc, err := kube.CoreV1().PersistentVolumeClaims(p.Namespace).Get(ctx, m.PVC, metav1.GetOptions{})
		switch {
		case p.InPlace && apierrors.IsNotFound(err):
			add("PVC %s/%s of member %s does not exist", p.Namespace, m.PVC, m.Name)
		case p.InPlace && err == nil && pvc.Status.Phase != corev1.ClaimBound:
			add("PVC %s/%s of member %s is %s, not Bound", p.Namespace, m.PVC, m.Name, pvc.Status.Phase)
		case !p.InPlace && err == nil && pvc.Labels[keyRestoreID] != p.ID:
			add("PVC %s/%s already exists and was not created by this restore; a new cluster is restored only into new PVCs (choose another -target-namespace or -statefulset, or restore in place)", p.Namespace, m.PVC)
		case err != nil && !apierrors.IsNotFound(err):
			add("PVC %s/%s: %v", p.Namespace, m.PVC, err)
		}
	}
	if !p.InPlace && p.NewPVC.Spec.StorageClassName != nil {
		if _, err := kube.StorageV1().StorageClasses().Get(ctx, *p.NewPVC.Spec.StorageClassName, metav1.GetOptions{}); err != nil {
			add("StorageClass %q for the new PVCs: %v", *p.NewPVC.Spec.StorageClassName, err)
		}
	}

	pods, err := kube.CoreV1().Pods(p.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		add("listing pods in namespace %s: %v", p.Namespace, err)
		pods = &corev1.PodList{}
	}
	var users []string
	for i := range pods.Items {
		pod := &pods.Items[i]
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed || pod.Labels[labelManagedBy] == managedByRestore {
			continue
		}
		claim := ""
		for _, v := range pod.Spec.Volumes {
			if v.PersistentVolumeClaim != nil && targets[v.PersistentVolumeClaim.ClaimName] {
				claim = v.PersistentVolumeClaim.ClaimName
			}
		}
		if claim == "" || (cfg.Scale && p.StatefulSet != nil && ownedBy(pod, "StatefulSet", p.StatefulSet.Name)) {
			continue
		}
		users = append(users, fmt.Sprintf("pod %s (%s, %s) mounts PVC %s", pod.Name, ownerOf(pod), pod.Status.Phase, claim))
	}
	if len(users) > 0 {
		hint := "stop them first"
		if p.StatefulSet != nil {
			hint = fmt.Sprintf("stop them first (kubectl scale statefulset %s -n %s --replicas=0), or rerun with -scale to have restore do it and scale back", p.StatefulSet.Name, p.Namespace)
		}
		add("%s; %s", strings.Join(users, "; "), hint)
	}
	if cfg.Scale && p.StatefulSet == nil {
		add("-scale needs the StatefulSet that runs the members (%s), and there is none in namespace %s", memberList(p.Members), p.Namespace)
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("restore refused, nothing was changed:\n  - %s", strings.Join(problems, "\n  - "))
}

func memberList(ms []plannedMember) string {
	names := make([]string, 0, len(ms))
	for _, m := range ms {
		names = append(names, m.Name)
	}
	return strings.Join(names, ", ")
}

func ownedBy(pod *corev1.Pod, kind, name string) bool {
	return slices.ContainsFunc(pod.OwnerReferences, func(o metav1.OwnerReference) bool { return o.Kind == kind && o.Name == name })
}

func ownerOf(pod *corev1.Pod) string {
	for _, o := range pod.OwnerReferences {
		if ptr.Deref(o.Controller, false) {
			return "owned by " + o.Kind + " " + o.Name
		}
	}
	return "no owner"
}
