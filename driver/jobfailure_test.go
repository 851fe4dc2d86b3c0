package driver

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// failedPod is a pod of a snapshot Job whose container (an init container for save) exited with code
// and message.
func failedPod(name, container string, code int32, message string) *corev1.Pod {
	term := corev1.ContainerStatus{Name: container, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Message: message}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "etcd-test"}, Status: corev1.PodStatus{Phase: corev1.PodFailed}}
	if container == saveContainer {
		pod.Status.InitContainerStatuses = []corev1.ContainerStatus{term}
	} else {
		pod.Status.InitContainerStatuses = []corev1.ContainerStatus{{Name: saveContainer, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}}}
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{term}
	}
	return pod
}

// TestJobFailureReason checks the final error of a failed Job: ENOSPC in the save says the snapshot
// volume is too small, naming the PVC, both sizes and the parameter to change; another save failure
// names the member saved from; a verify or pod-level failure is left as it is. etcdctl's own words
// are always kept.
func TestJobFailureReason(t *testing.T) {
	rec := &Record{ID: "etcdgs-0123", Namespace: "etcd-test", PVCSize: "8Mi",
		SourceMember: &SourceMember{Name: "main-1", Endpoint: "https://127.0.0.1:2379", DBSize: 40 << 20}}
	// What etcdctl (v3.6+) prints when it cannot write, and when its member goes away.
	enospcMsg := "Error: write /var/lib/etcd-snapshot/snapshot.db.part: no space left on device"
	eofMsg := "Error: could not write snapshot: rpc error: code = Unavailable desc = error reading from server: EOF"
	cases := []struct {
		name string
		pod  *corev1.Pod
		want []string // fragments; nil means the reason is returned unchanged
	}{
		{"volume full", failedPod("p1", saveContainer, 5, enospcMsg),
			[]string{"snapshot volume is too small", "PVC etcd-test/etcdgs-0123 of 8Mi", "database 40Mi", "main-1 (https://127.0.0.1:2379)", paramSnapshotSize, enospcMsg}},
		{"member gone", failedPod("p2", saveContainer, 5, eofMsg),
			[]string{"from etcd member main-1 (https://127.0.0.1:2379) failed", eofMsg}},
		{"verify refused the file", failedPod("p3", verifyContainer, 1, "snapshot.db: sha256 mismatch"), nil},
		{"evicted", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p4", Namespace: "etcd-test"},
			Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted", Message: "node low on disk"}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pods := []*corev1.Pod{tc.pod}
			reason := lastPodFailure(pods)
			got := jobFailureReason(rec, pods, reason)
			if tc.want == nil {
				if got != reason {
					t.Errorf("reason %q became %q", reason, got)
				}
				return
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("reason lacks %q:\n%s", w, got)
				}
			}
		})
	}
	noMember := *rec
	noMember.SourceMember = nil
	pods := []*corev1.Pod{failedPod("p5", saveContainer, 5, enospcMsg)}
	if got := jobFailureReason(&noMember, pods, lastPodFailure(pods)); !strings.Contains(got, "database unknown") {
		t.Errorf("without a source member: %q", got)
	}
}
