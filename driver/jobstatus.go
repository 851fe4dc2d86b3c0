package driver

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// Reading a snapshot Job's outcome from its conditions and its pods' statuses; no API calls here.

// jobState is what a snapshot Job amounts to.
type jobState int

const (
	jobRunning jobState = iota
	jobSucceeded
	jobFailed
)

// outcome is the reading of a Job and its pods.
type outcome struct {
	state     jobState
	result    *VerifyResult // jobSucceeded with a readable result
	resultErr error         // jobSucceeded with an unreadable result
	reason    string        // jobFailed
}

// jobOutcome reads a Job's conditions and its pods' statuses. A Job counts as succeeded on its
// Complete condition or, before that, once a pod succeeded with a readable verify result; as failed
// on its Failed (or FailureTarget) condition, or once more pods failed than backoffLimit allows.
func jobOutcome(job *batchv1.Job, pods []*corev1.Pod) outcome {
	if jobCondition(job, batchv1.JobComplete) != nil {
		res, err := verifyResultOf(pods)
		return outcome{state: jobSucceeded, result: res, resultErr: err}
	}
	cond := jobCondition(job, batchv1.JobFailed)
	if cond == nil {
		cond = jobCondition(job, batchv1.JobFailureTarget)
	}
	limit := int32(6) // the API default
	if job.Spec.BackoffLimit != nil {
		limit = *job.Spec.BackoffLimit
	}
	if cond == nil {
		// The Job controller batches pod updates and marks the Job Complete about a second after its
		// pod succeeded; the verify result in that pod is the snapshot's outcome already. An
		// unreadable one waits for Complete, whose handling names it.
		if res, err := verifyResultOf(pods); res != nil && err == nil {
			return outcome{state: jobSucceeded, result: res}
		}
	}
	if cond == nil && job.Status.Failed <= limit {
		return outcome{state: jobRunning}
	}
	return outcome{state: jobFailed, reason: failureReason(job, cond, limit, pods)}
}

func jobCondition(job *batchv1.Job, t batchv1.JobConditionType) *batchv1.JobCondition {
	for i := range job.Status.Conditions {
		if c := &job.Status.Conditions[i]; c.Type == t && c.Status == corev1.ConditionTrue {
			return c
		}
	}
	return nil
}

// verifyResultOf finds the verify result in the termination message of the succeeded pod's verify
// container. nil, nil means no pod shows it yet.
func verifyResultOf(pods []*corev1.Pod) (*VerifyResult, error) {
	pod, msg, found := resultMessage(pods, verifyContainer)
	if !found {
		return nil, nil
	}
	if msg == "" {
		return nil, fmt.Errorf("pod %s/%s: container %q succeeded but left no result in its termination message", pod.Namespace, pod.Name, verifyContainer)
	}
	res := &VerifyResult{}
	if err := json.Unmarshal([]byte(msg), res); err != nil {
		return nil, fmt.Errorf("pod %s/%s: container %q reported an unreadable result %q: %v", pod.Namespace, pod.Name, verifyContainer, truncate(msg, 256), err)
	}
	if res.Size <= 0 || res.SHA256 == "" {
		return nil, fmt.Errorf("pod %s/%s: container %q reported an incomplete result %q", pod.Namespace, pod.Name, verifyContainer, truncate(msg, 256))
	}
	return res, nil
}

// resultMessage finds the newest succeeded pod whose container exited 0 and returns its termination
// message (the driver's steps write their JSON result there); found is false when no pod shows one.
func resultMessage(pods []*corev1.Pod, container string) (pod *corev1.Pod, msg string, found bool) {
	for _, pod := range newestFirst(pods) {
		if pod.Status.Phase != corev1.PodSucceeded {
			continue
		}
		for _, cs := range pod.Status.ContainerStatuses {
			if t := cs.State.Terminated; cs.Name == container && t != nil && t.ExitCode == 0 {
				return pod, strings.TrimSpace(t.Message), true
			}
		}
	}
	return nil, "", false
}

// failureReason says why a Job failed: the failing container's termination message when the pods
// simply failed, the Job condition (deadline, ...) otherwise, with the last pod failure appended.
func failureReason(job *batchv1.Job, cond *batchv1.JobCondition, limit int32, pods []*corev1.Pod) string {
	podReason := lastPodFailure(pods)
	condText := fmt.Sprintf("%d pods failed, more than backoffLimit %d", job.Status.Failed, limit)
	if cond != nil {
		condText = strings.TrimSpace(cond.Reason + ": " + cond.Message)
	}
	switch {
	case podReason == "":
		return fmt.Sprintf("Job %s/%s failed: %s", job.Namespace, job.Name, condText)
	case cond == nil || cond.Reason == batchv1.JobReasonBackoffLimitExceeded:
		return podReason
	default:
		return fmt.Sprintf("Job %s/%s failed: %s; last pod failure: %s", job.Namespace, job.Name, condText, podReason)
	}
}

// lastPodFailure describes the newest pod failure: a container that exited non-zero (its termination
// message, which is the log tail for crashes) or a pod-level failure such as an eviction.
func lastPodFailure(pods []*corev1.Pod) string {
	_, msg := lastPodFailureOf(pods)
	return msg
}

// lastPodFailureOf is lastPodFailure with the name of the container that failed ("" for a pod-level
// failure or none).
func lastPodFailureOf(pods []*corev1.Pod) (container, msg string) {
	for _, pod := range newestFirst(pods) {
		statuses := append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
		for _, cs := range statuses {
			t := cs.State.Terminated
			if t == nil || t.ExitCode == 0 {
				continue
			}
			msg := strings.TrimSpace(t.Message)
			if msg == "" {
				msg = t.Reason
			}
			return cs.Name, fmt.Sprintf("pod %s/%s: container %q exited with code %d: %s", pod.Namespace, pod.Name, cs.Name, t.ExitCode, msg)
		}
		if pod.Status.Phase == corev1.PodFailed && (pod.Status.Reason != "" || pod.Status.Message != "") {
			return "", fmt.Sprintf("pod %s/%s failed: %s", pod.Namespace, pod.Name, strings.TrimSpace(pod.Status.Reason+": "+pod.Status.Message))
		}
	}
	return "", ""
}

// newestFirst orders pods by creation time, newest first (name breaks ties) without touching the cache.
func newestFirst(pods []*corev1.Pod) []*corev1.Pod {
	out := append([]*corev1.Pod(nil), pods...)
	sort.SliceStable(out, func(i, j int) bool {
		ti, tj := out[i].CreationTimestamp, out[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return tj.Before(&ti)
		}
		return out[i].Name > out[j].Name
	})
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// saveFinished reports whether `etcdctl snapshot save` exited 0 in some pod of the Job, i.e. the
// snapshot file is on the snapshot PVC. etcdctl renames its ".part" file into place only once the
// transfer is complete, so a finished save never leaves a torn file behind.
func saveFinished(pods []*corev1.Pod) bool {
	for _, pod := range pods {
		for _, cs := range pod.Status.InitContainerStatuses {
			if t := cs.State.Terminated; cs.Name == saveContainer && t != nil && t.ExitCode == 0 {
				return true
			}
		}
	}
	return false
}

// isCut reports whether rec's snapshot is cut in the CSI sense: its file exists. Ready records are;
// a Running one is once its save container has succeeded (verification is the processing after the
// cut that CSI reports as ready_to_use=false); Pending and Failed ones are not. It reads the pod cache.
func (e *Engine) isCut(rec *Record) bool {
	switch rec.Phase {
	case PhaseReady:
		return true
	case PhaseRunning:
		return saveFinished(e.podsOf(rec.Namespace, rec.ID))
	}
	return false
}
