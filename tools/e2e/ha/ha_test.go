package ha

import (
	"context"
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

const (
	testTimeout  = 4 * time.Minute
	pollInterval = 250 * time.Millisecond
)

func TestMain(m *testing.M) { rig.Main(m) }

// TestE2EDriverLeaderKilledMidSnapshot runs the driver as shipped, two replicas with leader election,
// and kills the replica holding the driver's Lease as soon as its snapshot Job exists: the other
// replica takes the Lease and finishes the snapshot, and exactly one Job was ever created for it.
func TestE2EDriverLeaderKilledMidSnapshot(t *testing.T) {
	r := rig.ForTestWithOptions(t, rig.Options{DriverReplicas: 2})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	if err := r.InstallExampleClasses(ctx); err != nil {
		t.Fatal(err)
	}
	if n := r.DriverReplicas(); n != 2 {
		t.Fatalf("%d driver replicas, want 2", n)
	}
	leader := waitLeader(t, ctx, r, -1)
	t.Cleanup(func() {
		if !r.DriverReplicaRunning(leader) {
			if err := r.StartDriverReplica(leader); err != nil {
				t.Errorf("clean-up: restart replica %d: %v", leader, err)
			}
		}
	})
	jobs, err := r.WatchSnapshotJobs(ctx, r.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jobs.Stop)

	const name = "e2e-ha"
	if _, err := r.CreateGroupSnapshot(ctx, name); err != nil {
		t.Fatal(err)
	}
	job, err := jobs.WaitFirst(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.KillDriverReplica(leader); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("killed leading replica %d as Job %s (uid %s) appeared", leader, job.Name, job.UID)

	vgs, err := r.WaitGroupSnapshotReady(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("readyToUse %s after the kill", time.Since(killed).Round(100*time.Millisecond))
	next := waitLeader(t, ctx, r, leader)
	if next == leader {
		t.Fatalf("replica %d still leads after being killed", leader)
	}
	rec, err := r.GroupSnapshotRecord(ctx, vgs)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Phase != driver.PhaseReady || job.Labels[rig.SnapshotIDLabel] != rec.ID {
		t.Fatalf("record %s is %s (first Job %s of snapshot %q), want Ready for that Job", rec.ID, rec.Phase, job.Name, job.Labels[rig.SnapshotIDLabel])
	}
	if ids, uids := jobs.IDs(), jobs.UIDs(rec.ID); len(ids) != 1 || len(uids) != 1 || uids[0] != job.UID {
		t.Errorf("snapshot Jobs seen during the test: %v, uids of %s %v; want only %s with uid %s", ids, rec.ID, uids, rec.ID, job.UID)
	}
	current, err := r.Kube.BatchV1().Jobs(r.Namespace).Get(ctx, rec.ID, metav1.GetOptions{})
	if err != nil || current.UID != job.UID {
		t.Errorf("Job %s now: %v (err %v), want the first one, uid %s", rec.ID, current.UID, err, job.UID)
	}
}

// waitLeader waits until a live replica other than not holds the driver's Lease and returns it.
func waitLeader(t *testing.T, ctx context.Context, r *rig.Rig, not int) int {
	t.Helper()
	leader := -1
	err := wait.PollUntilContextTimeout(ctx, pollInterval, time.Minute, true, func(ctx context.Context) (bool, error) {
		i, err := r.LeaderReplica(ctx)
		if err != nil || i == not || !r.DriverReplicaRunning(i) {
			return false, nil
		}
		leader = i
		return true, nil
	})
	if err != nil {
		_, why := r.LeaderReplica(ctx)
		t.Fatalf("no live replica (other than %d) leads: %v", not, errors.Join(err, why))
	}
	return leader
}
