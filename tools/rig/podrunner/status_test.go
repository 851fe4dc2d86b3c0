package podrunner

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func waiting(name, reason string) v1.ContainerStatus {
	return v1.ContainerStatus{Name: name, State: v1.ContainerState{Waiting: &v1.ContainerStateWaiting{Reason: reason}}}
}

// running is a running container; a running init container is not ready yet, as with the kubelet.
func running(name string, init bool) v1.ContainerStatus {
	return v1.ContainerStatus{Name: name, Ready: !init, State: v1.ContainerState{Running: &v1.ContainerStateRunning{}}}
}

func exited(name string, code int32, init bool) v1.ContainerStatus {
	return v1.ContainerStatus{Name: name, Ready: init && code == 0,
		State: v1.ContainerState{Terminated: &v1.ContainerStateTerminated{ExitCode: code, Reason: exitReason(code)}}}
}

func crashLooping(name string, code int32) v1.ContainerStatus {
	cs := waiting(name, "CrashLoopBackOff")
	cs.LastTerminationState = exited(name, code, false).State
	return cs
}

func jobPod(policy v1.RestartPolicy, inits ...string) *v1.Pod {
	p := &v1.Pod{Spec: v1.PodSpec{RestartPolicy: policy, Containers: []v1.Container{{Name: "verify"}}}}
	for _, n := range inits {
		p.Spec.InitContainers = append(p.Spec.InitContainers, v1.Container{Name: n})
	}
	return p
}

func TestComputePhase(t *testing.T) {
	never, onFailure, always := v1.RestartPolicyNever, v1.RestartPolicyOnFailure, v1.RestartPolicyAlways
	cases := []struct {
		name       string
		policy     v1.RestartPolicy
		init, main []v1.ContainerStatus
		terminal   bool
		want       v1.PodPhase
	}{
		{"nothing started", never, []v1.ContainerStatus{waiting("save", "PodInitializing")}, []v1.ContainerStatus{waiting("verify", "PodInitializing")}, false, v1.PodPending},
		{"init running", never, []v1.ContainerStatus{running("save", true)}, []v1.ContainerStatus{waiting("verify", "PodInitializing")}, false, v1.PodPending},
		{"init failed, never", never, []v1.ContainerStatus{exited("save", 1, true)}, []v1.ContainerStatus{waiting("verify", "PodInitializing")}, false, v1.PodFailed},
		{"init failed, on failure restarts", onFailure, []v1.ContainerStatus{crashLooping("save", 1)}, []v1.ContainerStatus{waiting("verify", "PodInitializing")}, false, v1.PodPending},
		{"init done, container creating", never, []v1.ContainerStatus{exited("save", 0, true)}, []v1.ContainerStatus{waiting("verify", "ContainerCreating")}, false, v1.PodPending},
		{"container running", never, []v1.ContainerStatus{exited("save", 0, true)}, []v1.ContainerStatus{running("verify", false)}, false, v1.PodRunning},
		{"container succeeded", never, []v1.ContainerStatus{exited("save", 0, true)}, []v1.ContainerStatus{exited("verify", 0, false)}, true, v1.PodSucceeded},
		{"container failed, never", never, []v1.ContainerStatus{exited("save", 0, true)}, []v1.ContainerStatus{exited("verify", 2, false)}, true, v1.PodFailed},
		{"container failed, on failure restarting", onFailure, nil, []v1.ContainerStatus{crashLooping("verify", 2)}, false, v1.PodRunning},
		{"container succeeded, always", always, nil, []v1.ContainerStatus{exited("verify", 0, false)}, false, v1.PodRunning},
		{"killed while running", never, nil, []v1.ContainerStatus{exited("verify", 137, false)}, true, v1.PodFailed},
		{"deleted before start", never, []v1.ContainerStatus{waiting("save", "PodInitializing")}, []v1.ContainerStatus{waiting("verify", "PodInitializing")}, true, v1.PodFailed},
		{"missing container status", never, nil, nil, false, v1.PodPending},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var inits []string
			for _, c := range tc.init {
				inits = append(inits, c.Name)
			}
			pod := jobPod(tc.policy, inits...)
			if got := computePhase(&pod.Spec, tc.init, tc.main, tc.terminal); got != tc.want {
				t.Errorf("phase = %s, want %s", got, tc.want)
			}
		})
	}
}

func condition(s v1.PodStatus, typ v1.PodConditionType) *v1.PodCondition {
	for i := range s.Conditions {
		if s.Conditions[i].Type == typ {
			return &s.Conditions[i]
		}
	}
	return nil
}

func TestBuildStatusConditions(t *testing.T) {
	type want struct {
		status v1.ConditionStatus
		reason string
	}
	cases := []struct {
		name  string
		st    podState
		phase v1.PodPhase
		conds map[v1.PodConditionType]want
	}{
		{
			name:  "initializing",
			st:    podState{SandboxReady: true, Init: []v1.ContainerStatus{running("save", true)}, Containers: []v1.ContainerStatus{waiting("verify", "PodInitializing")}},
			phase: v1.PodPending,
			conds: map[v1.PodConditionType]want{
				v1.PodScheduled:              {v1.ConditionTrue, ""},
				v1.PodReadyToStartContainers: {v1.ConditionTrue, ""},
				v1.PodInitialized:            {v1.ConditionFalse, reasonContainersNotInitialized},
				v1.ContainersReady:           {v1.ConditionFalse, reasonContainersNotReady},
				v1.PodReady:                  {v1.ConditionFalse, reasonContainersNotReady},
			},
		},
		{
			name:  "running",
			st:    podState{SandboxReady: true, Init: []v1.ContainerStatus{exited("save", 0, true)}, Containers: []v1.ContainerStatus{running("verify", false)}},
			phase: v1.PodRunning,
			conds: map[v1.PodConditionType]want{
				v1.PodInitialized:  {v1.ConditionTrue, ""},
				v1.ContainersReady: {v1.ConditionTrue, ""},
				v1.PodReady:        {v1.ConditionTrue, ""},
			},
		},
		{
			name:  "succeeded",
			st:    podState{SandboxReady: true, Terminal: true, Init: []v1.ContainerStatus{exited("save", 0, true)}, Containers: []v1.ContainerStatus{exited("verify", 0, false)}},
			phase: v1.PodSucceeded,
			conds: map[v1.PodConditionType]want{
				v1.PodReadyToStartContainers: {v1.ConditionFalse, ""},
				v1.PodInitialized:            {v1.ConditionTrue, reasonPodCompleted},
				v1.ContainersReady:           {v1.ConditionFalse, reasonPodCompleted},
				v1.PodReady:                  {v1.ConditionFalse, reasonPodCompleted},
			},
		},
		{
			name:  "init failed",
			st:    podState{SandboxReady: true, Terminal: true, Init: []v1.ContainerStatus{exited("save", 1, true)}, Containers: []v1.ContainerStatus{waiting("verify", "PodInitializing")}},
			phase: v1.PodFailed,
			conds: map[v1.PodConditionType]want{
				v1.PodInitialized:  {v1.ConditionFalse, reasonContainersNotInitialized},
				v1.ContainersReady: {v1.ConditionFalse, reasonPodFailed},
				v1.PodReady:        {v1.ConditionFalse, reasonPodFailed},
			},
		},
		{
			name:  "deadline exceeded though the container exited 0",
			st:    podState{SandboxReady: true, Terminal: true, Reason: reasonDeadlineExceeded, Init: []v1.ContainerStatus{exited("save", 0, true)}, Containers: []v1.ContainerStatus{exited("verify", 0, false)}},
			phase: v1.PodFailed,
			conds: map[v1.PodConditionType]want{v1.PodReady: {v1.ConditionFalse, reasonPodFailed}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := jobPod(v1.RestartPolicyNever, "save")
			s := buildStatus(pod, tc.st, hostIP, metav1.Now())
			if s.Phase != tc.phase {
				t.Errorf("phase = %s, want %s", s.Phase, tc.phase)
			}
			if len(s.Conditions) != 5 {
				t.Errorf("got %d conditions, want the kubelet's 5: %+v", len(s.Conditions), s.Conditions)
			}
			for typ, w := range tc.conds {
				c := condition(s, typ)
				if c == nil {
					t.Errorf("condition %s missing", typ)
					continue
				}
				if c.Status != w.status || c.Reason != w.reason {
					t.Errorf("condition %s = %s/%q, want %s/%q", typ, c.Status, c.Reason, w.status, w.reason)
				}
			}
			if s.HostIP != hostIP || s.PodIP != hostIP || len(s.PodIPs) != 1 || s.StartTime == nil {
				t.Errorf("addresses/start time not set: hostIP %q podIP %q podIPs %v start %v", s.HostIP, s.PodIP, s.PodIPs, s.StartTime)
			}
		})
	}
}

func TestBuildStatusMergesWithServer(t *testing.T) {
	then := metav1.NewTime(time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC))
	start := metav1.NewTime(time.Date(2020, 1, 2, 3, 4, 0, 0, time.UTC))
	pod := jobPod(v1.RestartPolicyNever)
	pod.Generation = 3
	pod.Status = v1.PodStatus{
		QOSClass:  v1.PodQOSBurstable,
		StartTime: &start,
		Conditions: []v1.PodCondition{
			{Type: v1.DisruptionTarget, Status: v1.ConditionTrue, Reason: "TerminationByKubelet"},
			{Type: v1.PodScheduled, Status: v1.ConditionTrue, LastTransitionTime: then},
			{Type: v1.PodReady, Status: v1.ConditionTrue, LastTransitionTime: then},
		},
	}
	now := metav1.NewTime(time.Date(2021, 1, 1, 0, 0, 0, 123, time.UTC))
	st := podState{SandboxReady: true, Terminal: true, StartTime: now,
		Containers: []v1.ContainerStatus{exited("verify", 0, false)}}
	s := buildStatus(pod, st, hostIP, now)

	if s.QOSClass != v1.PodQOSBurstable {
		t.Errorf("qosClass = %q, want it kept", s.QOSClass)
	}
	if !s.StartTime.Equal(&start) {
		t.Errorf("startTime = %v, want the server's %v", s.StartTime, start)
	}
	if c := condition(s, v1.DisruptionTarget); c == nil || c.Reason != "TerminationByKubelet" {
		t.Errorf("DisruptionTarget (not the kubelet's) was not kept: %+v", c)
	}
	if c := condition(s, v1.PodScheduled); !c.LastTransitionTime.Equal(&then) {
		t.Errorf("unchanged PodScheduled moved its transition time to %v", c.LastTransitionTime)
	}
	if c := condition(s, v1.PodReady); c.Status != v1.ConditionFalse || !c.LastTransitionTime.Equal(ptrTime(now.Rfc3339Copy())) {
		t.Errorf("changed Ready condition = %+v, want False at %v", c, now.Rfc3339Copy())
	}
	for _, c := range s.Conditions {
		if c.Type != v1.DisruptionTarget && c.ObservedGeneration != 3 {
			t.Errorf("condition %s observedGeneration = %d, want 3", c.Type, c.ObservedGeneration)
		}
	}
	if s.ObservedGeneration != 3 {
		t.Errorf("observedGeneration = %d, want 3", s.ObservedGeneration)
	}
}

func ptrTime(t metav1.Time) *metav1.Time { return &t }

func TestNormalizeStatus(t *testing.T) {
	pod := jobPod(v1.RestartPolicyNever, "a", "b", "c", "d")
	long := strings.Repeat("m", 4096)
	ts := metav1.NewTime(time.Date(2021, 1, 1, 0, 0, 0, 999, time.UTC))
	s := v1.PodStatus{ContainerStatuses: []v1.ContainerStatus{{Name: "verify", State: v1.ContainerState{
		Terminated: &v1.ContainerStateTerminated{Message: long, StartedAt: ts, FinishedAt: ts}}}}}
	normalizeStatus(pod, &s)
	term := s.ContainerStatuses[0].State.Terminated
	if want := maxPodTerminationMessageLogLength / 5; len(term.Message) != want {
		t.Errorf("message of one of 5 containers has %d bytes, want %d", len(term.Message), want)
	}
	if term.StartedAt.Nanosecond() != 0 || term.FinishedAt.Nanosecond() != 0 {
		t.Errorf("times keep sub-second precision: %v", term.StartedAt)
	}
}

func TestTerminationMessage(t *testing.T) {
	output := []byte("line one\nline two\n")
	big := strings.Repeat("x", 5000) + "END"
	cases := []struct {
		name    string
		policy  v1.TerminationMessagePolicy
		code    int32
		file    string
		fileErr error
		want    string
	}{
		{"file wins on success", v1.TerminationMessageReadFile, 0, `{"revision":5}`, nil, `{"revision":5}`},
		{"file wins on failure even with fallback", v1.TerminationMessageFallbackToLogsOnError, 1, "snapshot.db: bad checksum", nil, "snapshot.db: bad checksum"},
		{"empty file, fallback, failed", v1.TerminationMessageFallbackToLogsOnError, 1, "", nil, "line one\nline two\n"},
		{"missing file, fallback, failed", v1.TerminationMessageFallbackToLogsOnError, 2, "", fs.ErrNotExist, "line one\nline two\n"},
		{"empty file, fallback, succeeded", v1.TerminationMessageFallbackToLogsOnError, 0, "", nil, ""},
		{"empty file, read file policy, failed", v1.TerminationMessageReadFile, 1, "", nil, ""},
		{"missing file, read file policy", v1.TerminationMessageReadFile, 1, "", fs.ErrNotExist, ""},
		{"unreadable file", v1.TerminationMessageFallbackToLogsOnError, 1, "", errors.New("permission denied"), "Error on reading termination log: permission denied"},
		{"file tail kept", v1.TerminationMessageReadFile, 0, big, nil, big[len(big)-4096:]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := terminationMessage(tc.policy, tc.code, []byte(tc.file), tc.fileErr, func() []byte { return output })
			if got != tc.want {
				t.Errorf("message = %q, want %q", got, tc.want)
			}
			if len(got) > maxTerminationMessageLength {
				t.Errorf("message has %d bytes, more than %d", len(got), maxTerminationMessageLength)
			}
		})
	}
}

func TestLogTail(t *testing.T) {
	var lines []string
	for i := 1; i <= 100; i++ {
		lines = append(lines, fmt.Sprintf("l%d", i))
	}
	hundred := strings.Join(lines, "\n") + "\n"
	longLines := strings.Repeat(strings.Repeat("y", 99)+"\n", 30) + "last\n"
	cases := []struct {
		name, in, want string
	}{
		{"short", "a\nb\n", "a\nb\n"},
		{"no trailing newline", "a\nb", "a\nb"},
		{"last 80 lines", hundred, strings.Join(lines[20:], "\n") + "\n"},
		{"last 2 KiB", longLines, longLines[len(longLines)-maxTerminationMessageLogLength:]},
		{"empty", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := logTail([]byte(tc.in))
			if got != tc.want {
				t.Errorf("logTail = %q, want %q", got, tc.want)
			}
			if len(got) > maxTerminationMessageLogLength {
				t.Errorf("tail has %d bytes", len(got))
			}
		})
	}
}
