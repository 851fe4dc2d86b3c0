package driver

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/golang/glog"
	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapclientset "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	groupsnapshotlisters "github.com/kubernetes-csi/external-snapshotter/client/v8/listers/volumegroupsnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
)

// The sweeper finishes what no caller will. Three things outlive their caller today:
//   - a Pending record (with its suspended Job, PVC and credentials Secret) whose Create was cut short
//     and whose VolumeGroupSnapshot or VolumeSnapshot was deleted before the sidecar retried;
//   - a Pending record whose rollback failed (enginedelete.go), which is retried at once with backoff;
//   - a VolumeGroupSnapshotContent dynamicgroup.go pre-created for a VolumeGroupSnapshot deleted before
//     upstream bound it (upstream v8.7.0 never collects it), and the snapshot the sidecar took for it.
//
// It follows the metadata ConfigMaps and the group snapshot objects through the informers the engine
// and the dynamic group watch already run; nothing is polled. Each candidate is looked at again once
// its grace period has passed, and removed only if it is still abandoned then.
const (
	// DefaultSweepGrace is how long a Pending record or a pre-created content must sit unclaimed
	// before the sweeper removes it (EngineConfig.SweepGrace). The csi-snapshotter retries a Create
	// at most 5 minutes apart (its --retry-interval-max default), so twice that never races a caller
	// that is still retrying.
	DefaultSweepGrace = 10 * time.Minute

	sweepRecordPrefix   = "record/"
	sweepContentPrefix  = "content/"
	sweepSnapshotPrefix = "snapshot/"
)

// Values of the kind label of sweeper_removed_total.
const (
	sweptPending  = "pending"  // a Pending record no caller will retry, with its Job, PVC and Secret
	sweptRollback = "rollback" // a failed rollback, finished
	sweptContent  = "content"  // a pre-created VolumeGroupSnapshotContent whose VolumeGroupSnapshot is gone
	sweptSnapshot = "snapshot" // the snapshot the sidecar took for such a content
)

// requestUIDPattern finds the object UID at the end of a request name: the csi-snapshotter names
// Create calls "<prefix>-<VolumeSnapshot or VolumeGroupSnapshot UID>" (makeSnapshotName in
// pkg/sidecar-controller/csi_handler.go, v8.7.0, with its default untruncated UID).
var requestUIDPattern = regexp.MustCompile(`-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$`)

// Sweeper removes abandoned snapshot objects once their grace period has passed; see above.
type Sweeper struct {
	engine *Engine
	snap   snapclientset.Interface
	grace  time.Duration
	clock  clock.PassiveClock

	vgsLister     groupsnapshotlisters.VolumeGroupSnapshotLister
	contentLister groupsnapshotlisters.VolumeGroupSnapshotContentLister

	queue workqueue.TypedRateLimitingInterface[string]

	mu sync.Mutex
	// rollbacks are the records whose rollback failed in this process: removed without a grace period.
	rollbacks sets.Set[string]
}

// newSweeper builds the sweeper over the engine's metadata informer and the dynamic group watch's
// group snapshot informers; clk drives the grace periods (a fake clock in tests).
func newSweeper(e *Engine, dg *DynamicGroupController, snap snapclientset.Interface, grace time.Duration, clk clock.WithTicker) (*Sweeper, error) {
	if grace <= 0 {
		grace = DefaultSweepGrace
	}
	s := &Sweeper{
		engine: e, snap: snap, grace: grace, clock: clk,
		vgsLister: dg.vgsLister, contentLister: dg.contentLister,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "etcd-snapshot-sweeper", Clock: clk}),
		rollbacks: sets.New[string](),
	}
	cms := e.metaFactory.Core().V1().ConfigMaps().Informer()
	if _, err := cms.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    s.recordChanged,
		UpdateFunc: func(_, obj any) { s.recordChanged(obj) },
	}); err != nil {
		return nil, err
	}
	contents := dg.snapFactory.Groupsnapshot().V1().VolumeGroupSnapshotContents().Informer()
	if _, err := contents.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    s.contentChanged,
		UpdateFunc: func(_, obj any) { s.contentChanged(obj) },
	}); err != nil {
		return nil, err
	}
	vgs := dg.snapFactory.Groupsnapshot().V1().VolumeGroupSnapshots().Informer()
	if _, err := vgs.AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: s.groupSnapshotDeleted}); err != nil {
		return nil, err
	}
	e.rollbackFailed = s.rollbackFailed
	return s, nil
}

// Run sweeps until ctx ends, once the engine's caches have synced. Content sweeping starts with the
// dynamic group watch's informers, which deliver its events.
func (s *Sweeper) Run(ctx context.Context) {
	defer s.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), s.engine.synced...) {
		return
	}
	glog.V(2).Infof("sweeper: removing abandoned snapshot objects after %s", s.grace)
	go keyWorker(s.queue, "sweeper:", noRequeue(s.sweep))(ctx)
	<-ctx.Done()
}

// recordChanged schedules a look at a Pending record once its grace period has passed.
func (s *Sweeper) recordChanged(obj any) {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return
	}
	rec, err := decodeRecord(cm)
	if err != nil || rec.Phase != PhasePending {
		return
	}
	s.queue.AddAfter(sweepRecordPrefix+rec.ID, s.remaining(rec.CreatedAt))
}

// contentChanged schedules a look at a content the dynamic group watch created.
func (s *Sweeper) contentChanged(obj any) {
	c, ok := obj.(*groupsnapshotv1.VolumeGroupSnapshotContent)
	if !ok || c.Labels[labelManagedBy] != managedByDriver || c.DeletionTimestamp != nil {
		return
	}
	s.queue.AddAfter(sweepContentPrefix+c.Name, s.remaining(c.CreationTimestamp.Time))
}

// groupSnapshotDeleted looks at the content pre-created for a deleted VolumeGroupSnapshot.
func (s *Sweeper) groupSnapshotDeleted(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if vgs, ok := obj.(*groupsnapshotv1.VolumeGroupSnapshot); ok {
		s.queue.Add(sweepContentPrefix + upstreamGroupContentPrefix + string(vgs.UID))
	}
}

// rollbackFailed is the engine's hook for a rollback that left objects behind.
func (s *Sweeper) rollbackFailed(id string) {
	s.mu.Lock()
	s.rollbacks.Insert(id)
	s.mu.Unlock()
	s.queue.AddRateLimited(sweepRecordPrefix + id)
}

func (s *Sweeper) isRollback(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rollbacks.Has(id)
}

func (s *Sweeper) forgetRollback(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rollbacks.Delete(id)
}

// remaining is how long until since+grace; zero when it has passed.
func (s *Sweeper) remaining(since time.Time) time.Duration {
	return max(0, s.grace-s.clock.Since(since))
}

// sweep dispatches a sweeper key to the record or the content it names.
func (s *Sweeper) sweep(ctx context.Context, key string) error {
	if id, ok := strings.CutPrefix(key, sweepRecordPrefix); ok {
		return s.sweepRecord(ctx, id)
	}
	if name, ok := strings.CutPrefix(key, sweepContentPrefix); ok {
		return s.sweepContent(ctx, name)
	}
	if id, ok := strings.CutPrefix(key, sweepSnapshotPrefix); ok {
		return s.sweepSnapshot(ctx, id)
	}
	return nil
}

// sweepRecord removes a Pending record and its Job, Secret and PVC when its rollback failed, or when
// its grace period has passed and no caller is left to retry it. Holding the snapshot's lock means no
// Create of this process is resuming it.
func (s *Sweeper) sweepRecord(ctx context.Context, id string) error {
	defer s.engine.lock(id)()
	rec, err := s.engine.meta.getLive(ctx, id)
	if err != nil {
		return err
	}
	if rec == nil || rec.Phase != PhasePending {
		s.forgetRollback(id)
		return nil
	}
	kind := sweptRollback
	if !s.isRollback(id) {
		kind = sweptPending
		if wait := s.remaining(rec.CreatedAt); wait > 0 {
			s.queue.AddAfter(sweepRecordPrefix+id, wait)
			return nil
		}
		waiting, err := s.callerWaits(ctx, rec)
		if err != nil {
			return err
		}
		if waiting {
			// The sidecar retries while its content exists; look again a grace period later.
			s.queue.AddAfter(sweepRecordPrefix+id, s.grace)
			return nil
		}
	}
	if err := s.engine.deleteSnapshotObjects(ctx, rec.Namespace, id); err != nil {
		return err
	}
	if err := s.engine.meta.delete(ctx, id); err != nil {
		return err
	}
	s.forgetRollback(id)
	sweeperRemoved.WithLabelValues(kind).Inc()
	glog.Infof("sweeper: removed Pending snapshot %s (%s) of etcd cluster %s/%s, its Job, Secret and PVC (%s)",
		id, rec.Name, rec.Namespace, rec.Cluster, map[string]string{sweptPending: "no caller retried it", sweptRollback: "its rollback had failed"}[kind])
	return nil
}

// callerWaits reports whether the Kubernetes object that asked for rec still exists, so the
// csi-snapshotter will call Create again: the content upstream names after the UID in the request
// name. A request name without a UID (not the sidecar's) has no caller to wait for.
func (s *Sweeper) callerWaits(ctx context.Context, rec *Record) (bool, error) {
	m := requestUIDPattern.FindStringSubmatch(rec.Name)
	if m == nil {
		return false, nil
	}
	var obj metav1.Object
	var err error
	if rec.Group {
		var c *groupsnapshotv1.VolumeGroupSnapshotContent
		c, err = s.snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(ctx, upstreamGroupContentPrefix+m[1], metav1.GetOptions{})
		obj = c
	} else {
		var c *snapshotv1.VolumeSnapshotContent
		c, err = s.snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, upstreamContentPrefix+m[1], metav1.GetOptions{})
		obj = c
	}
	switch {
	case apierrors.IsNotFound(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("reading the content of snapshot %s (%s): %w", rec.ID, rec.Name, err)
	}
	return obj.GetDeletionTimestamp() == nil, nil
}
