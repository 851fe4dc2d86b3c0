package driver

import (
	"context"

	"github.com/golang/glog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// Pod layout of the snapshot Job (CONTRACTS.md; the rig's kubelet stand-in relies on it).
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

	// jobBackoffLimit retries a failed save or verify twice: a member restart or a torn read is worth
	// another attempt, a persistent fault is not worth more.
	jobBackoffLimit = 2
	// Deadline budget: a base for scheduling, volume attach and image pull, plus time per 256 MiB of
	// database. 120 s per 256 MiB is ~2 MiB/s for save and verify together, so an 8 GiB database gets
	// 69 minutes, enough for all three attempts on a slow but healthy cluster.
	jobDeadlineBase    = 300
	jobDeadlinePerUnit = 120
	jobDeadlineUnit    = 256 * mi

	// nonRootUID is the conventional "nonroot" user of distroless images (the etcd image is one).
	nonRootUID = 65532
)

// jobDeadline returns activeDeadlineSeconds for a database of dbSize bytes.
func jobDeadline(dbSize int64) int64 {
	dbSize = min(max(dbSize, 0), maxSizedDB)
	units := (dbSize + jobDeadlineUnit - 1) / jobDeadlineUnit
	return jobDeadlineBase + jobDeadlinePerUnit*units
}

// tlsSecretName is the name of the Secret holding the Job's etcd client credentials.
func tlsSecretName(id string) string { return id + "-tls" }

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

// newSnapshotJob builds the Job that saves a snapshot from endpoint and verifies it. withTLS=false
// (plaintext, allowed by the class) drops the Secret volume and the TLS flags.
func (e *Engine) newSnapshotJob(rec *Record, endpoint string, withTLS bool, dbSize int64) *batchv1.Job {
	labels := objectLabels(rec.ID, rec.Cluster)
	saveArgs := []string{"snapshot", "save", snapshotFilePath, "--endpoints=" + endpoint}
	mounts := []corev1.VolumeMount{{Name: snapshotVolume, MountPath: snapshotMountPath}}
	volumes := []corev1.Volume{{Name: snapshotVolume, VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: rec.ID},
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

	save := snapshotContainer(saveContainer, e.cfg.EtcdImage, etcdctlPath, saveArgs, mounts)
	verify := snapshotContainer(verifyContainer, e.cfg.DriverImage, driverBinaryPath,
		[]string{"verify", "-file=" + snapshotFilePath, "-termination-log=" + terminationLogPath},
		[]corev1.VolumeMount{{Name: snapshotVolume, MountPath: snapshotMountPath, ReadOnly: true}})

	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: rec.ID, Namespace: rec.Namespace, Labels: labels},
		Spec: batchv1.JobSpec{
			// With TLS the Job starts suspended: its Secret is created owned by the Job, so after it, and
			// the pod must not start before the Secret exists (provision resumes the Job).
			Suspend:               ptr.To(withTLS),
			BackoffLimit:          ptr.To[int32](jobBackoffLimit),
			ActiveDeadlineSeconds: ptr.To(jobDeadline(dbSize)),
			// ttlSecondsAfterFinished stays unset: the Job is removed with the snapshot (Delete).
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					RestartPolicy:                corev1.RestartPolicyNever,
					AutomountServiceAccountToken: ptr.To(false),
					SecurityContext:              podSecurity(nonRootUID, nonRootUID, nonRootUID),
					InitContainers:               []corev1.Container{save},
					Containers:                   []corev1.Container{verify},
					Volumes:                      volumes,
				},
			},
		},
	}
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
			// bbolt maps the whole file; its pages are reclaimable page cache, so 1Gi suffices for large dbs.
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
	err = e.adoptOnExists(ctx, err, "Job", rec, rec.ID, func() (metav1.Object, error) {
		j, gerr := client.Get(ctx, rec.ID, metav1.GetOptions{})
		existing = j
		return j, gerr
	})
	return existing, err
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

// isSuspended reports whether job waits for resumeJob.
func isSuspended(job *batchv1.Job) bool { return ptr.Deref(job.Spec.Suspend, false) }

// resumeJob lets the Job of snapshot id start its pod, once the Secret the pod mounts exists.
func (e *Engine) resumeJob(ctx context.Context, ns, id string) error {
	_, err := e.cfg.Kube.BatchV1().Jobs(ns).Patch(ctx, id, types.MergePatchType, []byte(`{"spec":{"suspend":false}}`), metav1.PatchOptions{})
	if err == nil {
		glog.V(2).Infof("Resumed Job %s/%s", ns, id)
	}
	return kubeStatus(err, "resuming Job %s/%s", ns, id)
}
