package podrunner

import (
	"context"
	"fmt"
	"runtime"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Heartbeats as the kubelet sends them: the node lease (kube-node-lease/<node>) lasts 40s and is
// renewed every 10s; the node status is posted at the same period so the node lifecycle controller
// sees a fresh Ready condition as well (its default grace period is 50s).
const (
	leaseNamespace       = "kube-node-lease"
	leaseDurationSeconds = 40
	heartbeatPeriod      = 10 * time.Second
	// kubeletVersion is reported in nodeInfo; it matches the Kubernetes release the rig runs.
	kubeletVersion = "v1.37.2"
)

// nodeAllocatable is what the node offers the scheduler: ample for any test workload.
func nodeAllocatable() v1.ResourceList {
	return v1.ResourceList{
		v1.ResourceCPU:              resource.MustParse("16"),
		v1.ResourceMemory:           resource.MustParse("64Gi"),
		v1.ResourcePods:             resource.MustParse("110"),
		v1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
}

// nodeStatus is the status the runner posts; conditions keep their transition time from old.
func nodeStatus(old *v1.NodeStatus, nodeName string, now metav1.Time) v1.NodeStatus {
	conds := []v1.NodeCondition{
		{Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "KubeletReady", Message: "rig pod runner is posting ready status"},
		{Type: v1.NodeMemoryPressure, Status: v1.ConditionFalse, Reason: "KubeletHasSufficientMemory", Message: "kubelet has sufficient memory available"},
		{Type: v1.NodeDiskPressure, Status: v1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", Message: "kubelet has no disk pressure"},
		{Type: v1.NodePIDPressure, Status: v1.ConditionFalse, Reason: "KubeletHasSufficientPID", Message: "kubelet has sufficient PID available"},
	}
	for i := range conds {
		conds[i].LastHeartbeatTime = now
		conds[i].LastTransitionTime = now
		if old == nil {
			continue
		}
		for _, o := range old.Conditions {
			if o.Type == conds[i].Type && o.Status == conds[i].Status && !o.LastTransitionTime.IsZero() {
				conds[i].LastTransitionTime = o.LastTransitionTime
			}
		}
	}
	return v1.NodeStatus{
		Capacity:    nodeAllocatable(),
		Allocatable: nodeAllocatable(),
		Phase:       v1.NodeRunning,
		Conditions:  conds,
		Addresses: []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: hostIP},
			{Type: v1.NodeHostName, Address: nodeName},
		},
		NodeInfo: v1.NodeSystemInfo{
			MachineID:               "rig-" + nodeName,
			SystemUUID:              "rig-" + nodeName,
			BootID:                  "rig-" + nodeName,
			KernelVersion:           "rig",
			OSImage:                 "etcd-snapshot-driver rig",
			ContainerRuntimeVersion: "rig://podrunner",
			KubeletVersion:          kubeletVersion,
			OperatingSystem:         runtime.GOOS,
			Architecture:            runtime.GOARCH,
		},
	}
}

// newNode is the Node object the runner registers.
func newNode(name string) *v1.Node {
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				"kubernetes.io/hostname": name,
				"kubernetes.io/os":       runtime.GOOS,
				"kubernetes.io/arch":     runtime.GOARCH,
			},
		},
		Status: nodeStatus(nil, name, metav1.Now()),
	}
}

// registerNode creates the Node, or takes over an existing one, posts its status and renews its lease.
func (r *runner) registerNode(ctx context.Context) error {
	name := r.cfg.NodeName
	created, err := r.kube.CoreV1().Nodes().Create(ctx, newNode(name), metav1.CreateOptions{})
	switch {
	case err == nil:
		r.setNodeUID(created)
		r.logf("node %s registered", name)
	case apierrors.IsAlreadyExists(err):
		r.logf("node %s already registered; taking it over", name)
	default:
		return fmt.Errorf("podrunner: register node %s: %w", name, err)
	}
	if err := r.postNodeStatus(ctx); err != nil {
		return fmt.Errorf("podrunner: node %s status: %w", name, err)
	}
	if err := r.renewLease(ctx); err != nil {
		r.logf("node %s lease: %v (retrying every %s)", name, err, heartbeatPeriod)
	}
	return nil
}

func (r *runner) setNodeUID(n *v1.Node) {
	r.mu.Lock()
	r.nodeUID = n.UID
	r.mu.Unlock()
}

// heartbeat keeps the lease and the Ready condition fresh until ctx ends.
func (r *runner) heartbeat(ctx context.Context) {
	t := time.NewTicker(heartbeatPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.renewLease(ctx); err != nil && ctx.Err() == nil {
			r.logf("node %s lease: %v", r.cfg.NodeName, err)
		}
		if err := r.postNodeStatus(ctx); err != nil && ctx.Err() == nil {
			r.logf("node %s status: %v", r.cfg.NodeName, err)
		}
	}
}

// postNodeStatus writes a fresh status, re-creating the Node if someone deleted it.
func (r *runner) postNodeStatus(ctx context.Context) error {
	nodes := r.kube.CoreV1().Nodes()
	n, err := nodes.Get(ctx, r.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		n, err = nodes.Create(ctx, newNode(r.cfg.NodeName), metav1.CreateOptions{})
		if err == nil {
			r.setNodeUID(n)
			r.logf("node %s was deleted; registered it again", r.cfg.NodeName)
		}
		return err
	}
	if err != nil {
		return err
	}
	r.setNodeUID(n)
	n.Status = nodeStatus(&n.Status, r.cfg.NodeName, metav1.Now())
	_, err = nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{})
	return err
}

// renewLease creates or renews the node lease, owned by the Node as the kubelet's lease is.
func (r *runner) renewLease(ctx context.Context) error {
	leases := r.kube.CoordinationV1().Leases(leaseNamespace)
	now := metav1.NowMicro()
	l, err := leases.Get(ctx, r.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: r.cfg.NodeName, Namespace: leaseNamespace},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(r.cfg.NodeName),
				LeaseDurationSeconds: ptr.To[int32](leaseDurationSeconds),
				RenewTime:            &now,
			},
		}
		r.mu.Lock()
		uid := r.nodeUID
		r.mu.Unlock()
		if uid != "" {
			l.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: r.cfg.NodeName, UID: uid}}
		}
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.HolderIdentity = ptr.To(r.cfg.NodeName)
	l.Spec.LeaseDurationSeconds = ptr.To[int32](leaseDurationSeconds)
	l.Spec.RenewTime = &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}
