package driver

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// Delete removes this snapshot's Job (background propagation), Secret, PVC and metadata, and nothing
// of another snapshot, not even an object that took one of its names.
func TestDeleteOnlyThisSnapshot(t *testing.T) {
	f, tc := startEngineWithEtcd(t)
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
	f, tc := startEngineWithEtcd(t)
	req := groupRequest(tc, "groupsnapshot-restart")
	rec := f.create(req)
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
