package driver

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestNewEngineRequiresConfig(t *testing.T) {
	_, err := NewEngine(EngineConfig{})
	if err == nil {
		t.Fatal("NewEngine accepted an empty config")
	}
	for _, want := range []string{"Kube", "MetadataNamespace", "ClusterLabel", "EtcdImage", "DriverImage"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

// Create twice with one name: the same record and exactly one Job, Secret and PVC; the objects carry
// the contract's labels; the Secret is owned by the Job; the record holds the cluster's members.
func TestCreateIdempotent(t *testing.T) {
	tc := startTestCluster(t, 3)
	f := newEngineFixture(t, etcdWorld(t, tc)...)
	req := groupRequest(tc, "groupsnapshot-1")

	first, err := f.engine.Create(f.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	// A retry as the sidecar sends it: same name, sources in another order, other credentials content.
	retry := req
	retry.SourceVolumeIDs = []string{req.SourceVolumeIDs[2], req.SourceVolumeIDs[0], req.SourceVolumeIDs[1]}
	second, err := f.engine.Create(f.ctx, retry)
	if err != nil {
		t.Fatal(err)
	}
	if first.ID != second.ID || first.Phase != PhaseRunning || second.Phase != PhaseRunning || !first.CreatedAt.Equal(second.CreatedAt) {
		t.Fatalf("records differ or are not Running:\n%+v\n%+v", first, second)
	}
	if n := f.countActions("create", "jobs"); n != 1 {
		t.Fatalf("%d Job creates; want exactly 1", n)
	}
	for _, res := range []string{"secrets", "persistentvolumeclaims", "configmaps"} {
		if n := f.countActions("create", res); n != 1 {
			t.Errorf("%d %s creates; want 1", n, res)
		}
	}

	id := first.ID
	if !groupIDPattern.MatchString(id) || len(validation.IsDNS1123Label(id)) > 0 {
		t.Errorf("id %q is not a group id and DNS label", id)
	}
	if len(first.Sources) != 3 {
		t.Fatalf("sources = %+v", first.Sources)
	}
	for _, s := range first.Sources {
		if !IsMemberSnapshotID(s.SnapshotID) || GroupIDOfMember(s.SnapshotID) != id || len(s.SnapshotID) > 128 {
			t.Errorf("member snapshot id %q of %s is not a member of %s", s.SnapshotID, s.VolumeID, id)
		}
		if !strings.HasPrefix(s.PVC, "data-main-") {
			t.Errorf("source %s resolved to PVC %q", s.VolumeID, s.PVC)
		}
	}
	if len(first.Members) != 3 || first.SourceMember == nil || !first.SourceMember.Leader || first.SourceMember.DBSize <= 0 {
		t.Fatalf("members %+v, source member %+v", first.Members, first.SourceMember)
	}
	for _, m := range first.Members {
		if len(m.PeerURLs) == 0 || len(m.ClientURLs) == 0 || m.Name == "" {
			t.Errorf("member %+v lacks name or URLs", m)
		}
	}

	want := objectLabels(id, fxCluster)
	job, err := f.admin.BatchV1().Jobs(fxNS).Get(f.ctx, id, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := f.admin.CoreV1().Secrets(fxNS).Get(f.ctx, tlsSecretName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pvc, err := f.admin.CoreV1().PersistentVolumeClaims(fxNS).Get(f.ctx, id, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm, err := f.admin.CoreV1().ConfigMaps(fxMetaNS).Get(f.ctx, id, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []metav1.Object{job, secret, pvc, cm} {
		for k, v := range want {
			if o.GetLabels()[k] != v {
				t.Errorf("%s: label %s=%q; want %q", o.GetName(), k, o.GetLabels()[k], v)
			}
		}
	}
	if cm.Labels[labelNamespace] != fxNS || cm.Data[recordKey] == "" {
		t.Errorf("metadata ConfigMap labels %v, data keys %v", cm.Labels, cm.Data)
	}
	if string(secret.Data[secretKeyKey]) != req.Secrets[secretKeyKey] || string(secret.Data[secretKeyCA]) != req.Secrets[secretKeyCA] {
		t.Error("Secret does not carry the request's credentials")
	}
	if refs := secret.OwnerReferences; len(refs) != 1 || refs[0].Kind != "Job" || refs[0].Name != id ||
		refs[0].Controller == nil || *refs[0].Controller || refs[0].BlockOwnerDeletion == nil || *refs[0].BlockOwnerDeletion {
		t.Errorf("Secret ownerReferences = %+v; want the Job, controller=false, blockOwnerDeletion=false", refs)
	}
	if refs := secret.OwnerReferences; len(refs) != 1 || refs[0].UID != job.UID || refs[0].APIVersion != "batch/v1" {
		t.Errorf("Secret ownerReferences = %+v; want batch/v1 Job uid %s", refs, job.UID)
	}
	if isSuspended(job) {
		t.Error("the Job is still suspended after Create returned Running")
	}
	// The Secret is created owned by the suspended Job, which is resumed after: no Secret is ever
	// patched or read.
	order := f.writes()
	jobCreate, secretCreate, resume := slices.Index(order, "create jobs"), slices.Index(order, "create secrets"), slices.Index(order, "patch jobs")
	if jobCreate < 0 || secretCreate < jobCreate || resume < secretCreate || slices.Contains(order, "patch secrets") {
		t.Errorf("writes %v; want create jobs, then create secrets, then patch jobs, and no Secret patch", order)
	}
	if got := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; got.Cmp(defaultSnapshotMinSize) != 0 || pvc.Spec.StorageClassName != nil {
		t.Errorf("PVC size %s class %v; want 1Gi (small db) and the default class", got.String(), pvc.Spec.StorageClassName)
	}
	if got := job.Spec.Template.Spec.InitContainers[0].Args[3]; got != "--endpoints="+first.SourceMember.Endpoint || !strings.HasPrefix(got, "--endpoints=https://127.0.0.1:") {
		t.Errorf("save endpoint arg %q; want the chosen member %s", got, first.SourceMember.Endpoint)
	}
}

// The same name with other sources, or other parameters, is AlreadyExists naming the name.
func TestCreateSameNameOtherRequest(t *testing.T) {
	tc := startTestCluster(t, 3)
	f := newEngineFixture(t, etcdWorld(t, tc)...)
	req := groupRequest(tc, "groupsnapshot-2")
	if _, err := f.engine.Create(f.ctx, req); err != nil {
		t.Fatal(err)
	}
	fewer := req
	fewer.SourceVolumeIDs = req.SourceVolumeIDs[:2]
	params := req
	params.Parameters = map[string]string{paramSnapshotMinSize: "2Gi"}
	for name, r := range map[string]SnapshotRequest{"other sources": fewer, "other parameters": params} {
		_, err := f.engine.Create(f.ctx, r)
		if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), `"groupsnapshot-2"`) {
			t.Errorf("%s: error = %v; want AlreadyExists naming the name", name, err)
		}
	}
	// Parameters the sidecar adds itself do not change the identity.
	meta := req
	meta.Parameters = map[string]string{"csi.storage.k8s.io/volumegroupsnapshot/name": "vgs"}
	if _, err := f.engine.Create(f.ctx, meta); err != nil {
		t.Errorf("sidecar metadata parameters broke idempotency: %v", err)
	}
	if n := f.countActions("create", "jobs"); n != 1 {
		t.Errorf("%d Job creates; want 1", n)
	}
}

// Two of three members stopped: FailedPrecondition from the health check, and not a single object
// written to Kubernetes.
func TestCreateUnhealthyClusterCreatesNothing(t *testing.T) {
	tc := startTestCluster(t, 3)
	f := newEngineFixture(t, etcdWorld(t, tc)...)
	tc.Stop(1)
	tc.Stop(2)
	_, err := f.engine.Create(f.ctx, groupRequest(tc, "groupsnapshot-unhealthy"))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(strings.ToLower(err.Error()), "quorum") {
		t.Fatalf("error = %v; want FailedPrecondition about quorum", err)
	}
	if w := f.writes(); len(w) != 0 {
		t.Fatalf("unhealthy cluster, yet the engine wrote %v", w)
	}
	if got := testutil.ToFloat64(clusterQuorum.WithLabelValues(fxNS, fxCluster)); got != 0 {
		t.Errorf("cluster_quorum = %v; want 0", got)
	}
}

// A refused object (quota on the PVC, an API error on the Job, ...) rolls back everything the call
// created, including the metadata, and a later Create succeeds from scratch.
func TestCreateFailureCleansUp(t *testing.T) {
	tc := startTestCluster(t, 3)
	cases := []struct {
		name     string
		verb     string
		resource string
		err      error
		code     codes.Code
	}{
		{"quota on the snapshot PVC", "create", "persistentvolumeclaims",
			apierrors.NewForbidden(schema.GroupResource{Resource: "persistentvolumeclaims"}, "x", errors.New("exceeded quota: storage, requested: requests.storage=1Gi, used: requests.storage=10Gi, limited: requests.storage=10Gi")),
			codes.ResourceExhausted},
		{"RBAC refuses the Secret", "create", "secrets",
			apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "x", errors.New("cannot create resource")), codes.PermissionDenied},
		{"API server error on the Job", "create", "jobs", apierrors.NewInternalError(errors.New("etcdserver: leader changed")), codes.Unavailable},
		{"resuming the Job fails", "patch", "jobs", apierrors.NewServiceUnavailable("try later"), codes.Unavailable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newEngineFixture(t, etcdWorld(t, tc)...)
			failOnce(f.kube, c.verb, c.resource, c.err)
			req := groupRequest(tc, "groupsnapshot-"+strings.ReplaceAll(c.name, " ", "-"))
			id := snapshotID(req.Name, true)
			_, err := f.engine.Create(f.ctx, req)
			if status.Code(err) != c.code {
				t.Fatalf("error = %v; want %v", err, c.code)
			}
			for kind, present := range f.objectsOf(id) {
				if present {
					t.Errorf("%s of %s left behind after a failed Create", kind, id)
				}
			}
			rec, err := f.engine.Create(f.ctx, req)
			if err != nil || rec.Phase != PhaseRunning {
				t.Fatalf("retry after the failure: %+v, %v", rec, err)
			}
		})
	}
}

// Delete removes this snapshot's Job (background propagation), Secret, PVC and metadata, and nothing
// of another snapshot, not even an object that took one of its names.
func TestDeleteOnlyThisSnapshot(t *testing.T) {
	tc := startTestCluster(t, 3)
	f := newEngineFixture(t, etcdWorld(t, tc)...)
	a, err := f.engine.Create(f.ctx, groupRequest(tc, "groupsnapshot-a"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.engine.Create(f.ctx, groupRequest(tc, "groupsnapshot-b"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := f.engine.Create(f.ctx, SnapshotRequest{Name: "single-c", SourceVolumeIDs: []string{fxNS + "/data-main-0"}, Secrets: secretsOf(tc)})
	if err != nil {
		t.Fatal(err)
	}
	if !singleIDPattern.MatchString(c.ID) || len(c.Sources) != 1 || c.Sources[0].SnapshotID != c.ID {
		t.Fatalf("single snapshot record %+v", c)
	}
	// Somebody replaces c's PVC with an unrelated one of the same name.
	if err := f.admin.CoreV1().PersistentVolumeClaims(fxNS).Delete(f.ctx, c.ID, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	foreign := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: c.ID, Namespace: fxNS, Labels: map[string]string{labelSnapshotID: "someone-else"}}}
	if _, err := f.admin.CoreV1().PersistentVolumeClaims(fxNS).Create(f.ctx, foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	if err := f.engine.Delete(f.ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	for kind, present := range f.objectsOf(a.ID) {
		if present {
			t.Errorf("%s of deleted snapshot %s remains", kind, a.ID)
		}
	}
	for kind, present := range f.objectsOf(b.ID) {
		if !present {
			t.Errorf("%s of snapshot %s was deleted along with %s", kind, b.ID, a.ID)
		}
	}
	background := false
	for _, act := range f.kube.Actions() {
		if d, ok := act.(k8stesting.DeleteAction); ok && d.GetResource().Resource == "jobs" && d.GetName() == a.ID {
			p := d.GetDeleteOptions().PropagationPolicy
			background = p != nil && *p == metav1.DeletePropagationBackground
		}
	}
	if !background {
		t.Error("the Job was not deleted with propagation Background")
	}

	if err := f.engine.Delete(f.ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if !f.exists("PersistentVolumeClaim", fxNS, c.ID) {
		t.Error("Delete removed a PVC that is not part of the snapshot")
	}
	if f.exists("Job", fxNS, c.ID) || f.exists("ConfigMap", fxMetaNS, c.ID) {
		t.Error("Delete left the single snapshot's Job or metadata")
	}

	// Unknown ids and repeats are already deleted; a group member is not deletable alone.
	for _, id := range []string{a.ID, "etcdgs-00000000000000000000000000000000", "not-ours"} {
		if err := f.engine.Delete(f.ctx, id); err != nil {
			t.Errorf("Delete(%q) = %v; want nil", id, err)
		}
	}
	if err := f.engine.Delete(f.ctx, b.Sources[0].SnapshotID); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Delete(member id) = %v; want InvalidArgument", err)
	}
	if _, err := f.engine.Get(f.ctx, a.ID); status.Code(err) != codes.NotFound {
		t.Errorf("Get(deleted) = %v; want NotFound", err)
	}
}

// A Running record is found again after a restart; a new engine on the same API follows the existing
// Job to Ready and creates nothing twice.
func TestRestartResumesMonitoring(t *testing.T) {
	tc := startTestCluster(t, 3)
	f := newEngineFixture(t, etcdWorld(t, tc)...)
	req := groupRequest(tc, "groupsnapshot-restart")
	rec, err := f.engine.Create(f.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	result := takeVerifiedSnapshot(t, tc)

	// Stop the first engine (the driver process goes away), then start another one.
	f.stop()
	f = startFixtureEngine(t, f.kube)
	f.finishJob(rec.ID, rec.ID+"-x1", succeededPod(t, result), batchv1.JobCondition{Type: batchv1.JobComplete})
	ready := f.waitRecord(rec.ID, func(r *Record) bool { return r.Phase == PhaseReady })
	if ready.Revision != result.Revision || ready.SHA256 != result.SHA256 {
		t.Errorf("resumed record %+v does not carry the verify result %+v", ready, result)
	}
	again, err := f.engine.Create(f.ctx, req)
	if err != nil || again.Phase != PhaseReady {
		t.Fatalf("Create after restart: %+v, %v", again, err)
	}
	if n := f.countActions("create", "jobs"); n != 1 {
		t.Errorf("%d Job creates across the restart; want 1", n)
	}
}

// refuseSecretReads makes kube answer Forbidden to every Secret verb that returns Secret contents, as
// the driver's RBAC does (manifests/README.md, "Credentials and Secret access"), and counts the tries.
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
	tc := startTestCluster(t, 3)
	f := newEngineFixture(t, etcdWorld(t, tc)...)
	req := groupRequest(tc, "groupsnapshot-interrupted")
	rec, err := f.engine.Create(f.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	// The driver process dies mid-provision: the record is still Pending, the Job suspended, and the
	// Secret holds the credentials of the earlier attempt.
	f.stop()
	cms := f.admin.CoreV1().ConfigMaps(fxMetaNS)
	cm, err := cms.Get(f.ctx, rec.ID, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pending, err := decodeRecord(cm)
	if err != nil {
		t.Fatal(err)
	}
	pending.Phase = PhasePending
	next, err := encodeRecord(fxMetaNS, pending)
	if err != nil {
		t.Fatal(err)
	}
	next.ResourceVersion = cm.ResourceVersion
	if _, err := cms.Update(f.ctx, next, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
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
