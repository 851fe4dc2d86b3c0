package driver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/golang/glog"
	snapclientset "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	snapinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	groupsnapshotlisters "github.com/kubernetes-csi/external-snapshotter/client/v8/listers/volumegroupsnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
)

// scheduleWorkers is the number of schedules synced at once; one schedule is never synced twice at
// the same time (the workqueue guarantees it).
const scheduleWorkers = 2

// ScheduleConfig configures the schedule controller.
type ScheduleConfig struct {
	// Kube records events on schedules.
	Kube kubernetes.Interface
	// Snapshots creates, lists and deletes the VolumeGroupSnapshots of the runs.
	Snapshots snapclientset.Interface
	// Dynamic reads EtcdSnapshotSchedules and writes their status.
	Dynamic dynamic.Interface
	// DriverName is the driver a schedule's VolumeGroupSnapshotClass must name.
	DriverName string
	// ClusterLabel is the PVC label that spec.source.cluster selects on.
	ClusterLabel string
	// Records returns the record of a group snapshot id, for the revision and size of the last run;
	// nil leaves them out.
	Records func(ctx context.Context, id string) (*Record, error)
	// Clock is the time source of runs and requeues; nil means the real clock.
	Clock clock.WithTicker
	// Resync re-examines every schedule this often besides its own timers; 0 disables it.
	Resync time.Duration
	// SnapInformers is the snapshot API informer factory shared with the rest of the driver; nil
	// gives the controller its own, with resync period Resync.
	SnapInformers snapinformers.SharedInformerFactory
}

// ScheduleController starts a VolumeGroupSnapshot for every run of every EtcdSnapshotSchedule,
// prunes them by the schedule's retention and reports on the schedule's status, events and metrics.
// It is driven by informers on schedules, VolumeGroupSnapshots and classes, plus a timer per schedule
// for its next run; it polls nothing.
type ScheduleController struct {
	cfg   ScheduleConfig
	clock clock.WithTicker

	dynFactory  dynamicinformer.DynamicSharedInformerFactory
	snapFactory snapinformers.SharedInformerFactory
	schedules   cache.GenericLister
	vgsLister   groupsnapshotlisters.VolumeGroupSnapshotLister
	classLister groupsnapshotlisters.VolumeGroupSnapshotClassLister
	synced      []cache.InformerSynced

	scheme   *runtime.Scheme
	queue    workqueue.TypedRateLimitingInterface[string]
	recorder record.EventRecorder
}

// NewScheduleController checks cfg and builds the controller; Run starts it.
func NewScheduleController(cfg ScheduleConfig) (*ScheduleController, error) {
	var errs []error
	if cfg.Kube == nil || cfg.Snapshots == nil || cfg.Dynamic == nil {
		errs = append(errs, errors.New("schedule: Kube, Snapshots and Dynamic clients are required"))
	}
	if cfg.DriverName == "" || cfg.ClusterLabel == "" {
		errs = append(errs, errors.New("schedule: DriverName and ClusterLabel are required"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	clk := cfg.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	scheme := newControllerScheme()

	c := &ScheduleController{
		cfg:         cfg,
		clock:       clk,
		dynFactory:  dynamicinformer.NewDynamicSharedInformerFactory(cfg.Dynamic, cfg.Resync),
		snapFactory: cfg.SnapInformers,
		scheme:      scheme,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "etcd-snapshot-schedules", Clock: clk}),
	}
	if c.snapFactory == nil {
		c.snapFactory = snapinformers.NewSharedInformerFactory(cfg.Snapshots, cfg.Resync)
	}
	schedInformer := c.dynFactory.ForResource(ScheduleGVR)
	vgsInformer := c.snapFactory.Groupsnapshot().V1().VolumeGroupSnapshots()
	classInformer := c.snapFactory.Groupsnapshot().V1().VolumeGroupSnapshotClasses()
	c.schedules = schedInformer.Lister()
	c.vgsLister = vgsInformer.Lister()
	c.classLister = classInformer.Lister()
	c.synced = []cache.InformerSynced{
		schedInformer.Informer().HasSynced, vgsInformer.Informer().HasSynced, classInformer.Informer().HasSynced,
	}

	_, _ = schedInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, obj any) { c.enqueue(obj) },
		DeleteFunc: c.enqueue,
	})
	// A run's progress (ready, failed, deleted) is what the schedule reports and what Forbid waits for.
	_, _ = vgsInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueOwner,
		UpdateFunc: func(_, obj any) { c.enqueueOwner(obj) },
		DeleteFunc: c.enqueueOwner,
	})
	// A class created or fixed after its schedules lets them run at once.
	_, _ = classInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.enqueueAll() },
		UpdateFunc: func(_, _ any) { c.enqueueAll() },
		DeleteFunc: func(any) { c.enqueueAll() },
	})
	return c, nil
}

// Run syncs schedules until ctx is cancelled; it returns nil then, and an error only when it could not
// start. Without the CRD it blocks in start while client-go's reflector logs each failed list
// ("Failed to watch") and retries with backoff (0.8 s doubling to 30 s), and syncs once the CRD is
// installed. Call it once; it is its own component so that it can run on the leader only.
func (c *ScheduleController) Run(ctx context.Context) error {
	return runController(ctx, c.queue, "schedule", "EtcdSnapshotSchedules for driver "+c.cfg.DriverName, scheduleWorkers, c.start,
		keyWorker(c.queue, "schedule", c.sync))
}

// start starts event recording and the informers and waits for their caches.
func (c *ScheduleController) start(ctx context.Context) error {
	c.recorder = startRecorder(ctx, c.cfg.Kube, c.scheme, c.cfg.DriverName+"-schedules")

	c.dynFactory.Start(ctx.Done())
	c.snapFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return fmt.Errorf("schedule: informer caches did not sync: %w", ctx.Err())
	}
	return nil
}

func (c *ScheduleController) enqueue(obj any) { enqueueKey(c.queue, "schedule", obj) }

// enqueueOwner queues the schedule a VolumeGroupSnapshot's label names.
func (c *ScheduleController) enqueueOwner(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	m, ok := obj.(interface {
		GetNamespace() string
		GetLabels() map[string]string
	})
	if !ok {
		return
	}
	if name := m.GetLabels()[labelSchedule]; name != "" {
		c.queue.Add(m.GetNamespace() + "/" + name)
	}
}

func (c *ScheduleController) enqueueAll() {
	list, err := c.schedules.List(labels.Everything())
	if err != nil {
		glog.Errorf("schedule: listing schedules: %v", err)
		return
	}
	for _, obj := range list {
		c.enqueue(obj)
	}
}

// sync brings one schedule forward at the clock's now and returns when it next needs looking at
// (its next run, or the moment its backup turns stale); 0 means only an event will.
func (c *ScheduleController) sync(ctx context.Context, key string) (time.Duration, error) {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return 0, nil
	}
	obj, err := c.schedules.ByNamespace(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		// Its VolumeGroupSnapshots stay: backups outlive their schedule.
		forgetScheduleMetrics(namespace, name)
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return 0, fmt.Errorf("unexpected %T in the schedule cache", obj)
	}
	if u.GetDeletionTimestamp() != nil {
		return 0, nil
	}
	s, err := scheduleFromUnstructured(u)
	if err != nil {
		// The CRD's schema makes this unreachable through the API; say so once per sync anyway.
		c.recorder.Eventf(u, corev1.EventTypeWarning, reasonInvalidSchedule, "Cannot read the schedule: %v", err)
		return 0, nil
	}
	r := &scheduleSync{c: c, u: u, s: s, st: s.Status, now: c.clock.Now()}
	after, syncErr := r.run(ctx)
	if err := c.writeStatus(ctx, u, &r.st); err != nil {
		return 0, errors.Join(syncErr, err)
	}
	for _, report := range r.reports {
		report()
	}
	publishScheduleMetrics(s, &r.st, r.runs, r.interval)
	return after, syncErr
}

// writeStatus writes st when it differs from what the cache holds.
func (c *ScheduleController) writeStatus(ctx context.Context, u *unstructured.Unstructured, st *scheduleStatus) error {
	current, err := scheduleFromUnstructured(u)
	if err != nil {
		return err
	}
	if statusEqual(&current.Status, st) {
		return nil
	}
	out, err := statusToUnstructured(u, st)
	if err != nil {
		return err
	}
	if _, err := c.cfg.Dynamic.Resource(ScheduleGVR).Namespace(u.GetNamespace()).UpdateStatus(ctx, out, metaUpdateOptions); err != nil {
		return fmt.Errorf("writing status: %w", err)
	}
	return nil
}
