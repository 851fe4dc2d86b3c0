package rig

import (
	"context"
	"errors"
	"fmt"
	"sync"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// JobWatch records every snapshot Job (a Job labelled SnapshotIDLabel) an informer reports in one
// namespace: a Job deleted and created again for the same snapshot, even between two looks, shows up
// as a second UID. Informers relist after a lost connection, so it also covers an apiserver restart.
type JobWatch struct {
	mu       sync.Mutex
	existing map[string]bool               // ids with a Job when the watch started
	uids     map[string]map[types.UID]bool // snapshot id -> every Job UID seen
	first    chan *batchv1.Job
	sent     bool
	stop     chan struct{}
	r        *Rig
	ns       string // of the Jobs, and of the snapshots WaitFirst explains
	stopOnce sync.Once
	f        informers.SharedInformerFactory
}

// WatchSnapshotJobs starts a JobWatch on namespace and returns once its informer has synced; the
// snapshots with a Job by then are left out of First, UIDs and IDs. Stop ends it.
func (r *Rig) WatchSnapshotJobs(ctx context.Context, namespace string) (*JobWatch, error) {
	w := &JobWatch{existing: map[string]bool{}, uids: map[string]map[types.UID]bool{}, first: make(chan *batchv1.Job, 1), stop: make(chan struct{}), r: r, ns: namespace}
	w.f = informers.NewSharedInformerFactoryWithOptions(r.Kube, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = SnapshotIDLabel }))
	inf := w.f.Batch().V1().Jobs().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerDetailedFuncs{
		AddFunc:    w.add,
		UpdateFunc: func(_, obj any) { w.add(obj, false) },
	}); err != nil {
		return nil, err
	}
	w.f.Start(w.stop)
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		w.Stop()
		return nil, errors.New("rig: the snapshot Job informer did not sync")
	}
	return w, nil
}

func (w *JobWatch) add(obj any, initial bool) {
	job, ok := obj.(*batchv1.Job)
	if !ok {
		return
	}
	id := job.Labels[SnapshotIDLabel]
	w.mu.Lock()
	defer w.mu.Unlock()
	if initial {
		w.existing[id] = true
	}
	if w.existing[id] {
		return
	}
	if w.uids[id] == nil {
		w.uids[id] = map[types.UID]bool{}
	}
	w.uids[id][job.UID] = true
	if !w.sent {
		w.sent = true
		w.first <- job
	}
}

// First receives the first Job of a snapshot that had none when the watch started.
func (w *JobWatch) First() <-chan *batchv1.Job { return w.first }

// WaitFirst waits for First: the first Job of the VolumeGroupSnapshot name, created in the watched
// namespace after the watch started. When ctx ends first, the error explains the snapshot's state.
func (w *JobWatch) WaitFirst(ctx context.Context, name string) (*batchv1.Job, error) {
	select {
	case job := <-w.first:
		return job, nil
	case <-ctx.Done():
		_, err := w.r.WaitGroupSnapshotReadyIn(ctx, w.ns, name) // returns at once, explaining the state
		return nil, fmt.Errorf("no snapshot Job appeared for %s: %v", name, err)
	}
}

// UIDs returns every Job UID seen for snapshot id.
func (w *JobWatch) UIDs(id string) []types.UID {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []types.UID
	for uid := range w.uids[id] {
		out = append(out, uid)
	}
	return out
}

// IDs returns the ids of the snapshots whose Jobs were seen.
func (w *JobWatch) IDs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for id := range w.uids {
		out = append(out, id)
	}
	return out
}

// Stop ends the watch and waits for its informer; it is safe to call more than once.
func (w *JobWatch) Stop() {
	w.stopOnce.Do(func() {
		close(w.stop)
		w.f.Shutdown()
	})
}
