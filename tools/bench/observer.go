package main

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// The observer notes when each step of the driver's path is first seen, through informers on the
// objects involved. Container status times in the API have whole seconds only, so the phases use
// these observation times (milliseconds, the bench's clock, which is also the driver's: one machine)
// and the record's own createdAt and readyAt.
const (
	labelSnapshotID        = "snapshot.etcd.io/id" // on the driver's Jobs and pods (driver/enginerecordstore.go)
	beingCreatedAnnotation = "groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-being-created"
	saveContainer          = "save"
	verifyContainer        = "verify"
	observerResyncInterval = 0
	stepBound              = "bound"
	stepReady              = "ready"
	stepBeingCreated       = "being-created"
	stepHandle             = "handle"
	stepCreated            = "created"
	stepSaveRunning        = "save-running"
	stepSaveDone           = "save-done"
	stepVerifyRunning      = "verify-running"
	stepVerifyDone         = "verify-done"
	kindVGS, kindContent   = "vgs", "content"
	kindJob, kindPod       = "job", "pod"
	kindRecord             = "record"
)

type observer struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

func (o *observer) note(kind, name, step string) {
	key := kind + "/" + name + "/" + step
	now := time.Now()
	o.mu.Lock()
	if _, ok := o.seen[key]; !ok {
		o.seen[key] = now
	}
	o.mu.Unlock()
}

// at is when kind/name first showed step (zero if never).
func (o *observer) at(kind, name, step string) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seen[kind+"/"+name+"/"+step]
}

// startObserver runs the informers until ctx ends and returns once they have synced.
func startObserver(ctx context.Context, r *rig.Rig, namespace string) *observer {
	o := &observer{seen: map[string]time.Time{}}
	handler := func(fn func(obj any)) cache.ResourceEventHandler {
		return cache.ResourceEventHandlerFuncs{AddFunc: fn, UpdateFunc: func(_, obj any) { fn(obj) }}
	}
	kf := informers.NewSharedInformerFactoryWithOptions(r.Kube, observerResyncInterval, informers.WithNamespace(namespace))
	kf.Batch().V1().Jobs().Informer().AddEventHandler(handler(func(obj any) {
		if j, ok := obj.(*batchv1.Job); ok && j.Labels[labelSnapshotID] != "" {
			o.note(kindJob, j.Name, stepCreated)
		}
	}))
	kf.Core().V1().Pods().Informer().AddEventHandler(handler(func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok || p.Labels[labelSnapshotID] == "" {
			return
		}
		id := p.Labels[labelSnapshotID]
		o.note(kindPod, id, stepCreated)
		for _, cs := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			running, done := cs.State.Running != nil, cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0
			switch cs.Name {
			case saveContainer:
				if running || done {
					o.note(kindPod, id, stepSaveRunning)
				}
				if done {
					o.note(kindPod, id, stepSaveDone)
				}
			case verifyContainer:
				if running || done {
					o.note(kindPod, id, stepVerifyRunning)
				}
				if done {
					o.note(kindPod, id, stepVerifyDone)
				}
			}
		}
	}))
	mf := informers.NewSharedInformerFactoryWithOptions(r.Kube, observerResyncInterval, informers.WithNamespace(rig.DriverNamespace),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = rig.ManagedByLabel + "=" + rig.ManagedByValue }))
	mf.Core().V1().ConfigMaps().Informer().AddEventHandler(handler(func(obj any) {
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok {
			return
		}
		var rec driver.Record
		if json.Unmarshal([]byte(cm.Data[rig.RecordKey]), &rec) != nil || rec.ID == "" {
			return
		}
		o.note(kindRecord, rec.ID, string(rec.Phase))
	}))
	sf := snapinformers.NewSharedInformerFactory(r.Snap, observerResyncInterval)
	sf.Groupsnapshot().V1().VolumeGroupSnapshots().Informer().AddEventHandler(handler(func(obj any) {
		v, ok := obj.(*groupsnapshotv1.VolumeGroupSnapshot)
		if !ok || v.Namespace != namespace || v.Status == nil {
			return
		}
		if ptr.Deref(v.Status.BoundVolumeGroupSnapshotContentName, "") != "" {
			o.note(kindVGS, v.Name, stepBound)
		}
		if ptr.Deref(v.Status.ReadyToUse, false) {
			o.note(kindVGS, v.Name, stepReady)
		}
	}))
	sf.Groupsnapshot().V1().VolumeGroupSnapshotContents().Informer().AddEventHandler(handler(func(obj any) {
		c, ok := obj.(*groupsnapshotv1.VolumeGroupSnapshotContent)
		if !ok {
			return
		}
		if _, ok := c.Annotations[beingCreatedAnnotation]; ok {
			o.note(kindContent, c.Name, stepBeingCreated)
		}
		if c.Status != nil && ptr.Deref(c.Status.VolumeGroupSnapshotHandle, "") != "" {
			o.note(kindContent, c.Name, stepHandle)
		}
		if c.Status != nil && ptr.Deref(c.Status.ReadyToUse, false) {
			o.note(kindContent, c.Name, stepReady)
		}
	}))
	kf.Start(ctx.Done())
	mf.Start(ctx.Done())
	sf.Start(ctx.Done())
	kf.WaitForCacheSync(ctx.Done())
	mf.WaitForCacheSync(ctx.Done())
	sf.WaitForCacheSync(ctx.Done())
	return o
}

// phase is one step of the driver's path and when it was reached.
type phase struct {
	name string
	at   time.Time
}

// phaseNames are the steps of the driver's path, in order, as tools/README.md's table shows them:
// "content readyToUse" is the csi-snapshotter's part (it learns of the ready record at its next
// Create call), "VGS readyToUse" after it the snapshot-controller's.
var phaseNames = []string{"VGS created", "content bound", "Create called", "Job created", "pod started",
	"save done", "verify done", "record Ready", "content readyToUse", "VGS readyToUse"}

// phases is the driver's path of VolumeGroupSnapshot vgs with record rec, created at begin and seen
// ready at ready. A step never seen has a zero time.
func (o *observer) phases(vgs *groupsnapshotv1.VolumeGroupSnapshot, rec *driver.Record, begin, ready time.Time) []phase {
	var readyAt time.Time
	if rec.ReadyAt != nil {
		readyAt = *rec.ReadyAt
	}
	return []phase{
		{phaseNames[0], begin},
		{phaseNames[1], o.at(kindVGS, vgs.Name, stepBound)},
		{phaseNames[2], rec.CreatedAt},
		{phaseNames[3], o.at(kindJob, rec.ID, stepCreated)},
		{phaseNames[4], o.at(kindPod, rec.ID, stepSaveRunning)},
		{phaseNames[5], o.at(kindPod, rec.ID, stepSaveDone)},
		{phaseNames[6], o.at(kindPod, rec.ID, stepVerifyDone)},
		{phaseNames[7], readyAt},
		{phaseNames[8], o.at(kindContent, ptr.Deref(vgs.Status.BoundVolumeGroupSnapshotContentName, ""), stepReady)},
		{phaseNames[9], ready},
	}
}
