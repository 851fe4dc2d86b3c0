package e2e

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// TestE2EDriverRestart kills the driver right after it created a snapshot's Job and starts it again:
// the snapshot still completes, and exactly one Job was ever created for it.
func TestE2EDriverRestart(t *testing.T) {
	r, ctx := setup(t)
	t.Cleanup(func() {
		if !r.DriverRunning() {
			if err := r.StartDriver(); err != nil {
				t.Errorf("clean-up: restart the driver: %v", err)
			}
		}
	})

	jobs, err := r.WatchSnapshotJobs(ctx, r.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jobs.Stop)

	name := uniqueName("e2e-restart")
	createGroup(t, ctx, r, name)
	job, err := jobs.WaitFirst(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.KillDriver(); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed the driver as Job %s (uid %s, suspended %v) appeared", job.Name, job.UID, job.Spec.Suspend != nil && *job.Spec.Suspend)
	if err := r.StartDriver(); err != nil {
		t.Fatal(err)
	}

	vgs, err := r.WaitGroupSnapshotReady(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := r.GroupSnapshotRecord(ctx, vgs)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Phase != driver.PhaseReady {
		t.Fatalf("record %s is %s after the restart, want Ready", rec.ID, rec.Phase)
	}
	if job.Labels[rig.SnapshotIDLabel] != rec.ID {
		t.Fatalf("the Job seen first (%s) belongs to snapshot %q, not to %s", job.Name, job.Labels[rig.SnapshotIDLabel], rec.ID)
	}
	// The informer has seen the Job complete by now (the driver reads completion from the same API).
	if ids, uids := jobs.IDs(), jobs.UIDs(rec.ID); len(ids) != 1 || len(uids) != 1 || uids[0] != job.UID {
		t.Errorf("snapshot Jobs seen during the test: %v, uids of %s %v; want only %s with uid %s", ids, rec.ID, uids, rec.ID, job.UID)
	}
	current, err := r.Kube.BatchV1().Jobs(r.Namespace).Get(ctx, rec.ID, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if current.UID != job.UID {
		t.Errorf("Job %s now has uid %s, the first one had %s: it was recreated", rec.ID, current.UID, job.UID)
	}
}
