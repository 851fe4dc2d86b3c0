package driver

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// The Job's pod layout is a contract with the rig's kubelet stand-in (tools/rig/podrunner): names, images,
// commands, args, mounts, termination message policy, security settings.
func TestSnapshotJobLayout(t *testing.T) {
	e := &Engine{cfg: EngineConfig{EtcdImage: fxEtcdImage, DriverImage: fxDriverImage}}
	rec := &Record{ID: snapshotID("n", true), Namespace: fxNS, Cluster: fxCluster}
	const endpoint = "https://127.0.0.1:23790"
	job := e.newSnapshotJob(rec, endpoint, true, 100*mi, snapshotParams{})

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
	if len(pod.InitContainers) != 2 || len(pod.Containers) != 1 {
		t.Fatalf("containers: %d init, %d main", len(pod.InitContainers), len(pod.Containers))
	}
	prepare, save, verify := pod.InitContainers[0], pod.InitContainers[1], pod.Containers[0]
	// prepare runs first on every attempt and clears what an earlier one left on the snapshot volume.
	if prepare.Name != "prepare" || prepare.Image != fxDriverImage || !slices.Equal(prepare.Command, []string{"/etcd-snapshot-driver"}) ||
		!slices.Equal(prepare.Args, []string{"prepare-save", "-file=/var/lib/etcd-snapshot/snapshot.db"}) ||
		len(prepare.VolumeMounts) != 1 || prepare.VolumeMounts[0].Name != "snapshot" || prepare.VolumeMounts[0].ReadOnly {
		t.Errorf("prepare container: %s %s %v %v %+v", prepare.Name, prepare.Image, prepare.Command, prepare.Args, prepare.VolumeMounts)
	}
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
	for _, c := range []corev1.Container{prepare, save, verify} {
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
	plainJob := e.newSnapshotJob(rec, "http://127.0.0.1:2379", false, 0, snapshotParams{})
	plain := plainJob.Spec.Template.Spec
	if len(plain.Volumes) != 1 || slices.ContainsFunc(plain.InitContainers[1].Args, func(a string) bool { return a == "--cacert=/etc/etcd-snapshot/tls/ca.crt" }) {
		t.Errorf("plaintext job still uses TLS: volumes %+v args %v", plain.Volumes, plain.InitContainers[1].Args)
	}
	if isSuspended(plainJob) || mountsTLSSecret(plainJob) || !mountsTLSSecret(job) {
		t.Errorf("plaintext job: suspended %v, mounts the Secret %v; TLS job mounts it %v", isSuspended(plainJob), mountsTLSSecret(plainJob), mountsTLSSecret(job))
	}
}

// The deadline grows with the database and leaves room for every attempt of the Job at 8 MiB/s, far
// below what save and verify together reach on a healthy cluster (jobSlowThroughput, job.go).
func TestJobDeadline(t *testing.T) {
	const slow = 8 << 20 // bytes a second
	prev := int64(0)
	for _, size := range []int64{-1, 0, 1, 256 << 20, 256<<20 + 1, 1 << 30, 8 << 30, 1 << 50} {
		d := jobDeadline(size)
		if d < prev || d < 300 || d > 24*3600 {
			t.Errorf("jobDeadline(%d) = %d, previous %d; want growing, from 300 s to a day", size, d, prev)
		}
		prev = d
	}
	for _, size := range []int64{0, 1 << 30, 8 << 30} {
		// Three attempts (backoffLimit 2), each its transfer at the slow rate plus a minute to start.
		if d, need := jobDeadline(size), 3*(size/slow+60); d < need {
			t.Errorf("jobDeadline(%d) = %d s; three attempts at 8 MiB/s need %d s", size, d, need)
		}
	}
	if d := jobDeadline(8 << 30); d < 3600 {
		t.Errorf("jobDeadline(8 GiB) = %ds; an 8 GiB save and verify on a healthy cluster needs more", d)
	}
}

// The verify container's memory limit grows with the database, bounded, and a class parameter
// replaces it; the deadline likewise. The figures are those job.go states for jobVerifyMemoryBase and
// jobDeadline.
func TestSnapshotJobSizing(t *testing.T) {
	e := &Engine{cfg: EngineConfig{EtcdImage: fxEtcdImage, DriverImage: fxDriverImage}}
	rec := &Record{ID: snapshotID("n", true), Namespace: fxNS, Cluster: fxCluster}
	override := resource.MustParse("3Gi")
	cases := []struct {
		name         string
		dbSize       int64
		params       snapshotParams
		wantMemory   string
		wantDeadline int64
	}{
		{name: "empty database", dbSize: 0, wantMemory: "256Mi", wantDeadline: 660},
		{name: "1 GiB", dbSize: 1 << 30, wantMemory: "320Mi", wantDeadline: 1044},
		{name: "8 GiB", dbSize: 8 << 30, wantMemory: "768Mi", wantDeadline: 3732},
		{name: "1 PiB reported", dbSize: 1 << 50, wantMemory: "16Gi", wantDeadline: 24 * 3600},
		{name: "class overrides", dbSize: 8 << 30, params: snapshotParams{VerifyMemory: &override, JobDeadline: 7200}, wantMemory: "3Gi", wantDeadline: 7200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			job := e.newSnapshotJob(rec, "https://127.0.0.1:2379", true, tc.dbSize, tc.params)
			verify := job.Spec.Template.Spec.Containers[0]
			if got := verify.Resources.Limits[corev1.ResourceMemory]; got.Cmp(resource.MustParse(tc.wantMemory)) != 0 {
				t.Errorf("verify memory limit %s, want %s", got.String(), tc.wantMemory)
			}
			if got := verify.Resources.Requests[corev1.ResourceMemory]; got.Cmp(verify.Resources.Limits[corev1.ResourceMemory]) > 0 {
				t.Errorf("verify memory request %s above its limit", got.String())
			}
			if got := *job.Spec.ActiveDeadlineSeconds; got != tc.wantDeadline {
				t.Errorf("activeDeadlineSeconds %d, want %d", got, tc.wantDeadline)
			}
		})
	}
}

// The snapshot duration histogram resolves every duration a Job can take to succeed: its last
// finite bucket is at or above the deadline of an 8 GiB database.
func TestSnapshotDurationBucketsCoverTheDeadline(t *testing.T) {
	last := snapshotDurationBuckets[len(snapshotDurationBuckets)-1]
	if d := jobDeadline(8 << 30); last < float64(d) {
		t.Errorf("snapshot_duration_seconds buckets end at %g s; an 8 GiB database's Job may succeed up to %d s", last, d)
	}
}

// A file verify rejects fails the Job at once: the Job's pod failure policy matches the exit code
// RunVerify gives a damaged snapshot, for the verify container only (a failed save is retried).
func TestSnapshotJobFailsAtOnceWhenVerifyRejects(t *testing.T) {
	good := snapshotFixture(t)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "damaged.db")
	if err := os.WriteFile(bad, flipBit(data, len(data)/2), 0o600); err != nil {
		t.Fatal(err)
	}
	code := RunVerify(VerifyOptions{File: bad}, io.Discard, io.Discard)

	e := &Engine{cfg: EngineConfig{EtcdImage: fxEtcdImage, DriverImage: fxDriverImage}}
	job := e.newSnapshotJob(&Record{ID: snapshotID("n", true), Namespace: fxNS, Cluster: fxCluster}, "https://127.0.0.1:2379", true, 1<<30, snapshotParams{})
	// action returns what the Job's pod failure policy does when container exits with exit.
	action := func(container string, exit int32) batchv1.PodFailurePolicyAction {
		if job.Spec.PodFailurePolicy == nil {
			return "count against backoffLimit"
		}
		for _, r := range job.Spec.PodFailurePolicy.Rules {
			req := r.OnExitCodes
			if req != nil && (req.ContainerName == nil || *req.ContainerName == container) &&
				slices.Contains(req.Values, exit) == (req.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn) {
				return r.Action
			}
		}
		return "count against backoffLimit"
	}
	if got := action("verify", int32(code)); got != batchv1.PodFailurePolicyActionFailJob {
		t.Errorf("verify rejecting a damaged file (exit %d): the Job would %s; want FailJob", code, got)
	}
	if got := action("save", 1); got == batchv1.PodFailurePolicyActionFailJob {
		t.Error("a failed save fails the Job at once; want it retried")
	}
}

// A save killed midway leaves etcdctl's "<file>.part"; the next attempt's save (the library call
// etcdctl makes) truncates and reuses it rather than failing or needing room for both.
func TestSaveReusesKilledSavesPartFile(t *testing.T) {
	c := startTestCluster(t, 1)
	c.Put(t, 20, "part/")
	path := filepath.Join(t.TempDir(), "snapshot.db")
	if err := os.WriteFile(path+".part", bytes.Repeat([]byte("torn"), 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	c.saveSnapshot(t, path)
	if _, err := os.Stat(path + ".part"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s.part after the save: %v; want it gone", path, err)
	}
	if res, err := VerifySnapshot(path); err != nil || res.Keys != 20 {
		t.Errorf("the retried save's file: %+v, %v; want it to verify with 20 keys", res, err)
	}
}
