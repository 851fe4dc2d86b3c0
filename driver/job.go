package driver

import (
	"context"

	"github.com/golang/glog"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// Pod layout of the snapshot Job (TestSnapshotJobLayout holds it; manifests/admission-policy.yaml
// checks the Job's shape, and the rig's kubelet stand-in, tools/rig/podrunner, relies on it).
const (
	saveContainer      = "save"
	verifyContainer    = "verify"
	snapshotVolume     = "snapshot"
	tlsVolume          = "tls"
	snapshotMountPath  = "/var/lib/etcd-snapshot"
	tlsMountPath       = "/etc/etcd-snapshot/tls"
	snapshotFileName   = "snapshot.db"
	snapshotFilePath   = snapshotMountPath + "/" + snapshotFileName
	terminationLogPath = "/dev/termination-log"
	etcdctlPath        = "/usr/local/bin/etcdctl"
	driverBinaryPath   = "/etcd-snapshot-driver"

	// prepareContainer runs before the save on every attempt of the pod: it removes what a failed
	// attempt left on the volume (RunPrepareSave), so a retry needs room for one copy only.
	prepareContainer = "prepare"

	// jobBackoffLimit retries a failed save twice: a member restart or a broken stream is worth another
	// attempt, a persistent fault is not worth more. A file that verify rejects fails the Job at once
	// (jobFailurePolicy).
	jobBackoffLimit = 2
	// verifyRejectedExitCode is verify's exit code for a file that fails verification (RunVerify).
	verifyRejectedExitCode = 1
	// The deadline covers every attempt at a throughput far below a healthy cluster's: the budget
	// assumes jobSlowThroughput, a disk or network slower than any that etcd itself runs well on, for
	// each of the 1+jobBackoffLimit attempts, plus jobDeadlineBase once (scheduling, volume attach,
	// image pulls) and jobAttemptSeconds per attempt (the pod's start and the Job controller's backoff before a retry,
	// 10 s then 20 s). An 8 GiB database gets 3732 s; jobDeadlineMax bounds the arithmetic.
	jobDeadlineBase    = 300
	jobAttemptSeconds  = 120
	jobSlowThroughput  = 8 * mi
	jobDeadlineMax     = 24 * 3600
	jobDeadlineMinimum = 60

	// The verify container's memory: the Go runtime and the page bitmap (jobVerifyMemoryBase) plus
	// the live-key set, about 60 bytes a live key (verifyscan.go); a live key per KiB of database
	// (Kubernetes objects average a few KiB) makes a sixteenth of the database size. The file is
	// mapped, and its pages are page cache the kernel reclaims at the limit, not memory verify
	// holds. An 8 GiB database gets 768Mi.
	jobVerifyMemoryBase    = 256 * mi
	jobVerifyMemoryDivisor = 16
	jobVerifyMemoryMax     = 16 << 30
	jobVerifyMemoryMinimum = 64 * mi

	// nonRootUID is the conventional "nonroot" user of distroless images (the etcd image is one).
	nonRootUID = 65532
)

// jobDeadline returns activeDeadlineSeconds for a database of dbSize bytes.
func jobDeadline(dbSize int64) int64 {
	dbSize = min(max(dbSize, 0), maxSizedDB)
	attempt := jobAttemptSeconds + (dbSize+jobSlowThroughput-1)/jobSlowThroughput
	return min(jobDeadlineBase+(jobBackoffLimit+1)*attempt, jobDeadlineMax)
}

// verifyMemoryLimit returns the verify container's memory limit for a database of dbSize bytes,
// rounded up to a whole MiB.
func verifyMemoryLimit(dbSize int64) resource.Quantity {
	dbSize = min(max(dbSize, 0), maxSizedDB)
	want := min(jobVerifyMemoryBase+(dbSize+jobVerifyMemoryDivisor-1)/jobVerifyMemoryDivisor, jobVerifyMemoryMax)
	return *resource.NewQuantity((want+mi-1)/mi*mi, resource.BinarySI)
}

// newSnapshotJob builds the Job that saves a snapshot from endpoint and verifies it, its deadline
// and verify memory sized for dbSize unless the class parameters p set them. withTLS=false
// (plaintext, allowed by the class) drops the Secret volume and the TLS flags.
func (e *Engine) newSnapshotJob(rec *Record, endpoint string, withTLS bool, dbSize int64, p snapshotParams) *batchv1.Job {
	labels := objectLabels(rec.ID, rec.Cluster)
	saveArgs := []string{"snapshot", "save", snapshotFilePath, "--endpoints=" + endpoint}
	mounts := []corev1.VolumeMount{{Name: snapshotVolume, MountPath: snapshotMountPath}}
	volumes := []corev1.Volume{{Name: snapshotVolume, VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: snapshotPVCName(rec.ID)},
	}}}
	if withTLS {
		saveArgs = append(saveArgs,
			"--cacert="+tlsMountPath+"/"+secretKeyCA,
			"--cert="+tlsMountPath+"/"+secretKeyCert,
			"--key="+tlsMountPath+"/"+secretKeyKey)
		mounts = append(mounts, corev1.VolumeMount{Name: tlsVolume, MountPath: tlsMountPath, ReadOnly: true})
		volumes = append(volumes, corev1.Volume{Name: tlsVolume, VolumeSource: corev1.VolumeSource{
			// 0440 with fsGroup lets the non-root user read the key and nobody else.
			Secret: &corev1.SecretVolumeSource{SecretName: tlsSecretName(rec.ID), DefaultMode: ptr.To[int32](0o440)},
		}})
	}
	// No --command-timeout: for snapshot save it would cap the whole transfer; the Job deadline bounds it.
	saveArgs = append(saveArgs, "--dial-timeout=10s")

	prepare := snapshotContainer(prepareContainer, e.cfg.DriverImage, driverBinaryPath,
		[]string{"prepare-save", "-file=" + snapshotFilePath},
		[]corev1.VolumeMount{{Name: snapshotVolume, MountPath: snapshotMountPath}})
	save := snapshotContainer(saveContainer, e.cfg.EtcdImage, etcdctlPath, saveArgs, mounts)
	verify := snapshotContainer(verifyContainer, e.cfg.DriverImage, driverBinaryPath,
		[]string{"verify", "-file=" + snapshotFilePath, "-termination-log=" + terminationLogPath},
		[]corev1.VolumeMount{{Name: snapshotVolume, MountPath: snapshotMountPath, ReadOnly: true}})
	memory := verifyMemoryLimit(dbSize)
	if p.VerifyMemory != nil {
		memory = p.VerifyMemory.DeepCopy()
	}
	// Two CPUs let the sha256 pass and the page walk run at once; the request stays small.
	verify.Resources.Limits = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: memory}
	deadline := jobDeadline(dbSize)
	if p.JobDeadline > 0 {
		deadline = p.JobDeadline
	}

	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: snapshotJobName(rec.ID), Namespace: rec.Namespace, Labels: labels},
		Spec: batchv1.JobSpec{
			// With TLS the Job starts suspended: its Secret is created owned by the Job, so after it, and
			// the pod must not start before the Secret exists (provision resumes the Job).
			Suspend:               ptr.To(withTLS),
			BackoffLimit:          ptr.To[int32](jobBackoffLimit),
			ActiveDeadlineSeconds: ptr.To(deadline),
			PodFailurePolicy:      jobFailurePolicy(),
			// ttlSecondsAfterFinished stays unset: the Job is removed with the snapshot (Delete).
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					RestartPolicy:                corev1.RestartPolicyNever,
					AutomountServiceAccountToken: ptr.To(false),
					SecurityContext:              podSecurity(nonRootUID, nonRootUID, nonRootUID),
					InitContainers:               []corev1.Container{prepare, save},
					Containers:                   []corev1.Container{verify},
					Volumes:                      volumes,
				},
			},
		},
	}
}

// jobFailurePolicy fails the Job as soon as verify rejects the saved file. A retry would gain
// nothing: the file came complete from etcd (a broken stream fails the save, which is retried), so a
// member whose data is damaged sends it damaged again, and the record's error would become the
// retry's instead of verify's reason. Any other failed attempt is retried after the prepare container
// has removed what it left (RunPrepareSave).
func jobFailurePolicy() *batchv1.PodFailurePolicy {
	return &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{
		Action: batchv1.PodFailurePolicyActionFailJob,
		OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
			ContainerName: ptr.To(verifyContainer),
			Operator:      batchv1.PodFailurePolicyOnExitCodesOpIn,
			Values:        []int32{verifyRejectedExitCode},
		},
	}}}
}

// podSecurity is the pod security context of the driver's Jobs: the given user and groups, non-root
// unless uid is 0, and the runtime's default seccomp profile ("restricted" Pod Security Standard).
func podSecurity(uid, gid, fsGroup int64) *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(uid != 0),
		RunAsUser:      ptr.To(uid),
		RunAsGroup:     ptr.To(gid),
		FSGroup:        ptr.To(fsGroup),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func snapshotContainer(name, image, binary string, args []string, mounts []corev1.VolumeMount) corev1.Container {
	return corev1.Container{
		Name:            name,
		Image:           image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command:         []string{binary},
		Args:            args,
		VolumeMounts:    mounts,
		// The verify result (JSON) travels in the termination message; on a crash the log tail does.
		TerminationMessagePath:   terminationLogPath,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
			// The snapshot Job's verify container gets a limit scaled to the database (newSnapshotJob).
			Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("1Gi")},
		},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			RunAsNonRoot:             ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
}

// ensureJob creates the Job, or adopts the one an earlier attempt left, and returns it.
func (e *Engine) ensureJob(ctx context.Context, rec *Record, job *batchv1.Job) (*batchv1.Job, error) {
	client := e.cfg.Kube.BatchV1().Jobs(rec.Namespace)
	created, err := client.Create(ctx, job, metav1.CreateOptions{})
	if err == nil {
		return created, nil
	}
	var existing *batchv1.Job
	err = e.adoptOnExists(ctx, err, "Job", rec, snapshotJobName(rec.ID), func() (metav1.Object, error) {
		j, gerr := client.Get(ctx, snapshotJobName(rec.ID), metav1.GetOptions{})
		existing = j
		return j, gerr
	})
	return existing, err
}

// isSuspended reports whether job waits for resumeJob.
func isSuspended(job *batchv1.Job) bool { return ptr.Deref(job.Spec.Suspend, false) }

// resumeJob lets the Job of snapshot id start its pod, once the Secret the pod mounts exists.
func (e *Engine) resumeJob(ctx context.Context, ns, id string) error {
	_, err := e.cfg.Kube.BatchV1().Jobs(ns).Patch(ctx, snapshotJobName(id), types.MergePatchType, []byte(`{"spec":{"suspend":false}}`), metav1.PatchOptions{})
	if err == nil {
		glog.V(2).Infof("Resumed Job %s/%s", ns, id)
	}
	return kubeStatus(err, "resuming Job %s/%s", ns, id)
}
