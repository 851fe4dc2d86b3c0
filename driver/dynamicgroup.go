package driver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/golang/glog"
	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapclientset "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	snapinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	groupsnapshotlisters "github.com/kubernetes-csi/external-snapshotter/client/v8/listers/volumegroupsnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
)

// The upstream snapshot-controller (external-snapshotter v8.7.0,
// pkg/common-controller/groupsnapshot_controller_helper.go) refuses to create the
// VolumeGroupSnapshotContent of a dynamic VolumeGroupSnapshot whose PVs belong to
// another CSI driver than the class ("Volume CSI driver (%s) mismatch with
// VolumeGroupSnapshotClass"), and etcd's PVs always do. Before creating, it looks
// up a content named "groupsnapcontent-<VGS UID>" and binds it without that check
// when spec.volumeGroupSnapshotRef matches name, namespace and UID. This
// controller creates that content (dynamicgroupcontent.go), field for field as
// upstream's createGroupSnapshotContent. Upstream's names it uses are in upstreamnames.go.

// dgWorkers is the number of VolumeGroupSnapshots synced at once.
const dgWorkers = 2

// Event reasons recorded on VolumeGroupSnapshots.
const (
	dgReasonCreating        = "CreatingGroupSnapshot" // same reason upstream uses after creating a content
	dgReasonNoVolumes       = "NoMatchingPersistentVolumeClaims"
	dgReasonNotBound        = "PersistentVolumeClaimNotBound"
	dgReasonBadSelector     = "InvalidSelector"
	dgReasonBadSecretParams = "InvalidSecretParameters"
	dgReasonDefaultClass    = "AmbiguousDefaultGroupSnapshotClass"
	dgReasonCreateFailed    = "CreateGroupSnapshotContentFailed"
)

// errDGRetry marks a condition that clears by itself (PVCs not there or not bound
// yet, member snapshots not ready yet); the key goes back to the queue with backoff and the error is not logged as
// a failure.
var errDGRetry = errors.New("dynamicgroup: waiting")

// DynamicGroupController creates the VolumeGroupSnapshotContent of each dynamic
// VolumeGroupSnapshot of this driver's classes, so that the unmodified upstream
// snapshot-controller binds it and the csi-snapshotter sidecar calls
// CreateVolumeGroupSnapshot with the selected PVCs as "namespace/pvc" volume ids.
type DynamicGroupController struct {
	kube       kubernetes.Interface
	snap       snapclientset.Interface
	driverName string

	kubeFactory informers.SharedInformerFactory
	snapFactory snapinformers.SharedInformerFactory

	vgsLister     groupsnapshotlisters.VolumeGroupSnapshotLister
	classLister   groupsnapshotlisters.VolumeGroupSnapshotClassLister
	contentLister groupsnapshotlisters.VolumeGroupSnapshotContentLister
	pvcLister     corelisters.PersistentVolumeClaimLister
	pvLister      corelisters.PersistentVolumeLister
	synced        []cache.InformerSynced

	scheme *runtime.Scheme
	queue  workqueue.TypedRateLimitingInterface[string]
	// deletionQueue holds the names of this driver's VolumeGroupSnapshotContents being deleted whose
	// deletion-secret annotations are to go (dynamicgroupdeletion.go).
	deletionQueue workqueue.TypedRateLimitingInterface[string]
	recorder      record.EventRecorder
}

// dgRateLimiter is the queue's backoff: upstream's defaults for --retry-interval-start and
// --retry-interval-max.
func dgRateLimiter() workqueue.TypedRateLimiter[string] {
	return workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 5*time.Minute)
}

// newDynamicGroupController is the controller on informer factories of its own, with resync period
// resync (0 disables it) and the queue backoff limiter: what the tests build.
func newDynamicGroupController(kube kubernetes.Interface, snap snapclientset.Interface, driverName string, resync time.Duration, limiter workqueue.TypedRateLimiter[string]) *DynamicGroupController {
	return newDynamicGroupControllerWith(kube, snap, informers.NewSharedInformerFactory(kube, resync),
		snapinformers.NewSharedInformerFactory(snap, resync), driverName, limiter)
}

// newDynamicGroupControllerWith builds the controller on informer factories shared with the rest
// of the driver (driver.go), so that VolumeGroupSnapshots, contents, claims and volumes are each
// watched once per process.
func newDynamicGroupControllerWith(kube kubernetes.Interface, snap snapclientset.Interface, kubeFactory informers.SharedInformerFactory,
	snapFactory snapinformers.SharedInformerFactory, driverName string, limiter workqueue.TypedRateLimiter[string]) *DynamicGroupController {
	scheme := newControllerScheme()

	c := &DynamicGroupController{
		kube:        kube,
		snap:        snap,
		driverName:  driverName,
		kubeFactory: kubeFactory,
		snapFactory: snapFactory,
		scheme:      scheme,
		queue:       workqueue.NewTypedRateLimitingQueueWithConfig(limiter, workqueue.TypedRateLimitingQueueConfig[string]{}),
		deletionQueue: workqueue.NewTypedRateLimitingQueueWithConfig(dgRateLimiter(),
			workqueue.TypedRateLimitingQueueConfig[string]{}),
	}

	vgsInformer := c.snapFactory.Groupsnapshot().V1().VolumeGroupSnapshots()
	classInformer := c.snapFactory.Groupsnapshot().V1().VolumeGroupSnapshotClasses()
	contentInformer := c.snapFactory.Groupsnapshot().V1().VolumeGroupSnapshotContents()
	pvcInformer := c.kubeFactory.Core().V1().PersistentVolumeClaims()
	pvInformer := c.kubeFactory.Core().V1().PersistentVolumes()

	c.vgsLister = vgsInformer.Lister()
	c.classLister = classInformer.Lister()
	c.contentLister = contentInformer.Lister()
	c.pvcLister = pvcInformer.Lister()
	c.pvLister = pvInformer.Lister()
	c.synced = []cache.InformerSynced{
		vgsInformer.Informer().HasSynced, classInformer.Informer().HasSynced,
		contentInformer.Informer().HasSynced, pvcInformer.Informer().HasSynced, pvInformer.Informer().HasSynced,
	}

	_, _ = vgsInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueue,
		UpdateFunc: func(_, obj interface{}) { c.enqueue(obj) },
	})
	c.addDeletionHandlers(contentInformer.Informer())
	// A class created or fixed after its VolumeGroupSnapshots is picked up at once.
	_, _ = classInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(interface{}) { c.enqueueUnbound("") },
		UpdateFunc: func(_, _ interface{}) { c.enqueueUnbound("") },
	})
	// A claim that appears or gets bound ends a wait without waiting for the backoff.
	_, _ = pvcInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj interface{}) {
			if pvc, ok := obj.(*corev1.PersistentVolumeClaim); ok {
				c.enqueueUnbound(pvc.Namespace)
			}
		},
		UpdateFunc: func(oldObj, newObj interface{}) {
			o, ok1 := oldObj.(*corev1.PersistentVolumeClaim)
			n, ok2 := newObj.(*corev1.PersistentVolumeClaim)
			if ok1 && ok2 && (o.Status.Phase != n.Status.Phase || !labels.Equals(o.Labels, n.Labels)) {
				c.enqueueUnbound(n.Namespace)
			}
		},
	})
	return c
}

// Run watches until ctx is cancelled. It returns nil on cancellation and an error
// only when it could not start. Call it once.
func (c *DynamicGroupController) Run(ctx context.Context) error {
	defer c.deletionQueue.ShutDown()
	return runController(ctx, c.queue, "dynamicgroup", "VolumeGroupSnapshots of driver "+c.driverName, dgWorkers, c.start,
		keyWorker(c.queue, "dynamicgroup: VolumeGroupSnapshot", noRequeue(c.sync), errDGRetry))
}

// start starts event recording and the informers, waits for their caches and starts the workers
// of the deletion queue (dynamicgroupdeletion.go).
func (c *DynamicGroupController) start(ctx context.Context) error {
	c.recorder = startRecorder(ctx, c.kube, c.scheme, c.driverName)

	c.kubeFactory.Start(ctx.Done())
	c.snapFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return fmt.Errorf("dynamicgroup: informer caches did not sync: %w", ctx.Err())
	}
	for range dgDeletionWorkers {
		go wait.UntilWithContext(ctx, keyWorker(c.deletionQueue, "dynamicgroup: deleting VolumeGroupSnapshotContent", noRequeue(c.syncDeletingContent)), time.Second)
	}
	return nil
}

func (c *DynamicGroupController) enqueue(obj interface{}) { enqueueKey(c.queue, "dynamicgroup", obj) }

// enqueueUnbound queues the unbound VolumeGroupSnapshots of namespace ("" = all).
func (c *DynamicGroupController) enqueueUnbound(namespace string) {
	var list []*groupsnapshotv1.VolumeGroupSnapshot
	var err error
	if namespace == "" {
		list, err = c.vgsLister.List(labels.Everything())
	} else {
		list, err = c.vgsLister.VolumeGroupSnapshots(namespace).List(labels.Everything())
	}
	if err != nil {
		glog.Errorf("dynamicgroup: listing VolumeGroupSnapshots: %v", err)
		return
	}
	for _, vgs := range list {
		if !dgIsBound(vgs) {
			c.enqueue(vgs)
		}
	}
}

// sync creates the content of one VolumeGroupSnapshot if it is ours and still
// needs one, and once it is bound and ready gets its members re-checked
// (dynamicgrouprecheck.go); once it is being deleted, removes its content's deletion secret
// (dynamicgroupdeletion.go). It only ever creates group contents, sets a missing class name
// and annotates contents; it never deletes a content.
func (c *DynamicGroupController) sync(ctx context.Context, key string) error {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	vgs, err := c.vgsLister.VolumeGroupSnapshots(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case vgs.DeletionTimestamp != nil:
		return c.dropDeletionSecretOf(ctx, vgs)
	case vgs.Spec.Source.Selector == nil || vgs.Spec.Source.VolumeGroupSnapshotContentName != nil:
		return nil // pre-provisioned (or invalid, which upstream reports)
	case dgIsBound(vgs):
		return c.recheckMembers(ctx, key, vgs)
	}

	class, defaulted, err := c.classFor(vgs)
	if err != nil || class == nil {
		return err
	}

	contentName := upstreamGroupContentPrefix + string(vgs.UID)
	if existing, err := c.contentLister.Get(contentName); err == nil {
		if defaulted && existing.Labels[labelManagedBy] == managedByDriver && existing.Spec.VolumeGroupSnapshotRef.UID == vgs.UID {
			return c.setClassName(ctx, vgs, class.Name)
		}
		glog.V(4).Infof("dynamicgroup: VolumeGroupSnapshot %s: content %s exists", key, contentName)
		return nil
	} else if !apierrors.IsNotFound(err) {
		return err
	}

	pvcs, handles, err := c.selectVolumes(vgs)
	if err != nil {
		return err
	}
	if defaulted {
		upstreamDefault, err := c.upstreamHasDefault(ctx, vgs, pvcs)
		if err != nil {
			return err
		}
		if upstreamDefault {
			return nil
		}
	}

	secret, err := dgSecretRef(class.Parameters, contentName, vgs)
	if err != nil {
		c.recorder.Eventf(vgs, corev1.EventTypeWarning, dgReasonBadSecretParams,
			"VolumeGroupSnapshotClass %s: %v", class.Name, err)
		return fmt.Errorf("class %s: %w", class.Name, err)
	}
	content, err := c.buildContent(vgs, class, contentName, handles, secret)
	if err != nil {
		return err
	}
	_, err = c.snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Create(ctx, content, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
		glog.V(4).Infof("dynamicgroup: VolumeGroupSnapshot %s: content %s already exists", key, contentName)
	case err != nil:
		c.recorder.Eventf(vgs, corev1.EventTypeWarning, dgReasonCreateFailed,
			"Creating VolumeGroupSnapshotContent %s failed: %v", contentName, err)
		return fmt.Errorf("creating VolumeGroupSnapshotContent %s: %w", contentName, err)
	default:
		glog.V(2).Infof("dynamicgroup: VolumeGroupSnapshot %s: created VolumeGroupSnapshotContent %s for %v", key, contentName, handles)
		c.recorder.Eventf(vgs, corev1.EventTypeNormal, dgReasonCreating,
			"Created VolumeGroupSnapshotContent %s for %d volumes; waiting for driver %s to take the group snapshot", contentName, len(handles), c.driverName)
	}
	if defaulted {
		return c.setClassName(ctx, vgs, class.Name)
	}
	return nil
}
