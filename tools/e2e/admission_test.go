package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// policyMessage starts every refusal of manifests/admission-policy.yaml's shape policies.
const policyMessage = "etcd-snapshot-driver admission policy: "

// forgery is one object the driver's identity must not be able to create.
type forgery struct {
	name string
	// want are fragments of the refusal beyond policyMessage.
	want []string
}

// TestE2EAdmissionRefusesForgedObjects takes a real snapshot (so the driver's own Job, Secret and PVC
// pass the policies, create and update), then, with the driver's token, asks the apiserver to create
// copies of that Job, and Secrets and PVCs shaped like the driver's, each changed in one way an
// attacker holding the token would want. Every such request is refused with the policy's message,
// while the unchanged copy is admitted, so each refusal comes from the one change (and every CEL
// expression evaluates without error on the real shape: failurePolicy Fail would refuse it otherwise).
// The requests are dry runs: admission runs in full and nothing is stored or started.
func TestE2EAdmissionRefusesForgedObjects(t *testing.T) {
	r, ctx := setup(t)
	_, rec := readyGroup(t, ctx, r, uniqueName("e2e-admission"))
	asDriver, err := r.DriverClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ns := r.Namespace
	real, err := r.Kube.BatchV1().Jobs(ns).Get(ctx, rec.ID, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the snapshot's Job: %v", err)
	}
	id := fakeSnapshotID(t)
	base := jobLike(real, rec.ID, id)
	dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	createJob := func(j *batchv1.Job) error {
		_, err := asDriver.BatchV1().Jobs(ns).Create(ctx, j, dryRun)
		return err
	}
	if err := createJob(base); err != nil {
		t.Fatalf("a copy of the driver's own Job is refused, so no refusal below would prove anything: %v", err)
	}

	jobCases := []struct {
		forgery
		edit func(j *batchv1.Job)
	}{
		{forgery{"another image", []string{"docker.io/library/busybox:1.36", "is not one the driver runs"}},
			func(j *batchv1.Job) { j.Spec.Template.Spec.InitContainers[1].Image = "docker.io/library/busybox:1.36" }},
		{forgery{"the driver image in the etcdctl step", []string{rig.DriverImage, "is not one the driver runs"}},
			func(j *batchv1.Job) { j.Spec.Template.Spec.InitContainers[1].Image = rig.DriverImage }},
		{forgery{"the etcd image in the prepare step", []string{r.EtcdImage, "is not one the driver runs"}},
			func(j *batchv1.Job) { j.Spec.Template.Spec.InitContainers[0].Image = r.EtcdImage }},
		{forgery{"the prepare step removing another file", []string{"exactly `etcd-snapshot-driver"}},
			func(j *batchv1.Job) {
				j.Spec.Template.Spec.InitContainers[0].Args = []string{"prepare-save", "-file=/var/lib/etcd-snapshot/../etcd/member/snap/db"}
			}},
		{forgery{"no prepare step", []string{"exactly `etcd-snapshot-driver"}},
			func(j *batchv1.Job) { j.Spec.Template.Spec.InitContainers = j.Spec.Template.Spec.InitContainers[1:] }},
		{forgery{"a service account", []string{"names no service account"}},
			func(j *batchv1.Job) { j.Spec.Template.Spec.ServiceAccountName = "default" }},
		{forgery{"a mounted service account token", []string{"mounts no"}},
			func(j *batchv1.Job) { j.Spec.Template.Spec.AutomountServiceAccountToken = ptr.To(true) }},
		{forgery{"a hostPath volume", []string{"mounts only its PVC", "host-root"}},
			func(j *batchv1.Job) {
				j.Spec.Template.Spec.Volumes = append(j.Spec.Template.Spec.Volumes, corev1.Volume{Name: "host-root",
					VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
				c := &j.Spec.Template.Spec.Containers[0]
				c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "host-root", MountPath: "/host"})
			}},
		{forgery{"a privileged container", []string{"not privileged"}},
			func(j *batchv1.Job) {
				sc := j.Spec.Template.Spec.Containers[0].SecurityContext
				sc.Privileged, sc.AllowPrivilegeEscalation = ptr.To(true), ptr.To(true)
			}},
		{forgery{"an added capability", []string{"add no capabilities"}},
			func(j *batchv1.Job) {
				j.Spec.Template.Spec.InitContainers[1].SecurityContext.Capabilities.Add = []corev1.Capability{"SYS_ADMIN"}
			}},
		{forgery{"another Secret mounted", []string{"mounts only its PVC", "its Secret " + id + "-tls"}},
			func(j *batchv1.Job) {
				for i := range j.Spec.Template.Spec.Volumes {
					if s := j.Spec.Template.Spec.Volumes[i].Secret; s != nil {
						s.SecretName = "etcd-client-credentials"
					}
				}
			}},
		{forgery{"another Secret through envFrom", []string{"sets no environment"}},
			func(j *batchv1.Job) {
				j.Spec.Template.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "etcd-client-credentials"}}}}
			}},
		{forgery{"etcdctl settings through env", []string{"sets no environment"}},
			func(j *batchv1.Job) {
				j.Spec.Template.Spec.InitContainers[1].Env = []corev1.EnvVar{{Name: "ETCDCTL_INSECURE_SKIP_TLS_VERIFY", Value: "true"}}
			}},
		{forgery{"an extra etcdctl flag", []string{"with the driver's arguments only"}},
			func(j *batchv1.Job) {
				c := &j.Spec.Template.Spec.InitContainers[1]
				c.Args = append(c.Args, "--insecure-skip-tls-verify")
			}},
		{forgery{"another PVC mounted", []string{"mounts only its PVC", rec.Sources[0].PVC}},
			func(j *batchv1.Job) {
				for i := range j.Spec.Template.Spec.Volumes {
					if p := j.Spec.Template.Spec.Volumes[i].PersistentVolumeClaim; p != nil {
						p.ClaimName = rec.Sources[0].PVC
					}
				}
			}},
		{forgery{"the host network", []string{"no host network"}},
			func(j *batchv1.Job) { j.Spec.Template.Spec.HostNetwork = true }},
		{forgery{"the host PID namespace", []string{"no host network, PID"}},
			func(j *batchv1.Job) { j.Spec.Template.Spec.HostPID = true }},
		{forgery{"root", []string{"runs as non-root"}},
			func(j *batchv1.Job) {
				j.Spec.Template.Spec.InitContainers[1].SecurityContext.RunAsUser = ptr.To[int64](0)
			}},
		{forgery{"another command", []string{"exactly `etcd-snapshot-driver"}},
			func(j *batchv1.Job) {
				j.Spec.Template.Spec.Containers[0].Args = []string{"restore", "-file=/var/lib/etcd-snapshot/snapshot.db"}
			}},
		{forgery{"no managed-by label", []string{"labelled app.kubernetes.io/managed-by=etcd-snapshot-driver"}},
			func(j *batchv1.Job) { delete(j.Labels, rig.ManagedByLabel) }},
		{forgery{"a name that is no snapshot id", []string{"named after its snapshot id"}},
			func(j *batchv1.Job) { j.Name = "backup-exfiltrate" }},
	}
	for _, c := range jobCases {
		t.Run("Job with "+c.name, func(t *testing.T) {
			j := base.DeepCopy()
			c.edit(j)
			wantRefused(t, createJob(j), "Job", c.forgery)
		})
	}

	// Secrets and PVCs shaped like the driver's (driver/job.go newTLSSecret, driver/jobpvc.go).
	secret := func() *corev1.Secret {
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: id + "-tls", Namespace: ns, Labels: base.Labels,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: id, UID: types.UID("00000000-0000-0000-0000-000000000001"),
					Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}},
			Type:      corev1.SecretTypeOpaque,
			Immutable: ptr.To(true),
			Data:      map[string][]byte{"ca.crt": []byte("ca"), "tls.crt": []byte("cert"), "tls.key": []byte("key")},
		}
	}
	createSecret := func(s *corev1.Secret) error {
		_, err := asDriver.CoreV1().Secrets(ns).Create(ctx, s, dryRun)
		return err
	}
	if err := createSecret(secret()); err != nil {
		t.Fatalf("a Secret shaped like the driver's is refused: %v", err)
	}
	secretCases := []struct {
		forgery
		edit func(s *corev1.Secret)
	}{
		{forgery{"the service-account token type", []string{"of type Opaque"}},
			func(s *corev1.Secret) {
				s.Type, s.Data = corev1.SecretTypeServiceAccountToken, nil
				s.Annotations = map[string]string{corev1.ServiceAccountNameKey: "default"}
			}},
		{forgery{"another key", []string{"holds only ca.crt, tls.crt and tls.key"}},
			func(s *corev1.Secret) { s.Data["kubeconfig"] = []byte("x") }},
		{forgery{"no owning Job", []string{"owned by its snapshot Job"}},
			func(s *corev1.Secret) { s.OwnerReferences = nil }},
		{forgery{"another name", []string{"is <snapshot id>-tls"}},
			func(s *corev1.Secret) { s.Name = "etcd-client-credentials" }},
		{forgery{"no managed-by label", []string{"lacks the label"}},
			func(s *corev1.Secret) { s.Labels = map[string]string{"app": "x"} }},
	}
	for _, c := range secretCases {
		t.Run("Secret with "+c.name, func(t *testing.T) {
			s := secret()
			c.edit(s)
			wantRefused(t, createSecret(s), "Secret", c.forgery)
		})
	}

	realPVC, err := r.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, rec.ID, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the snapshot's PVC: %v", err)
	}
	pvc := func() *corev1.PersistentVolumeClaim {
		spec := *realPVC.Spec.DeepCopy()
		spec.VolumeName = ""
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: id, Namespace: ns, Labels: base.Labels}, Spec: spec}
	}
	createPVC := func(p *corev1.PersistentVolumeClaim) error {
		_, err := asDriver.CoreV1().PersistentVolumeClaims(ns).Create(ctx, p, dryRun)
		return err
	}
	if err := createPVC(pvc()); err != nil {
		t.Fatalf("a PVC shaped like the driver's is refused: %v", err)
	}
	pvcCases := []struct {
		forgery
		edit func(p *corev1.PersistentVolumeClaim)
	}{
		{forgery{"a clone of an etcd member's volume", []string{"neither clones"}},
			func(p *corev1.PersistentVolumeClaim) {
				p.Spec.DataSource = &corev1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: rec.Sources[0].PVC}
			}},
		{forgery{"a bound existing volume", []string{"nor binds (volumeName)"}},
			func(p *corev1.PersistentVolumeClaim) { p.Spec.VolumeName = realPVC.Spec.VolumeName }},
		{forgery{"no managed-by label", []string{"lacks the label"}},
			func(p *corev1.PersistentVolumeClaim) { p.Labels = nil }},
	}
	for _, c := range pvcCases {
		t.Run("PVC with "+c.name, func(t *testing.T) {
			p := pvc()
			c.edit(p)
			wantRefused(t, createPVC(p), "PVC", c.forgery)
		})
	}

	// ConfigMaps in kube-system: the metadata Role allows writing any, the policy only the records.
	// The snapshot above wrote its record (create and updates), so records pass.
	cms := asDriver.CoreV1().ConfigMaps(rig.DriverNamespace)
	images, err := cms.Get(ctx, rig.ImagesConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	images.Data["etcdImages"] += ",docker.io/library/busybox:1.36"
	_, err = cms.Update(ctx, images, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
	wantRefused(t, err, "ConfigMap", forgery{"the allowed images widened", []string{"writes only its snapshot records", rig.ImagesConfigMap}})
	_, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns-override", Labels: base.Labels}}, dryRun)
	wantRefused(t, err, "ConfigMap", forgery{"a name that is no snapshot id", []string{"writes only its snapshot records", "coredns-override"}})
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: id, Labels: base.Labels}}, dryRun); err != nil {
		t.Errorf("a record-shaped ConfigMap is refused: %v", err)
	}

	// PersistentVolumes: the driver patches the reclaim policy of its snapshots' volumes only, and never
	// their claimRef.
	memberPVC, err := r.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, rec.Sources[0].PVC, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	patchPV := func(name, patch string) error {
		_, err := asDriver.CoreV1().PersistentVolumes().Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	}
	if err := patchPV(realPVC.Spec.VolumeName, `{"spec":{"persistentVolumeReclaimPolicy":"Delete"}}`); err != nil {
		t.Errorf("the reclaim policy of the snapshot's own volume may not be changed: %v", err)
	}
	wantRefused(t, patchPV(memberPVC.Spec.VolumeName, `{"spec":{"persistentVolumeReclaimPolicy":"Delete"}}`), "patch of a PersistentVolume",
		forgery{"an etcd member's volume set to Delete", []string{"only the volumes of its snapshots", memberPVC.Spec.VolumeName}})
	wantRefused(t, patchPV(realPVC.Spec.VolumeName, `{"spec":{"claimRef":{"name":"stolen"}}}`), "patch of a PersistentVolume",
		forgery{"the snapshot's volume handed to another claim", []string{"never their claimRef"}})

	// UPDATE too: the driver may patch Jobs (to resume its own), but not someone else's.
	foreign := foreignJob(ns)
	if _, err := r.Kube.BatchV1().Jobs(ns).Create(ctx, foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		err := r.Kube.BatchV1().Jobs(ns).Delete(cleanupContext(t), foreign.Name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("clean-up: delete Job %s: %v", foreign.Name, err)
		}
	})
	_, err = asDriver.BatchV1().Jobs(ns).Patch(ctx, foreign.Name, types.MergePatchType, []byte(`{"spec":{"suspend":false}}`), metav1.PatchOptions{})
	wantRefused(t, err, "patch of a Job", forgery{"another's Job resumed", []string{"labelled app.kubernetes.io/managed-by"}})
	if j, err := r.Kube.BatchV1().Jobs(ns).Get(ctx, foreign.Name, metav1.GetOptions{}); err != nil || !ptr.Deref(j.Spec.Suspend, false) {
		t.Errorf("the foreign Job after the refused patch: suspended %v, err %v", j != nil && ptr.Deref(j.Spec.Suspend, false), err)
	}
}

// wantRefused checks err is the shape policies' refusal with the given fragments.
func wantRefused(t *testing.T, err error, kind string, f forgery) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("the driver's identity may create a %s with %s", kind, f.name)
		return
	case !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err):
		t.Errorf("%s with %s: %v, want a refusal by the admission policy", kind, f.name, err)
		return
	}
	msg := err.Error()
	for _, w := range append([]string{policyMessage}, f.want...) {
		if !strings.Contains(msg, w) {
			t.Errorf("%s with %s: refusal lacks %q: %v", kind, f.name, w, err)
		}
	}
	t.Logf("refused %s with %s: %v", kind, f.name, err)
}

// jobLike copies the driver's Job for snapshot oldID as a new Job for newID: the fields the driver
// writes, none of those the apiserver and Job controller add (selector, controller labels, status).
func jobLike(real *batchv1.Job, oldID, newID string) *batchv1.Job {
	j := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: newID, Namespace: real.Namespace, Labels: relabel(real.Labels, oldID, newID)},
		Spec:       *real.Spec.DeepCopy(),
	}
	j.Spec.Selector = nil
	j.Spec.ManualSelector = nil
	j.Spec.Suspend = ptr.To(true)
	j.Spec.Template.Labels = relabel(real.Spec.Template.Labels, oldID, newID)
	for k := range j.Spec.Template.Labels {
		if strings.Contains(k, "controller-uid") || strings.Contains(k, "job-name") {
			delete(j.Spec.Template.Labels, k)
		}
	}
	for i := range j.Spec.Template.Spec.Volumes {
		v := &j.Spec.Template.Spec.Volumes[i]
		if v.PersistentVolumeClaim != nil {
			v.PersistentVolumeClaim.ClaimName = strings.ReplaceAll(v.PersistentVolumeClaim.ClaimName, oldID, newID)
		}
		if v.Secret != nil {
			v.Secret.SecretName = strings.ReplaceAll(v.Secret.SecretName, oldID, newID)
		}
	}
	return j
}

// relabel copies labels with every value naming oldID naming newID.
func relabel(in map[string]string, oldID, newID string) map[string]string {
	out := map[string]string{}
	for k, v := range in {
		out[k] = strings.ReplaceAll(v, oldID, newID)
	}
	return out
}

// fakeSnapshotID is a group snapshot id no snapshot has.
func fakeSnapshotID(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "etcdgs-" + hex.EncodeToString(b)
}

// foreignJob is a suspended Job of someone else in ns; it never starts a pod.
func foreignJob(ns string) *batchv1.Job {
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: uniqueName("e2e-someone-elses-job"), Namespace: ns, Labels: map[string]string{"app": "someone-else"}},
		Spec: batchv1.JobSpec{
			Suspend: ptr.To(true),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers:    []corev1.Container{{Name: "main", Image: "docker.io/library/busybox:1.36", Command: []string{"true"}}},
			}},
		},
	}
}
