package driver

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
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
	tc := startTestCluster(t, 3)
	f := newEngineFixture(t, etcdWorld(t, tc)...)
	req := groupRequest(tc, "groupsnapshot-ready")
	rec, err := f.engine.Create(f.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	result := takeVerifiedSnapshot(t, tc)
	successes := testutil.ToFloat64(snapshotOperations.WithLabelValues("create", "success"))

	f.finishJob(rec, rec.ID+"-abcde", succeededPod(t, result), batchv1.JobCondition{Type: batchv1.JobComplete})
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
	if got := testutil.ToFloat64(snapshotOperations.WithLabelValues("create", "success")); got != successes+1 {
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
	tc := startTestCluster(t, 3)
	f := newEngineFixture(t, etcdWorld(t, tc)...)
	req := groupRequest(tc, "groupsnapshot-fail")
	rec, err := f.engine.Create(f.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	const etcdctlErr = "Error: rpc error: code = Unavailable desc = connection error: dial tcp 127.0.0.1:1: connect: connection refused"
	pod := corev1.PodStatus{
		Phase: corev1.PodFailed,
		InitContainerStatuses: []corev1.ContainerStatus{{Name: saveContainer, State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: 5, Reason: "Error", Message: etcdctlErr}}}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: verifyContainer, State: corev1.ContainerState{
			Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}},
	}
	failures := testutil.ToFloat64(snapshotOperations.WithLabelValues("create", "failure"))
	f.finishJob(rec, rec.ID+"-zzzzz", pod, batchv1.JobCondition{
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
	_, err = f.engine.Create(f.ctx, req)
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
