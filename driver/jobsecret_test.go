package driver

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// refuseSecretReads makes kube answer Forbidden to every Secret verb that returns Secret contents, as
// the driver's RBAC does (manifests/rbac.yaml: Secrets create and delete only), and counts the tries.
func refuseSecretReads(kube *fake.Clientset) *atomic.Int32 {
	tries := &atomic.Int32{}
	forbid := func(a k8stesting.Action) error {
		tries.Add(1)
		return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "", fmt.Errorf("cannot %s resource secrets", a.GetVerb()))
	}
	kube.PrependReactor("*", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		switch a.GetVerb() {
		case "get", "list", "watch", "patch", "update":
			return true, nil, forbid(a)
		}
		return false, nil, nil
	})
	kube.PrependWatchReactor("secrets", func(a k8stesting.Action) (bool, watch.Interface, error) {
		return true, nil, forbid(a)
	})
	return tries
}

// With Secret reads, watches, patches and updates all refused, a snapshot still goes Created ->
// Running -> Ready -> Deleted, a Job failure still cleans up, and the Secret is created already owned
// by the Job, with the Job suspended until then.
func TestEngineNeverReadsSecrets(t *testing.T) {
	tc := startTestCluster(t, 3)
	kube := fake.NewClientset(etcdWorld(t, tc)...)
	tries := refuseSecretReads(kube)
	// Reactors are installed before the engine runs: adding one races with the engine's calls.
	rollback := groupRequest(tc, "groupsnapshot-no-secret-reads-rollback")
	failOnceNamed(kube, "patch", "jobs", snapshotID(rollback.Name, true), apierrors.NewServiceUnavailable("try later"))
	f := startFixtureEngine(t, kube)
	result := takeVerifiedSnapshot(t, tc)

	t.Run("create to ready, then delete", func(t *testing.T) {
		rec, err := f.engine.Create(f.ctx, groupRequest(tc, "groupsnapshot-no-secret-reads"))
		if err != nil || rec.Phase != PhaseRunning {
			t.Fatalf("Create = %+v, %v; want Running", rec, err)
		}
		job, err := f.admin.BatchV1().Jobs(fxNS).Get(f.ctx, rec.ID, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		secret, err := f.admin.CoreV1().Secrets(fxNS).Get(f.ctx, tlsSecretName(rec.ID), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if refs := secret.OwnerReferences; len(refs) != 1 || refs[0].UID != job.UID || refs[0].Kind != "Job" {
			t.Errorf("Secret ownerReferences %+v; want the Job %s", refs, job.UID)
		}
		if isSuspended(job) {
			t.Error("Job still suspended after Create")
		}
		var created *batchv1.Job
		for _, a := range f.kube.Actions() {
			if c, ok := a.(k8stesting.CreateAction); ok && a.GetResource().Resource == "jobs" {
				created = c.GetObject().(*batchv1.Job)
			}
		}
		if created == nil || !isSuspended(created) {
			t.Error("the Job was not created suspended")
		}

		f.finishJob(rec.ID, rec.ID+"-ok", succeededPod(t, result), batchv1.JobCondition{Type: batchv1.JobComplete})
		ready := f.waitRecord(rec.ID, func(r *Record) bool { return r.Phase != PhaseRunning })
		if ready.Phase != PhaseReady {
			t.Fatalf("record %+v; want Ready", ready)
		}
		if f.exists("Secret", fxNS, tlsSecretName(rec.ID)) {
			t.Error("the credentials Secret outlived Ready")
		}
		if err := f.engine.Delete(f.ctx, rec.ID); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		for kind, present := range f.objectsOf(rec.ID) {
			if present {
				t.Errorf("%s of deleted snapshot %s remains", kind, rec.ID)
			}
		}
	})

	t.Run("job failure cleans up", func(t *testing.T) {
		rec, err := f.engine.Create(f.ctx, groupRequest(tc, "groupsnapshot-no-secret-reads-fail"))
		if err != nil {
			t.Fatal(err)
		}
		pod := corev1.PodStatus{Phase: corev1.PodFailed, InitContainerStatuses: []corev1.ContainerStatus{{Name: saveContainer,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: "context deadline exceeded"}}}}}
		f.finishJob(rec.ID, rec.ID+"-bad", pod, batchv1.JobCondition{Type: batchv1.JobFailed, Reason: batchv1.JobReasonBackoffLimitExceeded})
		failed := f.waitRecord(rec.ID, func(r *Record) bool { return r.Phase == PhaseFailed && r.CleanedUp })
		if !strings.Contains(failed.Error, "context deadline exceeded") {
			t.Errorf("failure reason %q", failed.Error)
		}
		objs := f.objectsOf(rec.ID)
		if objs["Job"] || objs["Secret"] || objs["PersistentVolumeClaim"] || !objs["ConfigMap"] {
			t.Errorf("objects after failure: %v; want only the metadata left", objs)
		}
		if err := f.engine.Delete(f.ctx, rec.ID); err != nil || f.exists("ConfigMap", fxMetaNS, rec.ID) {
			t.Errorf("Delete of the Failed snapshot: %v", err)
		}
	})

	t.Run("failed create cleans up", func(t *testing.T) {
		if _, err := f.engine.Create(f.ctx, rollback); status.Code(err) != codes.Unavailable {
			t.Fatalf("Create with the resume refused = %v; want Unavailable", err)
		}
		for kind, present := range f.objectsOf(snapshotID(rollback.Name, true)) {
			if present {
				t.Errorf("%s left behind after the failed Create", kind)
			}
		}
	})

	if n := tries.Load(); n != 0 {
		t.Errorf("the engine tried %d Secret reads, watches, patches or updates; want none", n)
	}
	for _, a := range f.kube.Actions() {
		if a.GetResource().Resource == "secrets" && a.GetVerb() != "create" && a.GetVerb() != "delete" {
			t.Errorf("engine action %s secrets", a.GetVerb())
		}
	}
}

// A Create retried after an interrupted attempt (Pending record, suspended Job, a Secret with the
// credentials of then) adopts the Job and replaces the Secret, never reading it: deleted, created
// again owned by the Job with this request's credentials, then the Job is resumed. Until that retry
// the monitor leaves a Pending record's suspended Job alone.
func TestCreateReplacesSecretOfInterruptedAttempt(t *testing.T) {
	f, tc := startEngineWithEtcd(t)
	req := groupRequest(tc, "groupsnapshot-interrupted")
	// The driver process dies mid-provision: the record is still Pending, the Job suspended, and the
	// Secret holds the credentials of the earlier attempt.
	rec, pending, rv := f.interruptedCreate(req)
	f.storeRecord(pending, rv)
	job := f.suspendJob(rec.ID)
	secrets := f.admin.CoreV1().Secrets(fxNS)
	if err := secrets.Delete(f.ctx, tlsSecretName(rec.ID), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	stale := newTLSSecret(rec, Credentials{CA: []byte("old ca"), Cert: []byte("old cert"), Key: []byte("old key")})
	if _, err := secrets.Create(f.ctx, stale, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	f = startFixtureEngine(t, f.kube)
	before := len(f.writes())
	if err := f.engine.reconcile(f.ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	if w := f.writes()[before:]; len(w) != 0 {
		t.Errorf("the monitor wrote %v for a Pending record; want nothing until the retry", w)
	}
	if j, err := f.admin.BatchV1().Jobs(fxNS).Get(f.ctx, rec.ID, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	} else if !isSuspended(j) {
		t.Fatal("the monitor resumed the Job of a Pending record, whose Secret may not exist")
	}

	deletes, creates := f.countActions("delete", "secrets"), f.countActions("create", "secrets")
	again, err := f.engine.Create(f.ctx, req)
	if err != nil || again.Phase != PhaseRunning || again.ID != rec.ID {
		t.Fatalf("retried Create = %+v, %v; want Running %s", again, err, rec.ID)
	}
	if d, c := f.countActions("delete", "secrets")-deletes, f.countActions("create", "secrets")-creates; d != 1 || c != 2 {
		t.Errorf("retry: %d Secret deletes and %d creates; want 1 and 2 (create, AlreadyExists, delete, create)", d, c)
	}
	secret, err := secrets.Get(f.ctx, tlsSecretName(rec.ID), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(secret.Data[secretKeyCert]) != req.Secrets[secretKeyCert] || string(secret.Data[secretKeyKey]) != req.Secrets[secretKeyKey] {
		t.Error("the Secret still holds the interrupted attempt's credentials")
	}
	if refs := secret.OwnerReferences; len(refs) != 1 || refs[0].UID != job.UID {
		t.Errorf("Secret ownerReferences %+v; want the adopted Job %s", refs, job.UID)
	}
	resumed, err := f.admin.BatchV1().Jobs(fxNS).Get(f.ctx, rec.ID, metav1.GetOptions{})
	if err != nil || resumed.UID != job.UID || isSuspended(resumed) {
		t.Fatalf("Job after the retry: %+v, %v; want the same Job, resumed", resumed, err)
	}
}
