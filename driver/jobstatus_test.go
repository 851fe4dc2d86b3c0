package driver

import (
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// jobOutcome on its own: which reason wins for deadline, backoff and pod-level failures, and what a
// completed Job with a bad verify message amounts to.
func TestJobOutcome(t *testing.T) {
	job := func(conds ...batchv1.JobCondition) *batchv1.Job {
		j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j", Namespace: "ns"}, Spec: batchv1.JobSpec{BackoffLimit: ptrTo[int32](2)}}
		for _, c := range conds {
			c.Status = corev1.ConditionTrue
			j.Status.Conditions = append(j.Status.Conditions, c)
		}
		return j
	}
	older, newer := metav1.NewTime(time.Unix(100, 0)), metav1.NewTime(time.Unix(200, 0))
	crashed := func(name string, at metav1.Time, msg string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", CreationTimestamp: at}, Status: corev1.PodStatus{
			Phase: corev1.PodFailed,
			ContainerStatuses: []corev1.ContainerStatus{{Name: verifyContainer, State: corev1.ContainerState{
				Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Message: msg}}}},
		}}
	}
	evicted := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ev", Namespace: "ns"}, Status: corev1.PodStatus{
		Phase: corev1.PodFailed, Reason: "Evicted", Message: "The node was low on resource: ephemeral-storage."}}
	badResult := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "ok", Namespace: "ns"}, Status: corev1.PodStatus{
		Phase: corev1.PodSucceeded,
		ContainerStatuses: []corev1.ContainerStatus{{Name: verifyContainer, State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Message: "not json"}}}},
	}}
	runningJob := job()
	runningJob.Status.Failed = 2

	cases := []struct {
		name   string
		job    *batchv1.Job
		pods   []*corev1.Pod
		state  jobState
		reason []string
	}{
		{"running, retries left", runningJob, []*corev1.Pod{crashed("p1", older, "x")}, jobRunning, nil},
		{"backoff exhausted: newest pod's message", job(batchv1.JobCondition{Type: batchv1.JobFailed, Reason: batchv1.JobReasonBackoffLimitExceeded}),
			[]*corev1.Pod{crashed("p1", older, "first"), crashed("p2", newer, "snapshot.db: sha256 mismatch")}, jobFailed,
			[]string{"ns/p2", "sha256 mismatch", `"verify"`}},
		{"deadline: the condition first, the pod after", job(batchv1.JobCondition{Type: batchv1.JobFailed, Reason: batchv1.JobReasonDeadlineExceeded, Message: "Job was active longer than specified deadline"}),
			[]*corev1.Pod{crashed("p1", older, "killed")}, jobFailed, []string{"DeadlineExceeded", "longer than specified deadline", "killed"}},
		{"failure target before Failed", job(batchv1.JobCondition{Type: batchv1.JobFailureTarget, Reason: batchv1.JobReasonDeadlineExceeded, Message: "deadline"}),
			nil, jobFailed, []string{"Job ns/j failed", "deadline"}},
		{"eviction", job(batchv1.JobCondition{Type: batchv1.JobFailed, Reason: batchv1.JobReasonBackoffLimitExceeded}),
			[]*corev1.Pod{evicted}, jobFailed, []string{"Evicted", "low on resource"}},
		{"more failed pods than backoffLimit, no condition yet", func() *batchv1.Job { j := job(); j.Status.Failed = 3; return j }(),
			nil, jobFailed, []string{"3 pods failed", "backoffLimit 2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := jobOutcome(tc.job, tc.pods)
			if out.state != tc.state || !hasAll(out.reason, tc.reason...) {
				t.Fatalf("outcome %+v; want state %d with %q", out, tc.state, tc.reason)
			}
		})
	}
	out := jobOutcome(job(batchv1.JobCondition{Type: batchv1.JobComplete}), []*corev1.Pod{badResult})
	if out.state != jobSucceeded || out.result != nil || out.resultErr == nil || !strings.Contains(out.resultErr.Error(), "not json") {
		t.Errorf("complete Job with an unreadable result: %+v", out)
	}
	// The Job controller marks a Job Complete a second or so after its pod succeeded (it batches pod
	// updates); the verify result in the pod is the outcome already.
	goodResult := badResult.DeepCopy()
	goodResult.Status.ContainerStatuses[0].State.Terminated.Message = `{"revision":42,"keys":7,"size":4096,"sha256":"ab"}`
	out = jobOutcome(job(), []*corev1.Pod{crashed("p1", older, "first try"), goodResult})
	if out.state != jobSucceeded || out.result == nil || out.result.Revision != 42 || out.resultErr != nil {
		t.Errorf("running Job whose pod succeeded with a result: %+v; want succeeded with revision 42", out)
	}
	out = jobOutcome(job(), []*corev1.Pod{badResult})
	if out.state != jobRunning {
		t.Errorf("running Job whose pod succeeded with an unreadable result: %+v; want to wait for the Job's Complete", out)
	}
	out = jobOutcome(job(batchv1.JobCondition{Type: batchv1.JobFailed, Reason: batchv1.JobReasonDeadlineExceeded}), []*corev1.Pod{goodResult})
	if out.state != jobFailed {
		t.Errorf("failed Job with a succeeded pod: %+v; want the Job's verdict", out)
	}
	out = jobOutcome(job(batchv1.JobCondition{Type: batchv1.JobComplete}), nil)
	if out.state != jobSucceeded || out.result != nil || out.resultErr != nil {
		t.Errorf("complete Job without pods yet: %+v; want to wait", out)
	}
}

func ptrTo[T any](v T) *T { return &v }
