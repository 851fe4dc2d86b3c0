package e2e

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// apiserverDown is how long the restarted kube-apiserver stays away: longer than the rig's leader
// Lease (4s), so the driver's and every sidecar's renewals fail while it is gone.
const apiserverDown = 6 * time.Second

// TestE2EAPIServerRestartMidSnapshot stops kube-apiserver as soon as a snapshot's Job exists and
// starts it again on the same port and etcd: the snapshot still becomes ready, its record says Ready,
// and exactly one Job was ever created for it.
func TestE2EAPIServerRestartMidSnapshot(t *testing.T) {
	r, ctx := setup(t)
	// Enough data that the save is still running when the apiserver goes.
	const prefix = "/e2e-apiserver-restart/"
	if _, err := r.WriteSampleData(ctx, prefix, 20000); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deletePrefix(t, r, prefix) })
	jobs, err := r.WatchSnapshotJobs(ctx, r.Namespace)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jobs.Stop)

	name := uniqueName("e2e-apiserver-restart")
	createGroup(t, ctx, r, name)
	first, err := jobs.WaitFirst(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	// The apiserver goes once the Job's pod exists, so the pod's run and the Job's status cross the
	// restart.
	var job *batchv1.Job
	err = wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		j, err := r.Kube.BatchV1().Jobs(r.Namespace).Get(ctx, first.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		job = j
		return j.Status.Active > 0 || j.Status.Succeeded > 0 || j.Status.Failed > 0, nil
	})
	if err != nil {
		t.Fatalf("Job %s never started a pod: %v", first.Name, err)
	}
	t.Logf("restarting kube-apiserver as Job %s (uid %s) runs: %d active, %d succeeded, %d failed", job.Name, job.UID, job.Status.Active, job.Status.Succeeded, job.Status.Failed)
	if job.Status.Active == 0 {
		t.Fatalf("Job %s finished before the apiserver could be stopped; the test needs a longer save", job.Name)
	}
	begin, pid := time.Now(), r.DriverPID()
	if err := r.RestartAPIServer(ctx, apiserverDown); err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver back after %s", time.Since(begin).Round(100*time.Millisecond))

	vgs, err := r.WaitGroupSnapshotReady(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("readyToUse %s after the apiserver went down; driver pid %d before, %d now", time.Since(begin).Round(100*time.Millisecond), pid, r.DriverPID())
	rec, err := r.GroupSnapshotRecord(ctx, vgs)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Phase != driver.PhaseReady || rec.ID != job.Name {
		t.Fatalf("record %s is %s, want Ready for Job %s", rec.ID, rec.Phase, job.Name)
	}
	if uids := jobs.UIDs(rec.ID); len(uids) != 1 || uids[0] != job.UID {
		t.Errorf("Job UIDs seen for %s: %v, want only %s", rec.ID, uids, job.UID)
	}
	current, err := r.Kube.BatchV1().Jobs(r.Namespace).Get(ctx, rec.ID, metav1.GetOptions{})
	if err != nil || current.UID != job.UID {
		t.Errorf("Job %s now: uid %v (err %v), want the first one, %s", rec.ID, current.UID, err, job.UID)
	}
}

// deletePrefix removes the keys a test wrote into the shared cluster under test.
func deletePrefix(t *testing.T, r *rig.Rig, prefix string) {
	cli, err := r.EtcdClient()
	if err != nil {
		t.Errorf("clean-up: %v", err)
		return
	}
	defer cli.Close()
	if _, err := cli.Delete(cleanupContext(t), prefix, clientv3.WithPrefix()); err != nil {
		t.Errorf("clean-up: delete %s*: %v", prefix, err)
	}
}
