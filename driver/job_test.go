package driver

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// The Job's pod layout is a contract with the rig's kubelet stand-in (CONTRACTS.md): names, images,
// commands, args, mounts, termination message policy, security settings.
func TestSnapshotJobLayout(t *testing.T) {
	e := &Engine{cfg: EngineConfig{EtcdImage: fxEtcdImage, DriverImage: fxDriverImage}}
	rec := &Record{ID: snapshotID("n", true), Namespace: fxNS, Cluster: fxCluster}
	const endpoint = "https://127.0.0.1:23790"
	job := e.newSnapshotJob(rec, endpoint, true, 100*mi)

	if job.Name != rec.ID || job.Namespace != fxNS || *job.Spec.BackoffLimit != 2 || job.Spec.TTLSecondsAfterFinished != nil {
		t.Errorf("job meta/spec: %s/%s backoff %d ttl %v", job.Namespace, job.Name, *job.Spec.BackoffLimit, job.Spec.TTLSecondsAfterFinished)
	}
	if !isSuspended(job) {
		t.Error("a Job mounting the credentials Secret must start suspended (the Secret is created after it)")
	}
	if *job.Spec.ActiveDeadlineSeconds != jobDeadline(100*mi) {
		t.Errorf("deadline %d", *job.Spec.ActiveDeadlineSeconds)
	}
	for k, v := range objectLabels(rec.ID, fxCluster) {
		if job.Labels[k] != v || job.Spec.Template.Labels[k] != v {
			t.Errorf("label %s=%s missing on the Job or its pods", k, v)
		}
	}
	pod := job.Spec.Template.Spec
	if pod.RestartPolicy != corev1.RestartPolicyNever || pod.SecurityContext == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Errorf("pod restartPolicy %s securityContext %+v", pod.RestartPolicy, pod.SecurityContext)
	}
	if len(pod.InitContainers) != 1 || len(pod.Containers) != 1 {
		t.Fatalf("containers: %d init, %d main", len(pod.InitContainers), len(pod.Containers))
	}
	save, verify := pod.InitContainers[0], pod.Containers[0]
	wantSave := []string{"snapshot", "save", "/var/lib/etcd-snapshot/snapshot.db", "--endpoints=" + endpoint,
		"--cacert=/etc/etcd-snapshot/tls/ca.crt", "--cert=/etc/etcd-snapshot/tls/tls.crt", "--key=/etc/etcd-snapshot/tls/tls.key"}
	if save.Name != "save" || save.Image != fxEtcdImage || !slices.Equal(save.Command, []string{"/usr/local/bin/etcdctl"}) ||
		!slices.Equal(save.Args[:len(wantSave)], wantSave) {
		t.Errorf("save container: %s %s %v %v", save.Name, save.Image, save.Command, save.Args)
	}
	wantVerify := []string{"verify", "-file=/var/lib/etcd-snapshot/snapshot.db", "-termination-log=/dev/termination-log"}
	if verify.Name != "verify" || verify.Image != fxDriverImage || !slices.Equal(verify.Command, []string{"/etcd-snapshot-driver"}) ||
		!slices.Equal(verify.Args, wantVerify) {
		t.Errorf("verify container: %s %s %v %v", verify.Name, verify.Image, verify.Command, verify.Args)
	}
	for _, c := range []corev1.Container{save, verify} {
		sc := c.SecurityContext
		if c.TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError || sc == nil || !*sc.ReadOnlyRootFilesystem ||
			*sc.AllowPrivilegeEscalation || c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("container %s: policy %s securityContext %+v resources %+v", c.Name, c.TerminationMessagePolicy, sc, c.Resources)
		}
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range save.VolumeMounts {
		mounts[m.Name] = m
	}
	if mounts["snapshot"].MountPath != "/var/lib/etcd-snapshot" || mounts["tls"].MountPath != "/etc/etcd-snapshot/tls" || !mounts["tls"].ReadOnly {
		t.Errorf("save mounts %+v", save.VolumeMounts)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	if pvc := vols["snapshot"].PersistentVolumeClaim; pvc == nil || pvc.ClaimName != rec.ID {
		t.Errorf("snapshot volume %+v", vols["snapshot"])
	}
	if s := vols["tls"].Secret; s == nil || s.SecretName != rec.ID+"-tls" {
		t.Errorf("tls volume %+v", vols["tls"])
	}

	// Plaintext (allowed by the class): no Secret volume, no TLS flags.
	plainJob := e.newSnapshotJob(rec, "http://127.0.0.1:2379", false, 0)
	plain := plainJob.Spec.Template.Spec
	if len(plain.Volumes) != 1 || slices.ContainsFunc(plain.InitContainers[0].Args, func(a string) bool { return a == "--cacert=/etc/etcd-snapshot/tls/ca.crt" }) {
		t.Errorf("plaintext job still uses TLS: volumes %+v args %v", plain.Volumes, plain.InitContainers[0].Args)
	}
	if isSuspended(plainJob) || mountsTLSSecret(plainJob) || !mountsTLSSecret(job) {
		t.Errorf("plaintext job: suspended %v, mounts the Secret %v; TLS job mounts it %v", isSuspended(plainJob), mountsTLSSecret(plainJob), mountsTLSSecret(job))
	}
}

// The deadline grows with the database and leaves an 8 GiB database over an hour.
func TestJobDeadline(t *testing.T) {
	prev := int64(0)
	for _, size := range []int64{-1, 0, 1, 256 * mi, 256*mi + 1, 1 << 30, 8 << 30} {
		d := jobDeadline(size)
		if d < prev || d < jobDeadlineBase {
			t.Errorf("jobDeadline(%d) = %d, previous %d", size, d, prev)
		}
		prev = d
	}
	if d := jobDeadline(8 << 30); d < 3600 {
		t.Errorf("jobDeadline(8 GiB) = %ds; an 8 GiB save and verify on a healthy cluster needs more", d)
	}
}
