package driver

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Create twice with one name: the same record and exactly one Job, Secret and PVC; the objects carry
// the contract's labels; the Secret is owned by the Job; the record holds the cluster's members.
func TestCreateIdempotent(t *testing.T) {
	f, tc := startEngineWithEtcd(t)
	req := groupRequest(tc, "groupsnapshot-1")

	first := f.create(req)
	// A retry as the sidecar sends it: same name, sources in another order, other credentials content.
	retry := req
	retry.SourceVolumeIDs = []string{req.SourceVolumeIDs[2], req.SourceVolumeIDs[0], req.SourceVolumeIDs[1]}
	second := f.create(retry)
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
	if got := job.Spec.Template.Spec.InitContainers[1].Args[3]; got != "--endpoints="+first.SourceMember.Endpoint || !strings.HasPrefix(got, "--endpoints=https://127.0.0.1:") {
		t.Errorf("save endpoint arg %q; want the chosen member %s", got, first.SourceMember.Endpoint)
	}
}

// The same name with other sources, or other parameters, is AlreadyExists naming the name.
func TestCreateSameNameOtherRequest(t *testing.T) {
	f, tc := startEngineWithEtcd(t)
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
	f, tc := startEngineWithEtcd(t)
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
