package driver

import (
	"context"
	"fmt"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stesting "k8s.io/client-go/testing"
)

// What a fixture's fake API server holds, and what the driver sent it.

// exists reports whether an object of kind (Job, Secret, PersistentVolumeClaim, ConfigMap) exists.
func (f *fixture) exists(kind, ns, name string) bool {
	f.t.Helper()
	var err error
	ctx := context.Background()
	switch kind {
	case "Job":
		_, err = f.admin.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
	case "Secret":
		_, err = f.admin.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	case "PersistentVolumeClaim":
		_, err = f.admin.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	case "ConfigMap":
		_, err = f.admin.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	default:
		f.t.Fatalf("unknown kind %s", kind)
	}
	if err != nil && !apierrors.IsNotFound(err) {
		f.t.Fatal(err)
	}
	return err == nil
}

// objectSet tells, by kind, which of the Job, Secret, PVC and metadata ConfigMap of a snapshot exist.
type objectSet map[string]bool

// String is "Kind=true|false" in a fixed order, for readable comparisons.
func (o objectSet) String() string {
	return fmt.Sprintf("Job=%t Secret=%t PersistentVolumeClaim=%t ConfigMap=%t",
		o["Job"], o["Secret"], o["PersistentVolumeClaim"], o["ConfigMap"])
}

// objectsOf reports which of the Job, Secret, PVC and metadata ConfigMap of snapshot id exist.
func (f *fixture) objectsOf(id string) objectSet {
	return objectSet{
		"Job":                   f.exists("Job", fxNS, id),
		"Secret":                f.exists("Secret", fxNS, tlsSecretName(id)),
		"PersistentVolumeClaim": f.exists("PersistentVolumeClaim", fxNS, id),
		"ConfigMap":             f.exists("ConfigMap", fxMetaNS, id),
	}
}

// countActions counts the driver's actions of verb on resource.
func (f *fixture) countActions(verb, resource string) int {
	n := 0
	for _, a := range f.kube.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == resource {
			n++
		}
	}
	return n
}

// jobCreates counts Job create calls the driver made for name (every name when name is "").
func (f *fixture) jobCreates(name string) int {
	if name == "" {
		return f.countActions("create", "jobs")
	}
	n := 0
	for _, a := range f.kube.Actions() {
		c, ok := a.(k8stesting.CreateAction)
		if !ok || a.GetVerb() != "create" || a.GetResource().Resource != "jobs" {
			continue
		}
		if j, ok := c.GetObject().(*batchv1.Job); ok && j.Name == name {
			n++
		}
	}
	return n
}

// writes lists every create, update, patch and delete the driver sent, for "nothing created".
func (f *fixture) writes() []string {
	var out []string
	for _, a := range f.kube.Actions() {
		switch a.GetVerb() {
		case "create", "update", "patch", "delete":
			out = append(out, a.GetVerb()+" "+a.GetResource().Resource)
		}
	}
	return out
}

// finishJob plays the Job controller and kubelet for snapshot id: a pod of the Job with the given
// status, then the Job's terminal condition.
func (f *fixture) finishJob(id, podName string, podStatus corev1.PodStatus, cond batchv1.JobCondition) {
	f.t.Helper()
	ctx := context.Background()
	job, err := f.admin.BatchV1().Jobs(fxNS).Get(ctx, id, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: fxNS, Labels: job.Spec.Template.Labels, CreationTimestamp: metav1.Now()},
		Spec:       job.Spec.Template.Spec,
		Status:     podStatus,
	}
	if _, err := f.admin.CoreV1().Pods(fxNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	cond.Status = corev1.ConditionTrue
	job.Status.Conditions = append(job.Status.Conditions, cond)
	if cond.Type == batchv1.JobComplete {
		job.Status.Succeeded = 1
	} else {
		job.Status.Failed = *job.Spec.BackoffLimit + 1
	}
	if _, err := f.admin.BatchV1().Jobs(fxNS).UpdateStatus(ctx, job, metav1.UpdateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// storedRecord reads the record of id as the API server holds it, and the resourceVersion read.
func (f *fixture) storedRecord(id string) (*Record, string) {
	f.t.Helper()
	cm, err := f.admin.CoreV1().ConfigMaps(fxMetaNS).Get(context.Background(), id, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	rec, err := decodeRecord(cm)
	if err != nil {
		f.t.Fatal(err)
	}
	return rec, cm.ResourceVersion
}

// storeRecord writes rec over the stored record read at resourceVersion rv, as another writer would.
func (f *fixture) storeRecord(rec *Record, rv string) {
	f.t.Helper()
	cm, err := encodeRecord(fxMetaNS, rec)
	if err != nil {
		f.t.Fatal(err)
	}
	cm.ResourceVersion = rv
	if _, err := f.admin.CoreV1().ConfigMaps(fxMetaNS).Update(context.Background(), cm, metav1.UpdateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// interruptedCreate is a Create whose driver stopped mid-provision: it creates req and stops the
// engine, and returns the record Create answered, the stored one set back to Pending (as it is until
// Create's last write), and the resourceVersion it was read at, for the test to store (storeRecord).
func (f *fixture) interruptedCreate(req SnapshotRequest) (rec, pending *Record, rv string) {
	f.t.Helper()
	rec = f.create(req)
	f.stop()
	pending, rv = f.storedRecord(rec.ID)
	pending.Phase = PhasePending
	return rec, pending, rv
}
