package e2e

import (
	"context"
	"sync"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// jobLog records every snapshot Job an informer ever reports, by snapshot id.
type jobLog struct {
	mu       sync.Mutex
	existing map[string]bool               // ids with a Job before the test started
	uids     map[string]map[types.UID]bool // id -> every Job UID seen
	first    chan *batchv1.Job             // the first Job of an id not in existing
	sent     bool
}

func (l *jobLog) add(obj any, initial bool) {
	job, ok := obj.(*batchv1.Job)
	if !ok {
		return
	}
	id := job.Labels[rig.SnapshotIDLabel]
	l.mu.Lock()
	defer l.mu.Unlock()
	if initial {
		l.existing[id] = true
		return
	}
	if l.uids[id] == nil {
		l.uids[id] = map[types.UID]bool{}
	}
	l.uids[id][job.UID] = true
	if !l.existing[id] && !l.sent {
		l.sent = true
		l.first <- job
	}
}

// newIDs returns the ids of Jobs that did not exist when the test started, with their Job UIDs.
func (l *jobLog) newIDs() map[string][]types.UID {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string][]types.UID{}
	for id, uids := range l.uids {
		if l.existing[id] {
			continue
		}
		for uid := range uids {
			out[id] = append(out[id], uid)
		}
	}
	return out
}

// watchJobs records every Job carrying a snapshot id label in the rig's namespace until the test ends:
// a second Job for a snapshot, even one created and deleted between two looks, shows up as a second UID.
func watchJobs(t *testing.T, ctx context.Context, r *rig.Rig) *jobLog {
	t.Helper()
	log := &jobLog{existing: map[string]bool{}, uids: map[string]map[types.UID]bool{}, first: make(chan *batchv1.Job, 1)}
	factory := informers.NewSharedInformerFactoryWithOptions(r.Kube, 0, informers.WithNamespace(r.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = rig.SnapshotIDLabel }))
	informer := factory.Batch().V1().Jobs().Informer()
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerDetailedFuncs{
		AddFunc:    log.add,
		UpdateFunc: func(_, obj any) { log.add(obj, false) },
	}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	factory.Start(stop)
	t.Cleanup(func() { close(stop); factory.Shutdown() })
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		t.Fatal("Job informer did not sync")
	}
	return log
}

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

	log := watchJobs(t, ctx, r)

	name := uniqueName("e2e-restart")
	createGroup(t, ctx, r, name)
	var job *batchv1.Job
	select {
	case job = <-log.first:
	case <-ctx.Done():
		_, err := r.WaitGroupSnapshotReady(ctx, name) // returns at once, explaining the state
		t.Fatalf("no snapshot Job appeared for %s: %v", name, err)
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
	seen := log.newIDs()
	if len(seen) != 1 || len(seen[rec.ID]) != 1 || seen[rec.ID][0] != job.UID {
		t.Errorf("snapshot Jobs seen during the test: %v; want only %s with uid %s", seen, rec.ID, job.UID)
	}
	current, err := r.Kube.BatchV1().Jobs(r.Namespace).Get(ctx, rec.ID, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if current.UID != job.UID {
		t.Errorf("Job %s now has uid %s, the first one had %s: it was recreated", rec.ID, current.UID, job.UID)
	}
}
