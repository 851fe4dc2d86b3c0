package rig

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// KillMember kills member i's etcd with SIGKILL, as the OOM killer or a crash would: the pod stays,
// and the pod runner restarts its container as the kubelet does (restartPolicy Always, after a
// back-off), on the same data. It returns the killed process id and the container's restart count
// before the kill, for WaitMemberRestarted.
func (s *EtcdStatefulSet) KillMember(ctx context.Context, i int) (pid int, restarts int32, err error) {
	if i < 0 || i >= s.members {
		return 0, 0, fmt.Errorf("rig: no member %d in a cluster of %d", i, s.members)
	}
	pod, err := s.r.Kube.CoreV1().Pods(s.namespace).Get(ctx, s.MemberName(i), metav1.GetOptions{})
	if err != nil {
		return 0, 0, fmt.Errorf("rig: pod of member %s: %w", s.MemberName(i), err)
	}
	cs := etcdContainerStatus(pod)
	if cs == nil || cs.State.Running == nil {
		return 0, 0, fmt.Errorf("rig: container %s of pod %s/%s is not running", EtcdContainerName, s.namespace, pod.Name)
	}
	// The pod runner's container ids are rig://<pid of the process group leader>.
	pid, err = strconv.Atoi(strings.TrimPrefix(cs.ContainerID, "rig://"))
	if err != nil || pid <= 0 {
		return 0, 0, fmt.Errorf("rig: container %s of pod %s/%s has id %q, not rig://<pid>", EtcdContainerName, s.namespace, pod.Name, cs.ContainerID)
	}
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		return 0, 0, fmt.Errorf("rig: kill member %s (process group %d): %w", s.MemberName(i), pid, err)
	}
	s.r.logf("rig: killed etcd member %s (pid %d)", s.MemberName(i), pid)
	return pid, cs.RestartCount, nil
}

// WaitMemberRestarted waits until member i's etcd container has restarted since KillMember (its
// restart count went past restarts) and its pod is Ready again.
func (s *EtcdStatefulSet) WaitMemberRestarted(ctx context.Context, i int, restarts int32) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, stsPoll, stsWaitTimeout, true, func(ctx context.Context) (bool, error) {
		pod, err := s.r.Kube.CoreV1().Pods(s.namespace).Get(ctx, s.MemberName(i), metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		cs := etcdContainerStatus(pod)
		if cs == nil {
			last = "no status of container " + EtcdContainerName
			return false, nil
		}
		last = fmt.Sprintf("restart count %d, running %v, ready %v", cs.RestartCount, cs.State.Running != nil, podReady(pod))
		return cs.RestartCount > restarts && cs.State.Running != nil && podReady(pod), nil
	})
	if err != nil {
		return fmt.Errorf("rig: member %s did not come back: %s: %w", s.MemberName(i), last, err)
	}
	return nil
}

func etcdContainerStatus(pod *v1.Pod) *v1.ContainerStatus {
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == EtcdContainerName {
			return &pod.Status.ContainerStatuses[i]
		}
	}
	return nil
}
