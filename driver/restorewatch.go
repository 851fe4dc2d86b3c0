package driver

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// restoreWatch keeps informer caches of the restore namespace's Pods, restore Jobs, PVCs and
// StatefulSets, so the command waits on events instead of polling the API.
type restoreWatch struct {
	ns      string
	factory informers.SharedInformerFactory
	jobsF   informers.SharedInformerFactory
	pods    corelisters.PodLister
	pvcs    corelisters.PersistentVolumeClaimLister
	sets    appslisters.StatefulSetLister
	jobs    batchlisters.JobLister
	changed chan struct{}
	stop    chan struct{}
}

// startRestoreWatch starts the caches of namespace ns and waits for them to sync.
func startRestoreWatch(ctx context.Context, kube kubernetes.Interface, ns string) (*restoreWatch, error) {
	w := &restoreWatch{ns: ns, changed: make(chan struct{}, 1), stop: make(chan struct{})}
	w.factory = informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(ns))
	w.jobsF = informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = labels.Set{labelManagedBy: managedByRestore}.String() }))
	notify := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.poke() },
		UpdateFunc: func(any, any) { w.poke() },
		DeleteFunc: func(any) { w.poke() },
	}
	podInf := w.factory.Core().V1().Pods()
	pvcInf := w.factory.Core().V1().PersistentVolumeClaims()
	setInf := w.factory.Apps().V1().StatefulSets()
	jobInf := w.jobsF.Batch().V1().Jobs()
	for _, inf := range []cache.SharedIndexInformer{podInf.Informer(), pvcInf.Informer(), setInf.Informer(), jobInf.Informer()} {
		if _, err := inf.AddEventHandler(notify); err != nil {
			return nil, err
		}
	}
	w.pods, w.pvcs, w.sets, w.jobs = podInf.Lister(), pvcInf.Lister(), setInf.Lister(), jobInf.Lister()
	w.factory.Start(w.stop)
	w.jobsF.Start(w.stop)
	for _, f := range []informers.SharedInformerFactory{w.factory, w.jobsF} {
		for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok {
				w.close()
				return nil, fmt.Errorf("watching %v in namespace %s: cache did not sync: %v", typ, ns, ctx.Err())
			}
		}
	}
	return w, nil
}

func (w *restoreWatch) poke() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *restoreWatch) close() {
	close(w.stop)
	w.factory.Shutdown()
	w.jobsF.Shutdown()
}

// until evaluates cond after every change in the caches until it is done, fails, or timeout passes;
// what names the awaited state in the timeout error.
func (w *restoreWatch) until(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		done, err := cond()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up after %s waiting for %s: %w", timeout, what, ctx.Err())
		case <-w.changed:
		}
	}
}

// podsMounting lists the live pods of the namespace that mount any of the claims.
func (w *restoreWatch) podsMounting(claims map[string]bool) ([]*corev1.Pod, error) {
	all, err := w.pods.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	var out []*corev1.Pod
	for _, pod := range all {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, v := range pod.Spec.Volumes {
			if v.PersistentVolumeClaim != nil && claims[v.PersistentVolumeClaim.ClaimName] {
				out = append(out, pod)
				break
			}
		}
	}
	return out, nil
}

// jobPods returns the pods the Job controller made for job (matched by its uid, so the pods of an
// earlier Job of the same name do not count).
func (w *restoreWatch) jobPods(job *batchv1.Job) ([]*corev1.Pod, error) {
	return w.pods.List(labels.Set{batchv1.ControllerUidLabel: string(job.UID)}.AsSelector())
}

// statefulSet returns the StatefulSet from the cache.
func (w *restoreWatch) statefulSet(name string) (*appsv1.StatefulSet, error) {
	return w.sets.StatefulSets(w.ns).Get(name)
}
