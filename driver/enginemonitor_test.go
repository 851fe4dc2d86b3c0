package driver

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

// takeVerifiedSnapshot saves a real snapshot of tc the way etcdctl does and verifies it with the
// driver's own verify code: the result the Job's verify container would report.
func takeVerifiedSnapshot(t *testing.T, tc *testCluster) *VerifyResult {
	t.Helper()
	tc.Put(t, 25, "monitor/")
	path := filepath.Join(t.TempDir(), "snapshot.db")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := clientv3.Config{Endpoints: tc.ClientURLs[:1], TLS: tc.tlsConfig(t), DialTimeout: 5 * time.Second, Logger: zap.NewNop()}
	// Put returns once the member that served it applied the writes; member 0 may be a follower
	// that has not applied them yet, and a snapshot saves what it has applied. A linearizable read
	// served by member 0 waits until it has applied everything committed so far.
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cli.Get(ctx, "monitor/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	cli.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.SaveWithVersion(ctx, zap.NewNop(), cfg, path); err != nil {
		t.Fatal(err)
	}
	res, err := VerifySnapshot(path)
	if err != nil {
		t.Fatal(err)
	}
	if res.Keys < 25 || res.Revision < 25 {
		t.Fatalf("verify result %+v does not reflect the 25 keys written", res)
	}
	return res
}

// succeededPod is the status of a pod whose save and verify containers succeeded, the verify result
// JSON in the verify container's termination message.
func succeededPod(t *testing.T, res *VerifyResult) corev1.PodStatus {
	t.Helper()
	msg, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	return corev1.PodStatus{
		Phase: corev1.PodSucceeded,
		InitContainerStatuses: []corev1.ContainerStatus{{Name: saveContainer, State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", Message: "Snapshot saved at /var/lib/etcd-snapshot/snapshot.db"}}}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: verifyContainer, State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", Message: string(msg)}}}},
	}
}

// A Job that completes, with the verify result in the pod status, makes the record Ready with the
// verified values; the credentials Secret goes, the Job and PVC stay; Create then answers Ready.
func TestJobCompleteMakesReady(t *testing.T) {
	f, tc := startEngineWithEtcd(t)
	req := groupRequest(tc, "groupsnapshot-ready")
	rec := f.create(req)
	result := takeVerifiedSnapshot(t, tc)
	successes := testutil.ToFloat64(snapshotOperations.WithLabelValues("create", "success"))

	f.finishJob(rec.ID, rec.ID+"-abcde", succeededPod(t, result), batchv1.JobCondition{Type: batchv1.JobComplete})
	ready := f.waitRecord(rec.ID, func(r *Record) bool { return r.Phase != PhaseRunning })
	if ready.Phase != PhaseReady {
		t.Fatalf("record %+v; want Ready", ready)
	}
	if ready.SizeBytes != result.Size || ready.SHA256 != result.SHA256 || ready.Revision != result.Revision ||
		ready.Keys != result.Keys || ready.TotalKeys != result.TotalKeys || ready.Hash != result.Hash || ready.HashChecked != result.HashChecked {
		t.Errorf("record %+v does not carry the verify result %+v", ready, result)
	}
	if ready.ReadyAt == nil || ready.ReadyAt.Before(ready.CreatedAt) || ready.SourceMember == nil || ready.SourceMember.Name == "" {
		t.Errorf("ReadyAt %v, CreatedAt %v, source member %+v", ready.ReadyAt, ready.CreatedAt, ready.SourceMember)
	}
	createSuccesses := func() float64 { return testutil.ToFloat64(snapshotOperations.WithLabelValues("create", "success")) }
	if got := waitCounter(t, createSuccesses, successes, 1); got != successes+1 {
		t.Errorf("snapshot_operations_total{create,success} went from %v to %v; want +1", successes, got)
	}
	objs := f.objectsOf(rec.ID)
	if objs["Secret"] || !objs["Job"] || !objs["PersistentVolumeClaim"] || !objs["ConfigMap"] {
		t.Errorf("objects after Ready: %v; want the Secret gone and the rest kept", objs)
	}
	again, err := f.engine.Create(f.ctx, req)
	if err != nil || !again.ReadyToUse() || again.SHA256 != result.SHA256 {
		t.Fatalf("Create after Ready = %+v, %v", again, err)
	}
	got, err := f.engine.Get(f.ctx, rec.ID)
	if err != nil || got.Phase != PhaseReady {
		t.Fatalf("Get after Ready = %+v, %v", got, err)
	}
}

// A Job whose pods fail makes the record Failed with the failing container's termination message;
// the Job, Secret and PVC are deleted; Create answers with a final error carrying that reason.
func TestJobFailureMarksFailedAndCleansUp(t *testing.T) {
	f, tc := startEngineWithEtcd(t)
	req := groupRequest(tc, "groupsnapshot-fail")
	rec := f.create(req)
	const etcdctlErr = "Error: rpc error: code = Unavailable desc = connection error: dial tcp 127.0.0.1:1: connect: connection refused"
	pod := corev1.PodStatus{
		Phase: corev1.PodFailed,
		InitContainerStatuses: []corev1.ContainerStatus{{Name: saveContainer, State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: 5, Reason: "Error", Message: etcdctlErr}}}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: verifyContainer, State: corev1.ContainerState{
			Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}},
	}
	failures := testutil.ToFloat64(snapshotOperations.WithLabelValues("create", "failure"))
	f.finishJob(rec.ID, rec.ID+"-zzzzz", pod, batchv1.JobCondition{
		Type: batchv1.JobFailed, Reason: batchv1.JobReasonBackoffLimitExceeded, Message: "Job has reached the specified backoff limit"})

	failed := f.waitRecord(rec.ID, func(r *Record) bool { return r.Phase == PhaseFailed && r.CleanedUp })
	if !hasAll(failed.Error, etcdctlErr, `"save"`, "code 5") || failed.ErrorCode != codes.Internal.String() {
		t.Errorf("failure reason %q (%s); want the save container's message", failed.Error, failed.ErrorCode)
	}
	objs := f.objectsOf(rec.ID)
	if objs["Job"] || objs["Secret"] || objs["PersistentVolumeClaim"] || !objs["ConfigMap"] {
		t.Errorf("objects after failure: %v; want only the metadata left", objs)
	}
	if got := testutil.ToFloat64(snapshotOperations.WithLabelValues("create", "failure")); got != failures+1 {
		t.Errorf("snapshot_operations_total{create,failure} went from %v to %v; want +1", failures, got)
	}
	_, err := f.engine.Create(f.ctx, req)
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), etcdctlErr) {
		t.Fatalf("Create after failure = %v; want a final Internal error with the reason", err)
	}
	if n := f.countActions("create", "jobs"); n != 1 {
		t.Errorf("%d Job creates; a Failed snapshot must not be retried by Create", n)
	}
	if err := f.engine.Delete(f.ctx, rec.ID); err != nil || f.exists("ConfigMap", fxMetaNS, rec.ID) {
		t.Errorf("Delete of a Failed snapshot: %v", err)
	}
}

// suspendJob puts the Job of id back in the state provision leaves it in before resuming it:
// spec.suspend=true and the Suspended condition the Job controller sets.
func (f *fixture) suspendJob(id string) *batchv1.Job {
	f.t.Helper()
	jobs := f.admin.BatchV1().Jobs(fxNS)
	job, err := jobs.Get(f.ctx, id, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	job.Spec.Suspend = ptr.To(true)
	if job, err = jobs.Update(f.ctx, job, metav1.UpdateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	job.Status.Conditions = append(job.Status.Conditions, batchv1.JobCondition{
		Type: batchv1.JobSuspended, Status: corev1.ConditionTrue, Reason: "JobSuspended", Message: "Job suspended"})
	if job, err = jobs.UpdateStatus(f.ctx, job, metav1.UpdateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	return job
}

// waitJob waits until the Job of id satisfies ok and returns it.
func (f *fixture) waitJob(id string, ok func(*batchv1.Job) bool) *batchv1.Job {
	f.t.Helper()
	var job *batchv1.Job
	err := wait.PollUntilContextTimeout(f.ctx, 20*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		var err error
		job, err = f.admin.BatchV1().Jobs(fxNS).Get(ctx, id, metav1.GetOptions{})
		return err == nil && ok(job), err
	})
	if err != nil {
		if job == nil {
			f.t.Fatalf("Job %s: %v", id, err)
		}
		f.t.Fatalf("Job %s never reached the expected state (%v); last: suspended=%t conditions %+v", id, err, isSuspended(job), job.Status.Conditions)
	}
	return job
}

// A suspended Job is not a failed one: jobOutcome reads it as running, pods it removed or not.
func TestSuspendedJobIsRunning(t *testing.T) {
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "etcds-x", Namespace: fxNS},
		Spec:       batchv1.JobSpec{Suspend: ptr.To(true), BackoffLimit: ptr.To[int32](jobBackoffLimit)},
		Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{{
			Type: batchv1.JobSuspended, Status: corev1.ConditionTrue, Reason: "JobSuspended", Message: "Job suspended"}}},
	}
	// A pod the Job controller terminated on suspension: failed, yet not counted in status.failed.
	terminated := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "etcds-x-1", Namespace: fxNS}, Status: corev1.PodStatus{
		Phase: corev1.PodFailed, InitContainerStatuses: []corev1.ContainerStatus{{Name: saveContainer, State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "Error"}}}}}}
	for name, pods := range map[string][]*corev1.Pod{"no pods": nil, "pod terminated by the suspension": {terminated}} {
		if out := jobOutcome(job, pods); out.state != jobRunning {
			t.Errorf("%s: suspended Job read as %+v; want running", name, out)
		}
	}
}

// A driver restart after the record turned Running but before the Job was resumed: the new engine
// resumes the suspended Job (retrying when the first resume fails, never marking the snapshot
// failed), re-creates a lost Secret from the fallback credentials, and the snapshot goes Ready.
// No Secret is read on the way (enforceDriverRBAC).
func TestRestartResumesSuspendedJob(t *testing.T) {
	tc := startTestCluster(t, 3)
	fallbackKP, err := tc.CA.Issue("fallback-client")
	if err != nil {
		t.Fatal(err)
	}
	fallback := &Credentials{CA: tc.CA.CertPEM(), Cert: fallbackKP.CertPEM, Key: fallbackKP.KeyPEM}
	result := takeVerifiedSnapshot(t, tc)
	cases := []struct {
		name         string
		fallback     *Credentials
		loseSecret   bool
		failResume   bool
		secretWrites int // Secret creates by the engine across both processes
	}{
		{name: "Secret kept, first resume refused", failResume: true, secretWrites: 1},
		{name: "Secret lost, fallback credentials", fallback: fallback, loseSecret: true, secretWrites: 2},
		{name: "Secret kept, fallback credentials", fallback: fallback, secretWrites: 2},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			kube := newFakeAPI(t, etcdWorld(t, tc)...)
			req := groupRequest(tc, fmt.Sprintf("groupsnapshot-suspended-%d", i))
			// Armed once the first engine has stopped: then the first Job patch fails. (Reactors are
			// installed before any engine runs: adding one races with the engine's calls.)
			var armed atomic.Bool
			kube.PrependReactor("patch", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
				if armed.CompareAndSwap(true, false) {
					return true, nil, apierrors.NewServiceUnavailable("try later")
				}
				return false, nil, nil
			})
			f := startFixtureEngine(t, kube)
			rec := f.create(req)
			f.stop()
			job := f.suspendJob(rec.ID)
			if c.loseSecret {
				if err := f.admin.CoreV1().Secrets(fxNS).Delete(f.ctx, tlsSecretName(rec.ID), metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			armed.Store(c.failResume)
			patches := f.countActions("patch", "jobs")

			f = startFixtureEngineWith(t, f.kube, func(cfg *EngineConfig) { cfg.FallbackCreds = c.fallback })
			resumed := f.waitJob(rec.ID, func(j *batchv1.Job) bool { return !isSuspended(j) })
			if resumed.UID != job.UID {
				t.Fatalf("Job %s was replaced, not resumed", rec.ID)
			}
			wantPatches := 1
			if c.failResume {
				wantPatches = 2
			}
			if n := f.countActions("patch", "jobs") - patches; n != wantPatches {
				t.Errorf("%d Job patches after the restart; want %d", n, wantPatches)
			}
			if got, err := f.engine.meta.getLive(f.ctx, rec.ID); err != nil || got.Phase != PhaseRunning {
				t.Fatalf("record after the resume: %+v, %v; want Running", got, err)
			}
			secret, err := f.admin.CoreV1().Secrets(fxNS).Get(f.ctx, tlsSecretName(rec.ID), metav1.GetOptions{})
			if err != nil {
				t.Fatalf("no credentials Secret after the resume: %v", err)
			}
			if refs := secret.OwnerReferences; len(refs) != 1 || refs[0].UID != job.UID {
				t.Errorf("Secret ownerReferences %+v; want the Job %s", refs, job.UID)
			}
			wantCert := req.Secrets[secretKeyCert]
			if c.loseSecret {
				wantCert = string(fallback.Cert)
			}
			if string(secret.Data[secretKeyCert]) != wantCert {
				t.Error("the Secret does not hold the expected credentials (a kept Secret must not be replaced)")
			}
			if n := f.countActions("create", "secrets"); n != c.secretWrites {
				t.Errorf("%d Secret creates; want %d", n, c.secretWrites)
			}
			if n := f.countActions("delete", "secrets"); n != 0 {
				t.Errorf("%d Secret deletes while resuming; want none", n)
			}

			f.finishJob(rec.ID, rec.ID+"-r1", succeededPod(t, result), batchv1.JobCondition{Type: batchv1.JobComplete})
			ready := f.waitRecord(rec.ID, func(r *Record) bool { return r.Phase != PhaseRunning })
			if ready.Phase != PhaseReady || ready.SHA256 != result.SHA256 {
				t.Fatalf("record %+v; want Ready with the verify result", ready)
			}
			if n := f.countActions("create", "jobs"); n != 1 {
				t.Errorf("%d Job creates across the restart; want 1", n)
			}
		})
	}
}

// A group record turning Ready calls OnGroupReady once, with its id and ready time, so the driver
// can tell the csi-snapshotter at once instead of waiting for its next backed-off call.
func TestGroupReadyCallsOnGroupReady(t *testing.T) {
	tc := startTestCluster(t, 3)
	kube := newFakeAPI(t, etcdWorld(t, tc)...)
	type call struct {
		id      string
		readyAt time.Time
	}
	calls := make(chan call, 4)
	f := startFixtureEngineWith(t, kube, func(c *EngineConfig) {
		c.OnGroupReady = func(_ context.Context, id string, readyAt time.Time) { calls <- call{id, readyAt} }
	})
	rec, err := f.engine.Create(f.ctx, groupRequest(tc, "groupsnapshot-wake"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-calls:
		t.Fatalf("OnGroupReady(%s) before the Job finished", c.id)
	default:
	}
	f.finishJob(rec.ID, rec.ID+"-abcde", succeededPod(t, takeVerifiedSnapshot(t, tc)), batchv1.JobCondition{Type: batchv1.JobComplete})
	ready := f.waitRecord(rec.ID, func(r *Record) bool { return r.Phase != PhaseRunning })
	if ready.Phase != PhaseReady || ready.ReadyAt == nil {
		t.Fatalf("record %+v; want Ready", ready)
	}
	select {
	case c := <-calls:
		if c.id != rec.ID || !c.readyAt.Equal(*ready.ReadyAt) {
			t.Errorf("OnGroupReady(%s, %v); want (%s, %v)", c.id, c.readyAt, rec.ID, *ready.ReadyAt)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("OnGroupReady not called after the record turned Ready")
	}
	// Events after Ready (a resync, the CO's next Create) must not call it again.
	if _, err := f.engine.Create(f.ctx, groupRequest(tc, "groupsnapshot-wake")); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-calls:
		t.Errorf("OnGroupReady(%s) called a second time", c.id)
	case <-time.After(500 * time.Millisecond):
	}
}
