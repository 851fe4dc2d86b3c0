// Package podrunner stands in for the kubelet in the rig: it registers one Ready node and runs the pods
// bound to it as local processes, writing their status back as the kubelet would.
//
// An image is a host directory of executables (Config.Images); command[0] is looked up by its base
// name there. Volumes are host directories: a PersistentVolumeClaim is its bound PV's CSI volume
// handle, a Secret or ConfigMap is a per-pod directory of files, an emptyDir a per-pod directory. Every
// mount path and the termination message path are rewritten to their host paths wherever they appear
// in command, args and env values, since processes share the host's file system.
package podrunner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// DefaultNodeName is the node the runner registers when Config.NodeName is empty.
const DefaultNodeName = "rig-node"

// hostIP is the address of the node and of every pod: all processes share the host's loopback.
const hostIP = "127.0.0.1"

// Config says which cluster to serve and where images and pod files live.
type Config struct {
	Kube     kubernetes.Interface
	NodeName string            // default DefaultNodeName
	Images   map[string]string // image reference (or reference without tag) -> host directory of executables
	WorkDir  string            // per-pod directories: <WorkDir>/<namespace>_<pod>/ with <container>.log
	Log      io.Writer         // runner events; nil discards them
}

// Run registers the node and runs the pods bound to it until ctx ends. On return every process it
// started has been killed and reaped. It returns an error only if it could not start.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Kube == nil {
		return errors.New("podrunner: Config.Kube is required")
	}
	if cfg.WorkDir == "" {
		return errors.New("podrunner: Config.WorkDir is required")
	}
	if cfg.NodeName == "" {
		cfg.NodeName = DefaultNodeName
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	wd, err := filepath.Abs(cfg.WorkDir)
	if err != nil {
		return fmt.Errorf("podrunner: work dir: %w", err)
	}
	cfg.WorkDir = wd
	if err := os.MkdirAll(wd, 0o755); err != nil {
		return fmt.Errorf("podrunner: work dir: %w", err)
	}

	r := &runner{cfg: cfg, kube: cfg.Kube, ctx: ctx, pods: map[types.UID]*podRun{}}
	if err := r.registerNode(ctx); err != nil {
		return err
	}
	var bg sync.WaitGroup
	bg.Go(func() { r.heartbeat(ctx) })

	factory := informers.NewSharedInformerFactoryWithOptions(cfg.Kube, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.NodeName).String()
		}))
	informer := factory.Core().V1().Pods().Informer()
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    r.onPod,
		UpdateFunc: func(_, obj any) { r.onPod(obj) },
		DeleteFunc: r.onPodDeleted,
	}); err != nil {
		return fmt.Errorf("podrunner: pod informer: %w", err)
	}
	factory.Start(ctx.Done())
	r.logf("node %s: serving pods; images: %v", cfg.NodeName, cfg.Images)

	<-ctx.Done()
	factory.Shutdown()
	r.shutdown()
	bg.Wait()
	r.logf("node %s: stopped", cfg.NodeName)
	return nil
}

// runner is the state of one Run.
type runner struct {
	cfg  Config
	kube kubernetes.Interface
	ctx  context.Context

	mu      sync.Mutex
	pods    map[types.UID]*podRun
	nodeUID types.UID
	closed  bool           // no new goroutines once set
	wg      sync.WaitGroup // pod goroutines
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.cfg.Log, time.Now().Format("15:04:05.000")+" podrunner: "+format+"\n", args...)
}

// spawn runs f on a goroutine that shutdown waits for, unless shutdown has begun. Call with r.mu held.
func (r *runner) spawn(f func()) {
	if r.closed {
		return
	}
	r.wg.Go(f)
}

// shutdown stops every pod's processes (ctx is done, so they are killed at once) and waits for them.
func (r *runner) shutdown() {
	r.mu.Lock()
	r.closed = true
	for _, pr := range r.pods {
		pr.requestKill(0, "", "")
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// podRun is one pod on this node.
type podRun struct {
	uid       types.UID
	namespace string
	name      string
	dir       string // <WorkDir>/<ns>_<pod>

	kill     chan struct{} // closed when the pod must stop
	killOnce sync.Once
	writeMu  sync.Mutex // serialises status writes

	mu           sync.Mutex
	pod          *v1.Pod // latest seen
	state        podState
	grace        time.Duration // termination grace once kill is closed
	finished     bool          // nothing runs and nothing will
	gone         bool          // the pod object was removed from the API
	deleteIssued bool
}

func (pr *podRun) latest() *v1.Pod {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.pod
}

func (pr *podRun) killed() bool {
	select {
	case <-pr.kill:
		return true
	default:
		return false
	}
}

// requestKill asks the pod's processes to stop within grace; reason and message, if given, become the
// pod's (DeadlineExceeded). The first request wins.
func (pr *podRun) requestKill(grace time.Duration, reason, message string) {
	pr.killOnce.Do(func() {
		pr.mu.Lock()
		pr.grace = grace
		if reason != "" {
			pr.state.Reason, pr.state.Message = reason, message
		}
		pr.mu.Unlock()
		close(pr.kill)
	})
}

// update applies f to the pod's state under its lock.
func (pr *podRun) update(f func(st *podState)) {
	pr.mu.Lock()
	f(&pr.state)
	pr.mu.Unlock()
}

func (r *runner) newPodRun(pod *v1.Pod) *podRun {
	pr := &podRun{
		uid:       pod.UID,
		namespace: pod.Namespace,
		name:      pod.Name,
		dir:       filepath.Join(r.cfg.WorkDir, pod.Namespace+"_"+pod.Name),
		kill:      make(chan struct{}),
		pod:       pod,
	}
	initWaiting := "PodInitializing"
	regularWaiting := "ContainerCreating"
	if len(pod.Spec.InitContainers) > 0 {
		regularWaiting = "PodInitializing"
	}
	for _, c := range pod.Spec.InitContainers {
		pr.state.Init = append(pr.state.Init, waitingStatus(c, initWaiting, ""))
	}
	for _, c := range pod.Spec.Containers {
		pr.state.Containers = append(pr.state.Containers, waitingStatus(c, regularWaiting, ""))
	}
	pr.state.StartTime = metav1.Now()
	return pr
}

func waitingStatus(c v1.Container, reason, message string) v1.ContainerStatus {
	return v1.ContainerStatus{
		Name:    c.Name,
		Image:   c.Image,
		State:   v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: reason, Message: message}},
		Started: ptr.To(false),
	}
}

// onPod handles an added or updated pod bound to this node.
func (r *runner) onPod(obj any) {
	pod, ok := obj.(*v1.Pod)
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	pr := r.pods[pod.UID]
	if pr == nil {
		pr = r.newPodRun(pod)
		r.pods[pod.UID] = pr
		switch {
		case pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed:
			// Finished before this runner saw it; there is nothing to run.
			pr.finished = true
		case startedBefore(pod):
			// Its containers ran under an earlier runner whose processes are gone.
			r.spawn(func() { r.abandon(pr) })
		default:
			r.spawn(func() { r.runPod(pr) })
		}
	}
	pr.mu.Lock()
	pr.pod = pod
	finished := pr.finished
	pr.mu.Unlock()
	if pod.DeletionTimestamp != nil {
		pr.requestKill(deletionGrace(pod), "", "")
		if finished {
			r.spawn(func() { r.finishDeletion(pr) })
		}
	}
}

// onPodDeleted handles a pod removed from the API (or moved off this node): its processes stop at once.
func (r *runner) onPodDeleted(obj any) {
	pod, ok := obj.(*v1.Pod)
	if !ok {
		tomb, ok := obj.(cache.DeletedFinalStateUnknown)
		if !ok {
			return
		}
		if pod, ok = tomb.Obj.(*v1.Pod); !ok {
			return
		}
	}
	r.mu.Lock()
	pr := r.pods[pod.UID]
	delete(r.pods, pod.UID)
	r.mu.Unlock()
	if pr == nil {
		return
	}
	pr.mu.Lock()
	pr.gone = true
	finished := pr.finished
	pr.mu.Unlock()
	if finished {
		r.cleanup(pr)
		return
	}
	pr.requestKill(0, "", "")
}

// cleanup removes the pod's volume contents (secrets among them); logs stay.
func (r *runner) cleanup(pr *podRun) {
	if err := os.RemoveAll(filepath.Join(pr.dir, "volumes")); err != nil {
		r.logf("pod %s/%s: remove volumes: %v", pr.namespace, pr.name, err)
	}
}

func deletionGrace(pod *v1.Pod) time.Duration {
	if s := pod.DeletionGracePeriodSeconds; s != nil {
		return time.Duration(*s) * time.Second
	}
	return terminationGrace(pod)
}

func terminationGrace(pod *v1.Pod) time.Duration {
	if s := pod.Spec.TerminationGracePeriodSeconds; s != nil {
		return time.Duration(*s) * time.Second
	}
	return v1.DefaultTerminationGracePeriodSeconds * time.Second
}

// startedBefore reports whether the pod's status shows containers that already ran.
func startedBefore(pod *v1.Pod) bool {
	for _, list := range [][]v1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
		for _, cs := range list {
			if cs.State.Running != nil || cs.State.Terminated != nil || cs.LastTerminationState.Terminated != nil {
				return true
			}
		}
	}
	return false
}

// abandon finishes a pod found running without processes: its running containers are reported lost,
// as the kubelet's status manager does for containers it cannot locate.
func (r *runner) abandon(pr *podRun) {
	pod := pr.latest()
	r.logf("pod %s/%s: found started by an earlier runner; marking it failed", pod.Namespace, pod.Name)
	lost := func(in []v1.ContainerStatus) []v1.ContainerStatus {
		out := cloneStatuses(in)
		for i := range out {
			if out[i].State.Running != nil {
				out[i].State = v1.ContainerState{Terminated: &v1.ContainerStateTerminated{
					ExitCode: 137,
					Reason:   "ContainerStatusUnknown",
					Message:  "The container could not be located when the pod was terminated",
				}}
				out[i].Ready, out[i].Started = false, ptr.To(false)
			}
		}
		return out
	}
	pr.update(func(st *podState) {
		st.Init = lost(pod.Status.InitContainerStatuses)
		st.Containers = lost(pod.Status.ContainerStatuses)
		st.Terminal = true
	})
	r.finish(pr)
}

// runPod runs the pod to its end: volumes, init containers in order, then the containers together.
func (r *runner) runPod(pr *podRun) {
	ctx := r.ctx
	pod := pr.latest()
	r.logf("pod %s/%s: starting", pod.Namespace, pod.Name)
	r.sync(pr)
	if s := pod.Spec.ActiveDeadlineSeconds; s != nil {
		// The deadline counts from the pod's start on the node, as the kubelet's active deadline handler does.
		pr.mu.Lock()
		left := time.Duration(*s)*time.Second - time.Since(pr.state.StartTime.Time)
		pr.mu.Unlock()
		t := time.AfterFunc(left, func() {
			pr.requestKill(terminationGrace(pod), reasonDeadlineExceeded,
				"Pod was active on the node longer than the specified deadline")
		})
		defer t.Stop()
	}

	volumes, ok := r.setup(pr)
	if ok {
		pr.update(func(st *podState) { st.SandboxReady = true })
		for i := range pod.Spec.InitContainers {
			if !r.runContainer(pr, volumes, true, i) {
				ok = false
				break
			}
		}
	}
	if ok {
		pr.update(func(st *podState) {
			for i := range st.Containers {
				if w := st.Containers[i].State.Waiting; w != nil {
					w.Reason = "ContainerCreating"
				}
			}
		})
		var wg sync.WaitGroup
		for i := range pod.Spec.Containers {
			wg.Go(func() { r.runContainer(pr, volumes, false, i) })
		}
		wg.Wait()
	}
	if ctx.Err() != nil {
		return
	}
	pr.update(func(st *podState) { st.Terminal = true })
	r.finish(pr)
}

// finish writes the final status, completes a pending deletion and cleans up after a removed pod.
func (r *runner) finish(pr *podRun) {
	r.sync(pr)
	pr.mu.Lock()
	pr.finished = true
	gone := pr.gone
	pr.mu.Unlock()
	pod := pr.latest()
	r.logf("pod %s/%s: finished", pod.Namespace, pod.Name)
	if gone {
		r.cleanup(pr)
		return
	}
	r.finishDeletion(pr)
}

// finishDeletion removes a terminating pod whose processes have stopped, as the kubelet's status
// manager does: delete with grace period 0, guarded by the pod's UID.
func (r *runner) finishDeletion(pr *podRun) {
	pr.mu.Lock()
	pod := pr.pod
	if pod.DeletionTimestamp == nil || pr.deleteIssued || pr.gone {
		pr.mu.Unlock()
		return
	}
	pr.deleteIssued = true
	pr.mu.Unlock()
	err := r.kube.CoreV1().Pods(pod.Namespace).Delete(r.ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      metav1.NewUIDPreconditions(string(pod.UID)),
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && r.ctx.Err() == nil {
		r.logf("pod %s/%s: finish deletion: %v", pod.Namespace, pod.Name, err)
		pr.mu.Lock()
		pr.deleteIssued = false // the next update of the pod tries again
		pr.mu.Unlock()
		return
	}
	r.logf("pod %s/%s: deleted", pod.Namespace, pod.Name)
}

// setup prepares the pod's volumes, retrying (as the kubelet's volume manager does) until they are
// ready or the pod is stopped.
func (r *runner) setup(pr *podRun) (map[string]string, bool) {
	if err := os.RemoveAll(filepath.Join(pr.dir, "volumes")); err != nil {
		r.logf("pod %s/%s: %v", pr.namespace, pr.name, err)
	}
	if err := os.MkdirAll(pr.dir, 0o755); err != nil {
		r.logf("pod %s/%s: %v", pr.namespace, pr.name, err)
	}
	delay := 500 * time.Millisecond
	for {
		vols, err := r.prepareVolumes(r.ctx, pr.latest(), pr.dir)
		if err == nil {
			return vols, true
		}
		r.logf("pod %s/%s: volumes not ready: %v", pr.namespace, pr.name, err)
		if !r.pause(pr, delay) {
			return nil, false
		}
		delay = min(2*delay, 16*time.Second)
	}
}

// pause waits d unless the pod is stopped first; it reports whether the pod may go on.
func (r *runner) pause(pr *podRun, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-pr.kill:
		return false
	case <-r.ctx.Done():
		return false
	}
}

// slot returns the status of one init container or container; call with pr.mu held.
func (st *podState) slot(init bool, i int) *v1.ContainerStatus {
	if init {
		return &st.Init[i]
	}
	return &st.Containers[i]
}

// sync writes the pod's status from the runner's state, retrying conflicts and transient errors.
func (r *runner) sync(pr *podRun) {
	ctx := r.ctx
	if ctx.Err() != nil {
		return
	}
	pr.writeMu.Lock()
	defer pr.writeMu.Unlock()
	pr.mu.Lock()
	st := pr.state
	st.Init = cloneStatuses(st.Init)
	st.Containers = cloneStatuses(st.Containers)
	pr.mu.Unlock()

	pods := r.kube.CoreV1().Pods(pr.namespace)
	backoff := wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 8, Cap: 5 * time.Second}
	var lastErr error
	err := wait.ExponentialBackoffWithContext(ctx, backoff, func(ctx context.Context) (bool, error) {
		cur, err := pods.Get(ctx, pr.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		if err != nil {
			lastErr = err
			return false, nil
		}
		if cur.UID != pr.uid {
			return true, nil // a new pod with the same name
		}
		status := buildStatus(cur, st, hostIP, metav1.Now())
		if equality.Semantic.DeepEqual(cur.Status, status) {
			return true, nil
		}
		cur.Status = status
		_, err = pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		switch {
		case err == nil || apierrors.IsNotFound(err):
			return true, nil
		case apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsBadRequest(err):
			return false, err
		}
		lastErr = err
		return false, nil
	})
	if err != nil && ctx.Err() == nil {
		if lastErr != nil && wait.Interrupted(err) {
			err = lastErr
		}
		r.logf("pod %s/%s: update status: %v", pr.namespace, pr.name, err)
	}
}
