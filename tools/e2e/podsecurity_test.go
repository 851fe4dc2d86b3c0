package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// TestE2EPodSecurityRestricted checks that the etcd namespace enforces the "restricted" Pod Security
// Standard (the apiserver's PodSecurity admission refuses a pod that breaks it), that a snapshot still
// becomes ready there (its Job's pod was admitted), and that the driver's own Deployment
// (manifests/deployment.yaml) would be admitted in such a namespace too.
func TestE2EPodSecurityRestricted(t *testing.T) {
	r, ctx := setup(t)
	ns := r.Namespace
	namespace, err := r.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := namespace.Labels["pod-security.kubernetes.io/enforce"]; got != rig.PodSecurityLevel || rig.PodSecurityLevel != "restricted" {
		t.Fatalf("namespace %s enforces pod security %q, want restricted", ns, got)
	}
	dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}

	// The label is enforced: a pod "baseline" allows but "restricted" does not is refused.
	loose := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("e2e-not-restricted"), Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: r.EtcdImage, Command: []string{"/usr/local/bin/etcd"}}}},
	}
	_, err = r.Kube.CoreV1().Pods(ns).Create(ctx, loose, dryRun)
	if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `violates PodSecurity "restricted:latest"`) {
		t.Fatalf("a pod without runAsNonRoot, seccomp or dropped capabilities in %s: %v, want PodSecurity's refusal", ns, err)
	}
	t.Logf("refused as expected: %v", err)

	// A snapshot's Job pod is admitted and runs to completion.
	_, rec := readyGroup(t, ctx, r, uniqueName("e2e-podsecurity"))
	// The record turns Ready from the succeeded pod; the Job controller marks the Job Complete on its
	// own schedule, about a second later.
	var job *batchv1.Job
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		job, err = r.Kube.BatchV1().Jobs(ns).Get(ctx, rec.ID, metav1.GetOptions{})
		return err == nil && jobComplete(job), nil
	}); err != nil {
		t.Errorf("Job %s did not turn Complete within 30s: %+v", rec.ID, job)
	}
	pods, err := r.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + rec.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) == 0 {
		t.Errorf("no pod of Job %s in %s", rec.ID, ns)
	}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodSucceeded {
			t.Errorf("pod %s of the snapshot Job is %s, want Succeeded", p.Name, p.Status.Phase)
		}
	}

	// The driver's Deployment: its pod template, created as a pod in the restricted namespace. The
	// service account is swapped for the namespace's default one, which exists there; the rest is
	// exactly the manifest's.
	deployment := readDeployment(t)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("e2e-driver-deployment"), Namespace: ns, Labels: deployment.Spec.Template.Labels},
		Spec: *deployment.Spec.Template.Spec.DeepCopy()}
	pod.Spec.ServiceAccountName = "default"
	if _, err := r.Kube.CoreV1().Pods(ns).Create(ctx, pod, dryRun); err != nil {
		t.Errorf("the pod of manifests/deployment.yaml is refused in a namespace enforcing restricted: %v", err)
	}
	// The same pod with one restricted rule broken is refused, so the pass above means something.
	broken := pod.DeepCopy()
	broken.Spec.Containers[len(broken.Spec.Containers)-1].SecurityContext.AllowPrivilegeEscalation = ptr.To(true)
	if _, err := r.Kube.CoreV1().Pods(ns).Create(ctx, broken, dryRun); err == nil || !strings.Contains(err.Error(), "allowPrivilegeEscalation") {
		t.Errorf("the Deployment's pod with allowPrivilegeEscalation=true: %v, want PodSecurity's refusal", err)
	}
}

// jobComplete reports whether the Job has the Complete condition.
func jobComplete(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// readDeployment reads the driver's Deployment from manifests/deployment.yaml.
func readDeployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	root, err := rig.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "manifests", "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := utilyaml.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	if d.Kind != "Deployment" || len(d.Spec.Template.Spec.Containers) == 0 {
		t.Fatalf("manifests/deployment.yaml holds no Deployment with containers")
	}
	return &d
}
