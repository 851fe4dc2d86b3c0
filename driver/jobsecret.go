package driver

import (
	"context"

	"github.com/golang/glog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// newTLSSecret carries the client credentials into the Job's namespace; the CSI secret may live
// elsewhere and the pod can only mount Secrets of its own namespace.
func newTLSSecret(rec *Record, creds Credentials) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: tlsSecretName(rec.ID), Namespace: rec.Namespace, Labels: objectLabels(rec.ID, rec.Cluster)},
		Type:       corev1.SecretTypeOpaque,
		Immutable:  ptr.To(true),
		Data:       map[string][]byte{secretKeyCA: creds.CA, secretKeyCert: creds.Cert, secretKeyKey: creds.Key},
	}
}

// jobOwnerReference makes job the owner of the credentials Secret, so the garbage collector removes
// the credentials with the Job even if the driver never gets to. Not a controller reference: nothing
// reconciles it, and blockOwnerDeletion would need finalizer rights on Jobs.
func jobOwnerReference(job *batchv1.Job) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion:         batchv1.SchemeGroupVersion.String(),
		Kind:               "Job",
		Name:               job.Name,
		UID:                job.UID,
		Controller:         ptr.To(false),
		BlockOwnerDeletion: ptr.To(false),
	}
}

// createTLSSecret creates the credentials Secret owned by job. The owner reference is in the create
// body because the driver may not patch Secrets (manifests/README.md): every verb but create and
// delete returns Secret contents. For the same reason a Secret an interrupted attempt left is never
// read: it is deleted and created again, owned by this Job and holding this request's credentials.
func (e *Engine) createTLSSecret(ctx context.Context, rec *Record, creds Credentials, job *batchv1.Job) error {
	client := e.cfg.Kube.CoreV1().Secrets(rec.Namespace)
	name := tlsSecretName(rec.ID)
	secret := newTLSSecret(rec, creds)
	secret.OwnerReferences = []metav1.OwnerReference{jobOwnerReference(job)}
	_, err := client.Create(ctx, secret, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		return kubeStatus(err, "creating Secret %s/%s", rec.Namespace, name)
	}
	glog.V(2).Infof("Replacing Secret %s/%s left by an earlier attempt of snapshot %s", rec.Namespace, name, rec.ID)
	if err := e.deleteTLSSecret(ctx, rec.Namespace, rec.ID); err != nil {
		// The admission policy refuses deleting a Secret the driver did not label as its own.
		return status.Errorf(status.Code(err), "Secret %s/%s already exists and cannot be replaced (if it is not part of snapshot %s, remove it): %v",
			rec.Namespace, name, rec.ID, err)
	}
	_, err = client.Create(ctx, secret, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return status.Errorf(codes.Aborted, "Secret %s/%s was created again by someone else while being replaced; retry", rec.Namespace, name)
	}
	return kubeStatus(err, "creating Secret %s/%s", rec.Namespace, name)
}

// deleteTLSSecret deletes the credentials Secret of snapshot id by name, without reading it first
// (the driver may not). The name derives from the id, and the admission policy refuses deleting a
// Secret without the driver's label. A missing Secret is fine.
func (e *Engine) deleteTLSSecret(ctx context.Context, ns, id string) error {
	err := e.cfg.Kube.CoreV1().Secrets(ns).Delete(ctx, tlsSecretName(id), metav1.DeleteOptions{})
	switch {
	case err == nil:
		glog.V(2).Infof("Deleted Secret %s/%s of snapshot %s", ns, tlsSecretName(id), id)
		return nil
	case apierrors.IsNotFound(err):
		return nil
	}
	return kubeStatus(err, "deleting Secret %s/%s", ns, tlsSecretName(id))
}
