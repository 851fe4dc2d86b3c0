package podrunner

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Limits of the kubelet (pkg/kubelet/container/runtime.go): a termination message file is read up to
// its last 4 KiB; the fallback from the logs keeps at most the last 80 lines and 2 KiB of them.
const (
	maxTerminationMessageLength    = 4 * 1024
	maxTerminationMessageLogLength = 2 * 1024
	maxTerminationMessageLogLines  = 80
	// maxPodTerminationMessageLogLength is shared by all containers of a pod (status manager).
	maxPodTerminationMessageLogLength = 12 * 1024
)

// Condition reasons the kubelet writes (pkg/kubelet/status/generate.go).
const (
	reasonPodCompleted             = "PodCompleted"
	reasonPodFailed                = "PodFailed"
	reasonContainersNotReady       = "ContainersNotReady"
	reasonContainersNotInitialized = "ContainersNotInitialized"
	reasonDeadlineExceeded         = "DeadlineExceeded"
)

// kubeletConditions are the pod condition types the kubelet owns; others (DisruptionTarget, readiness
// gates) belong to other writers and are kept as found.
var kubeletConditions = map[v1.PodConditionType]bool{
	v1.PodScheduled:              true,
	v1.PodReadyToStartContainers: true,
	v1.PodInitialized:            true,
	v1.ContainersReady:           true,
	v1.PodReady:                  true,
}

// podState is everything the runner knows about one pod that its status is derived from.
type podState struct {
	Init         []v1.ContainerStatus // one per spec.initContainers, in order
	Containers   []v1.ContainerStatus // one per spec.containers, in order
	SandboxReady bool                 // volumes are in place, containers may start
	Terminal     bool                 // the runner is done with the pod: nothing runs or will run
	Reason       string               // pod-level reason, e.g. DeadlineExceeded
	Message      string
	StartTime    metav1.Time
}

// buildStatus returns the status to write: the server's status with every kubelet-owned field
// replaced from st, the way the kubelet's status manager merges (mergePodStatus).
func buildStatus(pod *v1.Pod, st podState, hostIP string, now metav1.Time) v1.PodStatus {
	old := pod.Status
	s := *old.DeepCopy()
	phase := computePhase(&pod.Spec, st.Init, st.Containers, st.Terminal)
	if st.Terminal && st.Reason == reasonDeadlineExceeded {
		phase = v1.PodFailed
	}
	s.ObservedGeneration = pod.Generation
	s.Phase = phase
	s.Reason = st.Reason
	s.Message = st.Message
	s.HostIP = hostIP
	s.HostIPs = []v1.HostIP{{IP: hostIP}}
	if st.SandboxReady {
		s.PodIP = hostIP
		s.PodIPs = []v1.PodIP{{IP: hostIP}}
	}
	if s.StartTime == nil || s.StartTime.IsZero() {
		t := st.StartTime
		s.StartTime = &t
	}
	s.InitContainerStatuses = cloneStatuses(st.Init)
	s.ContainerStatuses = cloneStatuses(st.Containers)

	ours := generateConditions(pod, phase, st)
	var conds []v1.PodCondition
	for _, c := range old.Conditions {
		if !kubeletConditions[c.Type] {
			conds = append(conds, c)
		}
	}
	for _, c := range ours {
		c.ObservedGeneration = pod.Generation
		c.LastTransitionTime = now
		for _, o := range old.Conditions {
			if o.Type == c.Type && o.Status == c.Status {
				c.LastTransitionTime = o.LastTransitionTime
			}
		}
		conds = append(conds, c)
	}
	s.Conditions = conds
	normalizeStatus(pod, &s)
	return s
}

// normalizeStatus cuts times to the second precision the API server stores and each termination
// message to the per-container share of 12 KiB, as the kubelet's status manager does, so that a status
// read back compares equal to the one written.
func normalizeStatus(pod *v1.Pod, s *v1.PodStatus) {
	perContainer := maxPodTerminationMessageLogLength
	if n := len(pod.Spec.Containers) + len(pod.Spec.InitContainers); n > 0 {
		perContainer /= n
	}
	state := func(c *v1.ContainerState) {
		if c.Running != nil {
			c.Running.StartedAt = c.Running.StartedAt.Rfc3339Copy()
		}
		if t := c.Terminated; t != nil {
			t.StartedAt = t.StartedAt.Rfc3339Copy()
			t.FinishedAt = t.FinishedAt.Rfc3339Copy()
			if len(t.Message) > perContainer {
				t.Message = t.Message[:perContainer]
			}
		}
	}
	if s.StartTime != nil {
		t := s.StartTime.Rfc3339Copy()
		s.StartTime = &t
	}
	for i := range s.Conditions {
		s.Conditions[i].LastProbeTime = s.Conditions[i].LastProbeTime.Rfc3339Copy()
		s.Conditions[i].LastTransitionTime = s.Conditions[i].LastTransitionTime.Rfc3339Copy()
	}
	for _, list := range [][]v1.ContainerStatus{s.InitContainerStatuses, s.ContainerStatuses} {
		for i := range list {
			state(&list[i].State)
			state(&list[i].LastTerminationState)
		}
	}
}

func cloneStatuses(in []v1.ContainerStatus) []v1.ContainerStatus {
	if in == nil {
		return nil
	}
	out := make([]v1.ContainerStatus, len(in))
	for i := range in {
		in[i].DeepCopyInto(&out[i])
	}
	return out
}

// computePhase follows the kubelet's getPhase (pkg/kubelet/kubelet_pods.go) for pods without
// restartable init containers; terminal is the kubelet's podIsTerminal, and a terminal pod that would
// still count as pending or running is failed, as the status manager's TerminatePod does.
func computePhase(spec *v1.PodSpec, init, containers []v1.ContainerStatus, terminal bool) v1.PodPhase {
	pendingInit, failedInit := 0, 0
	for _, cs := range init {
		switch {
		case cs.State.Terminated != nil:
			if cs.State.Terminated.ExitCode != 0 {
				failedInit++
			}
		case cs.State.Waiting != nil && cs.LastTerminationState.Terminated != nil:
			if cs.LastTerminationState.Terminated.ExitCode != 0 {
				failedInit++
			}
		default:
			pendingInit++
		}
	}
	if len(init) < len(spec.InitContainers) {
		pendingInit += len(spec.InitContainers) - len(init)
	}
	if failedInit > 0 && spec.RestartPolicy == v1.RestartPolicyNever {
		return v1.PodFailed
	}

	unknown, running, waiting, stopped, succeeded := 0, 0, 0, 0, 0
	if len(containers) < len(spec.Containers) {
		unknown = len(spec.Containers) - len(containers)
	}
	for _, cs := range containers {
		switch {
		case cs.State.Running != nil:
			running++
		case cs.State.Terminated != nil:
			stopped++
			if cs.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case cs.State.Waiting != nil && cs.LastTerminationState.Terminated != nil:
			stopped++
		case cs.State.Waiting != nil:
			waiting++
		default:
			unknown++
		}
	}

	var phase v1.PodPhase
	switch {
	case pendingInit > 0 || waiting > 0:
		phase = v1.PodPending
	case running > 0 && unknown == 0:
		phase = v1.PodRunning
	case running == 0 && stopped > 0 && unknown == 0:
		switch {
		case terminal && stopped == succeeded:
			phase = v1.PodSucceeded
		case terminal:
			phase = v1.PodFailed
		case spec.RestartPolicy == v1.RestartPolicyAlways:
			phase = v1.PodRunning
		case stopped == succeeded:
			phase = v1.PodSucceeded
		case spec.RestartPolicy == v1.RestartPolicyNever:
			phase = v1.PodFailed
		default:
			phase = v1.PodRunning
		}
	default:
		phase = v1.PodPending
	}
	if terminal && (phase == v1.PodPending || phase == v1.PodRunning) {
		phase = v1.PodFailed
	}
	return phase
}

// generateConditions mirrors pkg/kubelet/status/generate.go for pods without readiness probes: a
// running container is ready.
func generateConditions(pod *v1.Pod, phase v1.PodPhase, st podState) []v1.PodCondition {
	sandbox := v1.PodCondition{Type: v1.PodReadyToStartContainers, Status: v1.ConditionTrue}
	if !st.SandboxReady || st.Terminal {
		sandbox.Status = v1.ConditionFalse
	}

	initialized := v1.PodCondition{Type: v1.PodInitialized, Status: v1.ConditionTrue}
	var incomplete []string
	for i, c := range pod.Spec.InitContainers {
		if i >= len(st.Init) || !st.Init[i].Ready {
			incomplete = append(incomplete, c.Name)
		}
	}
	anyStarted := false
	for _, cs := range st.Containers {
		if cs.State.Waiting == nil || cs.LastTerminationState.Terminated != nil {
			anyStarted = true
		}
	}
	switch {
	case phase == v1.PodSucceeded:
		initialized.Reason = reasonPodCompleted
	case anyStarted:
	case len(incomplete) > 0:
		initialized.Status = v1.ConditionFalse
		initialized.Reason = reasonContainersNotInitialized
		initialized.Message = fmt.Sprintf("containers with incomplete status: %v", incomplete)
	}

	containersReady := v1.PodCondition{Type: v1.ContainersReady, Status: v1.ConditionTrue}
	switch phase {
	case v1.PodSucceeded:
		containersReady.Status, containersReady.Reason = v1.ConditionFalse, reasonPodCompleted
	case v1.PodFailed:
		containersReady.Status, containersReady.Reason = v1.ConditionFalse, reasonPodFailed
	default:
		var unready []string
		for i, c := range pod.Spec.Containers {
			if i >= len(st.Containers) || !st.Containers[i].Ready {
				unready = append(unready, c.Name)
			}
		}
		if len(unready) > 0 {
			containersReady.Status = v1.ConditionFalse
			containersReady.Reason = reasonContainersNotReady
			containersReady.Message = fmt.Sprintf("containers with unready status: %v", unready)
		}
	}

	ready := containersReady
	ready.Type = v1.PodReady
	if ready.Status == v1.ConditionTrue {
		for _, g := range pod.Spec.ReadinessGates {
			found := false
			for _, c := range pod.Status.Conditions {
				if c.Type == g.ConditionType && c.Status == v1.ConditionTrue {
					found = true
				}
			}
			if !found {
				ready.Status = v1.ConditionFalse
				ready.Reason = "ReadinessGatesNotReady"
				ready.Message = fmt.Sprintf("the status of pod readiness gate %q is not \"True\"", g.ConditionType)
				break
			}
		}
	}

	return []v1.PodCondition{
		{Type: v1.PodScheduled, Status: v1.ConditionTrue},
		sandbox, initialized, containersReady, ready,
	}
}

// exitReason is the reason the kubelet reports for a container that exited by itself.
func exitReason(code int32) string {
	if code == 0 {
		return "Completed"
	}
	return "Error"
}

// terminationMessage is the message of a terminated container as the kubelet computes it
// (getTerminationMessage in pkg/kubelet/kuberuntime): the last 4 KiB of the termination message file;
// if that is empty or missing and the policy is FallbackToLogsOnError and the container failed, the
// tail of its output.
func terminationMessage(policy v1.TerminationMessagePolicy, exitCode int32, file []byte, fileErr error, output func() []byte) string {
	fallback := policy == v1.TerminationMessageFallbackToLogsOnError && exitCode != 0
	if fileErr != nil {
		if !errors.Is(fileErr, fs.ErrNotExist) {
			return fmt.Sprintf("Error on reading termination log: %v", fileErr)
		}
		if !fallback {
			return ""
		}
		return logTail(output())
	}
	if len(file) > 0 || !fallback {
		return string(tailBytes(file, maxTerminationMessageLength))
	}
	return logTail(output())
}

// tailBytes returns at most the last max bytes of b.
func tailBytes(b []byte, max int) []byte {
	if len(b) <= max {
		return b
	}
	return b[len(b)-max:]
}

// logTail keeps the last 80 lines of out, then at most their last 2 KiB, as the kubelet's fallback does.
func logTail(out []byte) string {
	// A trailing newline ends the last line; it does not start another one.
	body := bytes.TrimSuffix(out, []byte("\n"))
	lines := 0
	start := 0
	for i := len(body) - 1; i >= 0; i-- {
		if body[i] == '\n' {
			lines++
			if lines == maxTerminationMessageLogLines {
				start = i + 1
				break
			}
		}
	}
	return string(tailBytes(out[start:], maxTerminationMessageLogLength))
}
