package driver

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/golang/glog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// A Create that resumes a Pending record rebuilds the record from a fresh health check, but finds the
// PVC and Job an earlier attempt made from an older one. The record must describe exactly the Job that
// runs (restore trusts its member and size), so what an earlier attempt left is checked against this
// attempt's plan: a Job that differs is replaced, and a PVC is recorded as it is, or replaced when it
// is too small for the database now.

// jobPlan is what the record depends on in a snapshot Job: where it saves from, with which tools,
// and within which deadline. Fields the API server defaults are left out.
type jobPlan struct {
	saveImage, verifyImage string
	saveArgs, verifyArgs   []string
	deadline, backoffLimit string
}

func planOf(job *batchv1.Job) jobPlan {
	p := jobPlan{deadline: "none", backoffLimit: "default"}
	if d := job.Spec.ActiveDeadlineSeconds; d != nil {
		p.deadline = fmt.Sprintf("%ds", *d)
	}
	if b := job.Spec.BackoffLimit; b != nil {
		p.backoffLimit = fmt.Sprint(*b)
	}
	for _, c := range job.Spec.Template.Spec.InitContainers {
		if c.Name == saveContainer {
			p.saveImage, p.saveArgs = c.Image, c.Args
		}
	}
	for _, c := range job.Spec.Template.Spec.Containers {
		if c.Name == verifyContainer {
			p.verifyImage, p.verifyArgs = c.Image, c.Args
		}
	}
	return p
}

func (p jobPlan) equal(o jobPlan) bool {
	return p.saveImage == o.saveImage && p.verifyImage == o.verifyImage && p.deadline == o.deadline &&
		p.backoffLimit == o.backoffLimit && slices.Equal(p.saveArgs, o.saveArgs) && slices.Equal(p.verifyArgs, o.verifyArgs)
}

// String names what differs between plans in terms a person acts on: the endpoint, then the rest.
func (p jobPlan) String() string {
	endpoint := "?"
	for _, a := range p.saveArgs {
		if v, ok := strings.CutPrefix(a, "--endpoints="); ok {
			endpoint = v
		}
	}
	return fmt.Sprintf("saves from %s with %s, verifies with %s, deadline %s", endpoint, p.saveImage, p.verifyImage, p.deadline)
}

// ensurePlannedJob creates the Job planned for rec, or adopts the one an earlier attempt left when it
// does the same. A suspended Job that differs never ran a pod: it is replaced at once. One that was
// resumed may be saving into the snapshot PVC right now, so it is deleted in the foreground and the
// call answers Aborted: the rollback that follows removes the rest, and the CO's next retry starts
// afresh once the old pod is gone.
func (e *Engine) ensurePlannedJob(ctx context.Context, rec *Record, planned *batchv1.Job) (*batchv1.Job, error) {
	job, err := e.ensureJob(ctx, rec, planned)
	if err != nil {
		return nil, err
	}
	if job.DeletionTimestamp != nil {
		return nil, status.Errorf(codes.Aborted, "Job %s/%s of an earlier attempt of snapshot %s is still being deleted; retry", rec.Namespace, rec.ID, rec.ID)
	}
	have, want := planOf(job), planOf(planned)
	if have.equal(want) {
		return job, nil
	}
	client := e.cfg.Kube.BatchV1().Jobs(rec.Namespace)
	uid := job.UID
	opts := metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}
	if uid != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	if !isSuspended(job) {
		opts.PropagationPolicy = ptr.To(metav1.DeletePropagationForeground)
		if err := client.Delete(ctx, snapshotJobName(rec.ID), opts); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return nil, kubeStatus(err, "deleting Job %s/%s of an earlier attempt", rec.Namespace, rec.ID)
		}
		return nil, status.Errorf(codes.Aborted, "snapshot %s: the Job of an earlier attempt had started and %s, but this attempt's health check plans a Job that %s; "+
			"the old Job is being deleted; retry", rec.ID, have, want)
	}
	if err := client.Delete(ctx, snapshotJobName(rec.ID), opts); err != nil && !apierrors.IsNotFound(err) {
		return nil, kubeStatus(err, "deleting suspended Job %s/%s of an earlier attempt", rec.Namespace, rec.ID)
	}
	created, err := client.Create(ctx, planned, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil, status.Errorf(codes.Aborted, "Job %s/%s was created again by someone else while being replaced; retry", rec.Namespace, rec.ID)
	}
	if err != nil {
		return nil, kubeStatus(err, "creating Job %s/%s", rec.Namespace, rec.ID)
	}
	glog.Infof("Snapshot %s (%s): replaced the suspended Job of an earlier attempt, which %s, with one that %s", rec.ID, rec.Name, have, want)
	return created, nil
}

// ensurePlannedPVC creates the snapshot PVC of rec, or, when resuming (an earlier attempt may have
// left one), records the size and class of the PVC that exists. One smaller than size, planned from
// this attempt's database size, is refused with Aborted: the rollback that follows removes it and the
// CO's next retry makes one of the right size.
func (e *Engine) ensurePlannedPVC(ctx context.Context, rec *Record, size resource.Quantity, resuming bool) error {
	if err := e.ensureSnapshotPVC(ctx, rec, size); err != nil || !resuming {
		return err
	}
	pvc, err := e.cfg.Kube.CoreV1().PersistentVolumeClaims(rec.Namespace).Get(ctx, snapshotPVCName(rec.ID), metav1.GetOptions{})
	if err != nil {
		return kubeStatus(err, "reading PersistentVolumeClaim %s/%s", rec.Namespace, rec.ID)
	}
	if pvc.DeletionTimestamp != nil {
		return status.Errorf(codes.Aborted, "PersistentVolumeClaim %s/%s of an earlier attempt of snapshot %s is still being deleted; retry", rec.Namespace, rec.ID, rec.ID)
	}
	got := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if got.Cmp(size) < 0 {
		return status.Errorf(codes.Aborted, "snapshot %s: the PersistentVolumeClaim %s/%s of an earlier attempt requests %s, less than the %s the database needs now; "+
			"it is removed; retry", rec.ID, rec.Namespace, rec.ID, got.String(), size.String())
	}
	class := ptr.Deref(pvc.Spec.StorageClassName, "")
	if got.String() == rec.PVCSize && class == rec.StorageClass {
		return nil
	}
	out, err := e.updatePending(ctx, rec, true, func(r *Record) { r.PVCSize, r.StorageClass = got.String(), class })
	if err != nil {
		return err
	}
	glog.V(2).Infof("Snapshot %s (%s): adopted the PersistentVolumeClaim of an earlier attempt, %s of class %q", rec.ID, rec.Name, got.String(), class)
	rec.PVCSize, rec.StorageClass = out.PVCSize, out.StorageClass
	return nil
}

// updatePending applies mutate to the stored record of rec only while it is Pending, the phase in
// which a Create owns it. Another phase means someone else moved it: resuming=true fails with
// Aborted, so the caller's retry starts over; resuming=false (the record turning Running after a
// fresh start) leaves it as it is and returns it unchanged. A record deleted meanwhile is Aborted.
func (e *Engine) updatePending(ctx context.Context, rec *Record, resuming bool, mutate func(*Record)) (*Record, error) {
	out, err := e.meta.update(ctx, rec.ID, func(r *Record) error {
		if r.Phase != PhasePending {
			if !resuming {
				return errNoChange
			}
			return status.Errorf(codes.Aborted, "snapshot %s (%s) moved to %s while being resumed; retry", rec.ID, rec.Name, r.Phase)
		}
		mutate(r)
		return nil
	})
	if err == nil && out == nil {
		doing := "created"
		if resuming {
			doing = "resumed"
		}
		err = status.Errorf(codes.Aborted, "metadata of snapshot %s disappeared while it was being %s; retry", rec.ID, doing)
	}
	return out, err
}
