package driver

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/golang/glog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/keymutex"
)

// snapshotLocks is the number of hashed per-snapshot mutexes.
const snapshotLocks = 256

// lock locks snapshot id and returns its unlock function, for one-line defer.
func (e *Engine) lock(id string) func() {
	e.locks.LockKey(id)
	return func() { _ = e.locks.UnlockKey(id) }
}

// EngineConfig configures the snapshot engine.
type EngineConfig struct {
	// Kube is the client for every Kubernetes object the engine reads or creates.
	Kube kubernetes.Interface
	// MetadataNamespace holds one metadata ConfigMap per snapshot (flag -metadata-namespace).
	MetadataNamespace string
	// ClusterLabel is the PVC and Service label naming an etcd cluster (flag -cluster-label).
	ClusterLabel string
	// EtcdImage runs `etcdctl snapshot save` in the Job (flag -etcd-image).
	EtcdImage string
	// DriverImage runs `etcd-snapshot-driver verify` in the Job (flag -driver-image).
	DriverImage string
	// FallbackCreds are used when a request's CSI secrets hold no credentials (flags -etcd-ca,
	// -etcd-cert, -etcd-key); nil means none.
	FallbackCreds *Credentials
	// SnapshotStorageClass is the snapshot PVCs' class when the class parameter snapshotStorageClass
	// is absent; empty means the cluster's default class.
	SnapshotStorageClass string
	// HealthTimeout bounds one cluster health check; zero means DefaultHealthTimeout.
	HealthTimeout time.Duration
	// Workers is the number of goroutines acting on Job and Pod events; zero means 2.
	Workers int
	// SweepGrace is how long a Pending record or a pre-created VolumeGroupSnapshotContent must sit
	// unclaimed before the sweeper removes it (sweeper.go); zero means DefaultSweepGrace.
	SweepGrace time.Duration
	// CreateWait is how long a Create whose Job runs waits for it to finish before answering
	// not ready (flag -create-wait, Engine.AwaitFinished); zero answers at once.
	CreateWait time.Duration
	// OnGroupReady, if set, runs each time a group snapshot's record turns Ready, so the
	// csi-snapshotter can be told at once (DynamicGroupController.WakeGroupContent).
	OnGroupReady func(ctx context.Context, id string, readyAt time.Time)
	// Informers is the unfiltered informer factory the driver's components share (the engine takes
	// its PersistentVolume cache from it); nil gives the engine one of its own.
	Informers informers.SharedInformerFactory
}

// SnapshotRequest is one CreateVolumeGroupSnapshot (Group) or CreateSnapshot call.
type SnapshotRequest struct {
	// Name is the CO's request name; the snapshot id is derived from it, so retries land on one snapshot.
	Name string
	// SourceVolumeIDs are "namespace/pvc-name" or PV volume handles of any CSI driver; exactly one
	// unless Group.
	SourceVolumeIDs []string
	// Parameters are the class parameters (see engineparams.go); they are part of the snapshot's identity.
	Parameters map[string]string
	// Secrets are the CSI snapshotter secrets (ca.crt, tls.crt, tls.key); not part of the identity.
	Secrets map[string]string
	// Group selects a group snapshot (id "etcdgs-...", member ids per volume) over a single one ("etcds-...").
	Group bool
}

// Engine takes etcd snapshots through Jobs and keeps their metadata. Create, Get and Delete are safe
// for concurrent use; calls for one snapshot id are serialised.
type Engine struct {
	cfg  EngineConfig
	meta *metadataStore

	// Three factories because their list scopes differ: metadata in one namespace, PVs cluster-wide,
	// Jobs and Pods cluster-wide but only the driver's own (label-selected).
	metaFactory, pvFactory, ownFactory informers.SharedInformerFactory
	// ownedFactories are the factories the engine made and so shuts down; a shared pvFactory is not.
	ownedFactories []informers.SharedInformerFactory
	pvIndexer      cache.Indexer
	jobs           batchlisters.JobLister
	podIndexer     cache.Indexer
	synced         []cache.InformerSynced

	queue workqueue.TypedRateLimitingInterface[string]
	// locks serialises work per snapshot id. Hashed: 256 fixed mutexes, so 10,000 snapshots do not
	// keep 10,000 mutexes, and two ids share one only by a rare collision that merely delays one call.
	locks keymutex.KeyMutex
	// rollbackFailed hands a record whose rollback left objects behind to the sweeper; nil without one.
	rollbackFailed func(id string)
	started        atomic.Bool
	ready          atomic.Bool
}

// NewEngine checks cfg and builds an Engine; Start must run before Create.
func NewEngine(cfg EngineConfig) (*Engine, error) {
	var errs []error
	if cfg.Kube == nil {
		errs = append(errs, errors.New("engine: Kube client is required"))
	}
	for _, f := range []struct{ name, value string }{
		{"MetadataNamespace (-metadata-namespace)", cfg.MetadataNamespace},
		{"ClusterLabel (-cluster-label)", cfg.ClusterLabel},
		{"EtcdImage (-etcd-image)", cfg.EtcdImage},
		{"DriverImage (-driver-image)", cfg.DriverImage},
	} {
		if f.value == "" {
			errs = append(errs, errors.New("engine: "+f.name+" is required"))
		}
	}
	if cfg.FallbackCreds != nil && (len(cfg.FallbackCreds.CA) == 0 || len(cfg.FallbackCreds.Cert) == 0 || len(cfg.FallbackCreds.Key) == 0) {
		errs = append(errs, errors.New("engine: FallbackCreds needs all of CA, Cert and Key (-etcd-ca, -etcd-cert, -etcd-key)"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = DefaultHealthTimeout
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	e := &Engine{cfg: cfg, locks: keymutex.NewHashed(snapshotLocks), queue: workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "etcd-snapshot-jobs"})}
	if err := e.buildInformers(); err != nil {
		return nil, err
	}
	return e, nil
}

// managedSelector selects the objects this driver created.
func managedSelector() labels.Selector {
	return labels.SelectorFromSet(labels.Set{labelManagedBy: managedByDriver})
}

// managedInformerOption limits an informer factory to the objects this driver created.
func managedInformerOption() informers.SharedInformerOption {
	return informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = managedSelector().String() })
}

func (e *Engine) buildInformers() error {
	e.metaFactory = metadataInformers(e.cfg.Kube, e.cfg.MetadataNamespace)
	e.ownFactory = informers.NewSharedInformerFactoryWithOptions(e.cfg.Kube, 0, managedInformerOption())
	e.ownedFactories = []informers.SharedInformerFactory{e.metaFactory, e.ownFactory}
	e.pvFactory = e.cfg.Informers
	if e.pvFactory == nil {
		e.pvFactory = informers.NewSharedInformerFactory(e.cfg.Kube, 0)
		e.ownedFactories = append(e.ownedFactories, e.pvFactory)
	}

	cms := e.metaFactory.Core().V1().ConfigMaps()
	if err := cms.Informer().AddIndexers(cache.Indexers{recordClusterIndex: recordClusterIndexFunc}); err != nil {
		return err
	}
	e.meta = &metadataStore{kube: e.cfg.Kube, namespace: e.cfg.MetadataNamespace, cache: cms.Lister().ConfigMaps(e.cfg.MetadataNamespace)}

	pvs := e.pvFactory.Core().V1().PersistentVolumes().Informer()
	if err := pvs.AddIndexers(cache.Indexers{pvHandleIndex: pvHandleIndexFunc}); err != nil {
		return err
	}
	e.pvIndexer = pvs.GetIndexer()
	// A snapshot's volume binding (kept with Retain once Ready) or going (Lost): enginevolume.go.
	if _, err := pvs.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    e.enqueueSnapshotVolume,
		UpdateFunc: func(_, obj any) { e.enqueueSnapshotVolume(obj) },
		DeleteFunc: e.enqueueSnapshotVolume,
	}); err != nil {
		return err
	}

	jobs := e.ownFactory.Batch().V1().Jobs()
	e.jobs = jobs.Lister()
	pods := e.ownFactory.Core().V1().Pods().Informer()
	if err := pods.AddIndexers(cache.Indexers{podSnapshotIndex: podSnapshotIndexFunc}); err != nil {
		return err
	}
	e.podIndexer = pods.GetIndexer()

	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    e.enqueueObject,
		UpdateFunc: func(_, obj any) { e.enqueueObject(obj) },
		DeleteFunc: e.enqueueObject,
	}
	for _, inf := range []cache.SharedIndexInformer{jobs.Informer(), pods} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	// Failed records whose cleanup was cut short (a restart) are finished from the metadata side;
	// updates wake a Create waiting for its Job (AwaitFinished).
	if _, err := cms.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    e.enqueueUnfinishedRecord,
		UpdateFunc: func(_, obj any) { e.meta.changed(obj) },
		DeleteFunc: e.metadataDeleted,
	}); err != nil {
		return err
	}
	e.synced = []cache.InformerSynced{cms.Informer().HasSynced, pvs.HasSynced, jobs.Informer().HasSynced, pods.HasSynced}
	return nil
}

// Start runs the informers, waits for their caches and starts the workers that follow Jobs (Serve,
// then StartWorkers). It resumes monitoring of snapshots a previous driver process started: their
// Jobs arrive as informer adds. Everything stops when ctx ends.
func (e *Engine) Start(ctx context.Context) error {
	if err := e.Serve(ctx); err != nil {
		return err
	}
	e.StartWorkers(ctx)
	return nil
}

// StartWorkers starts the workers that follow Jobs (resume, verify results, clean up failures) once
// Serve has synced the caches; with leader election only the leader runs them.
func (e *Engine) StartWorkers(ctx context.Context) {
	worker := keyWorker(e.queue, "Snapshot", noRequeue(e.reconcile), errAwaitingResult)
	for range e.cfg.Workers {
		go worker(ctx)
	}
}

// Serve runs the informers and waits for their caches, after which Create, Get and Delete answer
// (Ready); the Job workers are StartWorkers'. Everything stops when ctx ends.
func (e *Engine) Serve(ctx context.Context) error {
	if !e.started.CompareAndSwap(false, true) {
		return errors.New("engine: Start called twice")
	}
	for _, f := range []informers.SharedInformerFactory{e.metaFactory, e.pvFactory, e.ownFactory} {
		f.Start(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), e.synced...) {
		e.queue.ShutDown()
		return errors.New("engine: informer caches did not sync before shutdown")
	}
	go func() {
		<-ctx.Done()
		e.ready.Store(false)
		e.queue.ShutDown()
		for _, f := range e.ownedFactories {
			f.Shutdown()
		}
	}()
	e.ready.Store(true)
	glog.V(2).Infof("Snapshot engine started: metadata in namespace %s, cluster label %s", e.cfg.MetadataNamespace, e.cfg.ClusterLabel)
	return nil
}

// Ready reports whether Start has synced the caches and the engine is serving.
func (e *Engine) Ready() bool { return e.ready.Load() }

// Get returns the record of a group or single snapshot id; NotFound when there is none.
func (e *Engine) Get(ctx context.Context, id string) (*Record, error) {
	if !isRecordID(id) {
		return nil, status.Errorf(codes.NotFound, "snapshot %q does not exist (not an id this driver issues)", id)
	}
	rec, err := e.meta.get(ctx, id)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, status.Errorf(codes.NotFound, "snapshot %q does not exist", id)
	}
	return rec, nil
}

// notStarted is the answer before Start has synced: the caches would make every volume unknown.
func (e *Engine) notStarted() error {
	if e.ready.Load() {
		return nil
	}
	return status.Error(codes.Unavailable, "snapshot engine is starting (informer caches not synced yet); retry")
}

// sortedCopy returns ids sorted, leaving the caller's slice alone.
func sortedCopy(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}
