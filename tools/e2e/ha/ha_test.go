package ha

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

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
	uids, first := watchJobs(t, ctx, r)

	const name = "e2e-ha"
	if _, err := r.CreateGroupSnapshot(ctx, name); err != nil {
		t.Fatal(err)
	}
	var job *batchv1.Job
	select {
	case job = <-first:
	case <-ctx.Done():
		_, err := r.WaitGroupSnapshotReady(ctx, name)
		t.Fatalf("no snapshot Job appeared for %s: %v", name, err)
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
	if seen := uids(); len(seen) != 1 || len(seen[rec.ID]) != 1 || !seen[rec.ID][job.UID] {
		t.Errorf("snapshot Jobs seen during the test: %v; want only %s with uid %s", seen, rec.ID, job.UID)
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

// watchJobs records the UID of every snapshot Job in the rig's namespace until the test ends; first
// receives the first one.
func watchJobs(t *testing.T, ctx context.Context, r *rig.Rig) (uids func() map[string]map[types.UID]bool, first <-chan *batchv1.Job) {
	t.Helper()
	var mu sync.Mutex
	seen := map[string]map[types.UID]bool{}
	firstc := make(chan *batchv1.Job, 1)
	add := func(obj any) {
		job, ok := obj.(*batchv1.Job)
		if !ok {
			return
		}
		id := job.Labels[rig.SnapshotIDLabel]
		mu.Lock()
		defer mu.Unlock()
		if len(seen) == 0 {
			firstc <- job
		}
		if seen[id] == nil {
			seen[id] = map[types.UID]bool{}
		}
		seen[id][job.UID] = true
	}
	factory := informers.NewSharedInformerFactoryWithOptions(r.Kube, 0, informers.WithNamespace(r.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = rig.SnapshotIDLabel }))
	informer := factory.Batch().V1().Jobs().Informer()
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: add, UpdateFunc: func(_, obj any) { add(obj) }}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	factory.Start(stop)
	t.Cleanup(func() { close(stop); factory.Shutdown() })
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		t.Fatal("Job informer did not sync")
	}
	return func() map[string]map[types.UID]bool {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]map[types.UID]bool{}
		for id, u := range seen {
			out[id] = map[types.UID]bool{}
			for k := range u {
				out[id][k] = true
			}
		}
		return out
	}, firstc
}
