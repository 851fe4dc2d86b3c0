package podrunner

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// These tests run real processes (/bin/sh) under the runner against client-go's fake clientset, which
// stands in for the API server: it has no graceful deletion, so a deletion is simulated by setting the
// deletion timestamp the way the API server would.

const testNS = "etcd-test"

// imageDir makes a directory whose executables stand in for an image: "sh" is the host's shell.
func imageDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if err := os.Symlink("/bin/sh", filepath.Join(d, "sh")); err != nil {
		t.Fatal(err)
	}
	return d
}

type testRunner struct {
	kube     *fake.Clientset
	workDir  string
	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once
	log      *syncBuffer
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func newSyncBuffer() *syncBuffer { b := &syncBuffer{mu: make(chan struct{}, 1)}; return b }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

func startRunner(t *testing.T, kube *fake.Clientset, images map[string]string) *testRunner {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tr := &testRunner{kube: kube, workDir: t.TempDir(), cancel: cancel, done: make(chan error, 1), log: newSyncBuffer()}
	go func() {
		tr.done <- Run(ctx, Config{Kube: kube, Images: images, WorkDir: tr.workDir, Log: tr.log})
	}()
	t.Cleanup(func() {
		tr.stop(t)
		if t.Failed() {
			t.Logf("runner log:\n%s", tr.log.String())
		}
	})
	return tr
}

func (tr *testRunner) stop(t *testing.T) {
	tr.stopOnce.Do(func() {
		tr.cancel()
		select {
		case err := <-tr.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
}

func waitPod(t *testing.T, kube kubernetes.Interface, name string, what string, ok func(*v1.Pod) bool) *v1.Pod {
	t.Helper()
	var last *v1.Pod
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := kube.CoreV1().Pods(testNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = p
		return ok(p), nil
	})
	if err == nil {
		return last
	}
	if last == nil {
		t.Fatalf("pod %s never became %s; it was never found", name, what)
	}
	t.Fatalf("pod %s never became %s; last status: %+v", name, what, last.Status)
	return nil
}

func finished(p *v1.Pod) bool {
	return p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed
}

func shPod(name string, containers ...v1.Container) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS, UID: types.UID("uid-" + name)},
		Spec: v1.PodSpec{
			NodeName:      DefaultNodeName,
			RestartPolicy: v1.RestartPolicyNever,
			Containers:    containers,
		},
	}
}

func TestRunJobPod(t *testing.T) {
	volDir := t.TempDir()
	kube := fake.NewClientset(
		&v1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: "pv-snap"},
			Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{
				CSI: &v1.CSIPersistentVolumeSource{Driver: "hostpath.csi.k8s.io", VolumeHandle: volDir}}},
		},
		&v1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "snap", Namespace: testNS},
			Spec:       v1.PersistentVolumeClaimSpec{VolumeName: "pv-snap"},
			Status:     v1.PersistentVolumeClaimStatus{Phase: v1.ClaimBound},
		},
		&v1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "tls", Namespace: testNS},
			Data:       map[string][]byte{"ca.crt": []byte("CA-PEM"), "tls.key": []byte("KEY")},
		},
	)
	etcdImage, driverImage := imageDir(t), imageDir(t)
	tr := startRunner(t, kube, map[string]string{
		"gcr.io/etcd-development/etcd":                          etcdImage,
		"ghcr.io/etcd-snapshot-driver/etcd-snapshot-driver:dev": driverImage,
	})

	mounts := []v1.VolumeMount{
		{Name: "snapshot", MountPath: "/var/lib/etcd-snapshot"},
		{Name: "tls", MountPath: "/etc/etcd-snapshot/tls", ReadOnly: true},
	}
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "etcds-1-abcde", Namespace: testNS, UID: "uid-job", Labels: map[string]string{"app": "snap"}},
		Spec: v1.PodSpec{
			NodeName:      DefaultNodeName,
			RestartPolicy: v1.RestartPolicyNever,
			Volumes: []v1.Volume{
				{Name: "snapshot", VolumeSource: v1.VolumeSource{PersistentVolumeClaim: &v1.PersistentVolumeClaimVolumeSource{ClaimName: "snap"}}},
				{Name: "tls", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: "tls"}}},
			},
			InitContainers: []v1.Container{{
				Name:    "save",
				Image:   "gcr.io/etcd-development/etcd:v3.7.3",
				Command: []string{"/usr/local/bin/sh"},
				Args: []string{"-c", `cp /etc/etcd-snapshot/tls/ca.crt "$1" && echo saved "$POD"`, "save",
					"/var/lib/etcd-snapshot/snapshot.db"},
				Env: []v1.EnvVar{
					{Name: "POD", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
				},
				VolumeMounts:             mounts,
				TerminationMessagePolicy: v1.TerminationMessageFallbackToLogsOnError,
			}},
			Containers: []v1.Container{{
				Name:    "verify",
				Image:   "ghcr.io/etcd-snapshot-driver/etcd-snapshot-driver:dev",
				Command: []string{"/sh"},
				Args:    []string{"-c", `cat "$FILE" > /dev/termination-log; echo "$(KEY_NAME) $APP" $PWD`},
				Env: []v1.EnvVar{
					{Name: "FILE", Value: "/var/lib/etcd-snapshot/snapshot.db"},
					{Name: "KEY_NAME", Value: "key"},
					{Name: "APP", ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
				},
				WorkingDir:               "/var/lib/etcd-snapshot",
				VolumeMounts:             mounts,
				TerminationMessagePath:   v1.TerminationMessagePathDefault,
				TerminationMessagePolicy: v1.TerminationMessageFallbackToLogsOnError,
			}},
		},
	}
	if _, err := kube.CoreV1().Pods(testNS).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitPod(t, kube, pod.Name, "finished", finished)

	if got.Status.Phase != v1.PodSucceeded {
		t.Fatalf("phase = %s, want Succeeded; status %+v", got.Status.Phase, got.Status)
	}
	save := got.Status.InitContainerStatuses[0].State.Terminated
	if save == nil || save.ExitCode != 0 || save.Reason != "Completed" || save.StartedAt.IsZero() || save.FinishedAt.IsZero() {
		t.Errorf("save status = %+v", got.Status.InitContainerStatuses[0])
	}
	verify := got.Status.ContainerStatuses[0].State.Terminated
	if verify == nil || verify.ExitCode != 0 || verify.Message != "CA-PEM" {
		t.Errorf("verify status = %+v, want exit 0 with the termination message CA-PEM", got.Status.ContainerStatuses[0])
	}
	if got.Status.PodIP != hostIP || got.Status.HostIP != hostIP {
		t.Errorf("podIP %q hostIP %q", got.Status.PodIP, got.Status.HostIP)
	}
	if data, err := os.ReadFile(filepath.Join(volDir, "snapshot.db")); err != nil || string(data) != "CA-PEM" {
		t.Errorf("the PVC's directory holds %q, %v; want the file the init container copied", data, err)
	}
	podDir := filepath.Join(tr.workDir, testNS+"_"+pod.Name)
	if out, _ := os.ReadFile(filepath.Join(podDir, "save.log")); string(out) != "saved etcds-1-abcde\n" {
		t.Errorf("save.log = %q", out)
	}
	if out, _ := os.ReadFile(filepath.Join(podDir, "verify.log")); string(out) != "key snap "+volDir+"\n" {
		t.Errorf("verify.log = %q, want $(KEY_NAME) expanded, the label and the working dir %s", out, volDir)
	}
	fi, err := os.Stat(filepath.Join(podDir, "volumes", "tls", "tls.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secret file: %v, mode %v; want 0600", err, fi)
	}

	node, err := kube.CoreV1().Nodes().Get(context.Background(), DefaultNodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := node.Status.Allocatable[v1.ResourcePods]; c.Value() != 110 {
		t.Errorf("allocatable pods = %s", c.String())
	}
	ready := false
	for _, c := range node.Status.Conditions {
		ready = ready || c.Type == v1.NodeReady && c.Status == v1.ConditionTrue
	}
	if !ready {
		t.Errorf("node not Ready: %+v", node.Status.Conditions)
	}
	if _, err := kube.CoordinationV1().Leases(leaseNamespace).Get(context.Background(), DefaultNodeName, metav1.GetOptions{}); err != nil {
		t.Errorf("node lease: %v", err)
	}
}

func TestRunFailures(t *testing.T) {
	kube := fake.NewClientset()
	img := imageDir(t)
	startRunner(t, kube, map[string]string{"busybox": img})
	cases := []struct {
		name      string
		container v1.Container
		exit      int32
		reason    string
		message   string
	}{
		{
			name:      "fallback to logs",
			container: v1.Container{Image: "busybox:1", Command: []string{"/bin/sh", "-c", "echo out; echo broken snapshot >&2; exit 3"}, TerminationMessagePolicy: v1.TerminationMessageFallbackToLogsOnError},
			exit:      3, reason: "Error", message: "out\nbroken snapshot\n",
		},
		{
			name:      "termination log beats logs",
			container: v1.Container{Image: "busybox:1", Command: []string{"/bin/sh", "-c", "echo noise; printf 'file.db: bad' > /dev/termination-log; exit 1"}, TerminationMessagePolicy: v1.TerminationMessageFallbackToLogsOnError},
			exit:      1, reason: "Error", message: "file.db: bad",
		},
		{
			name:      "no fallback by default",
			container: v1.Container{Image: "busybox:1", Command: []string{"/bin/sh", "-c", "echo noise; exit 4"}},
			exit:      4, reason: "Error", message: "",
		},
		{
			name:      "unknown image",
			container: v1.Container{Image: "quay.io/nothing:1", Command: []string{"/bin/sh"}},
			exit:      128, reason: "ErrImagePull", message: `Failed to pull image "quay.io/nothing:1"`,
		},
		{
			name:      "no such executable",
			container: v1.Container{Image: "busybox:1", Command: []string{"/usr/bin/etcdctl"}},
			exit:      128, reason: "StartError", message: `no executable "etcdctl"`,
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.container.Name = "c"
			pod := shPod("fail-"+strconv.Itoa(i), tc.container)
			if _, err := kube.CoreV1().Pods(testNS).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			got := waitPod(t, kube, pod.Name, "finished", finished)
			if got.Status.Phase != v1.PodFailed {
				t.Errorf("phase = %s, want Failed", got.Status.Phase)
			}
			term := got.Status.ContainerStatuses[0].State.Terminated
			if term == nil {
				t.Fatalf("container not terminated: %+v", got.Status.ContainerStatuses[0])
			}
			if term.ExitCode != tc.exit || term.Reason != tc.reason || !strings.Contains(term.Message, tc.message) || (tc.message == "" && term.Message != "") {
				t.Errorf("terminated = exit %d reason %q message %q; want %d %q containing %q", term.ExitCode, term.Reason, term.Message, tc.exit, tc.reason, tc.message)
			}
		})
	}
}

// alive reports whether any process of the group led by pid still runs. Zombies do not count: in a
// container without an init that reaps, killed orphans stay zombies. A kill takes a moment to land, so
// the group gets up to two seconds to disappear.
func alive(pid int) bool {
	gone := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 2*time.Second, true, func(context.Context) (bool, error) {
		return !groupRunning(pid), nil
	})
	return gone != nil
}

func groupRunning(pgid int) bool {
	procs, _ := procfs.AllProcs()
	for _, p := range procs {
		if st, err := p.Stat(); err == nil && st.PGRP == pgid && st.State != "Z" {
			return true
		}
	}
	return false
}

func containerPID(t *testing.T, p *v1.Pod) int {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "rig://"))
	if err != nil {
		t.Fatalf("container id %q: %v", p.Status.ContainerStatuses[0].ContainerID, err)
	}
	return pid
}

func isRunning(p *v1.Pod) bool { return p.Status.Phase == v1.PodRunning }

func TestRunDeletionKillsProcessGroup(t *testing.T) {
	kube := fake.NewClientset()
	startRunner(t, kube, map[string]string{"busybox": imageDir(t)})
	// The shell forks sleep, so killing only the shell would leave a process behind.
	pod := shPod("sleeper", v1.Container{Name: "c", Image: "busybox", Command: []string{"/bin/sh", "-c", "sleep 300; true"}})
	ctx := context.Background()
	if _, err := kube.CoreV1().Pods(testNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPod(t, kube, pod.Name, "running", isRunning)
	pid := containerPID(t, p)
	if !groupRunning(pid) {
		t.Fatalf("process group %d not running", pid)
	}

	w, err := kube.CoreV1().Pods(testNS).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	// What the API server does on a graceful delete.
	p.DeletionTimestamp = ptr.To(metav1.Now())
	p.DeletionGracePeriodSeconds = ptr.To[int64](5)
	if _, err := kube.CoreV1().Pods(testNS).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	var failed *v1.Pod
	timeout := time.After(30 * time.Second)
	for deleted := false; !deleted; {
		select {
		case ev := <-w.ResultChan():
			p, _ := ev.Object.(*v1.Pod)
			if p == nil || p.Name != pod.Name {
				continue
			}
			switch ev.Type {
			case watch.Modified:
				if p.Status.Phase == v1.PodFailed {
					failed = p
				}
			case watch.Deleted:
				deleted = true
			}
		case <-timeout:
			t.Fatal("pod was not deleted by the runner")
		}
	}
	if failed == nil {
		t.Fatal("the runner deleted the pod without reporting it Failed first")
	}
	if term := failed.Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 128+int32(syscall.SIGTERM) {
		t.Errorf("killed container status = %+v, want exit 143 (SIGTERM)", failed.Status.ContainerStatuses[0].State)
	}
	if alive(pid) {
		t.Errorf("process group %d survived the pod's deletion", pid)
	}
	if _, err := kube.CoreV1().Pods(testNS).Get(ctx, pod.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod still there: %v", err)
	}
}

func TestRunCancelKillsProcesses(t *testing.T) {
	kube := fake.NewClientset()
	tr := startRunner(t, kube, map[string]string{"busybox": imageDir(t)})
	pod := shPod("forever", v1.Container{Name: "c", Image: "busybox", Command: []string{"/bin/sh", "-c", "trap '' TERM; sleep 300; true"}})
	if _, err := kube.CoreV1().Pods(testNS).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pid := containerPID(t, waitPod(t, kube, pod.Name, "running", isRunning))
	start := time.Now()
	tr.stop(t)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %s to return", d)
	}
	if alive(pid) {
		t.Errorf("process group %d outlived Run", pid)
	}
}

func TestRunActiveDeadline(t *testing.T) {
	kube := fake.NewClientset()
	startRunner(t, kube, map[string]string{"busybox": imageDir(t)})
	pod := shPod("deadline", v1.Container{Name: "c", Image: "busybox", Command: []string{"/bin/sh", "-c", "sleep 300"}})
	pod.Spec.ActiveDeadlineSeconds = ptr.To[int64](1)
	pod.Spec.TerminationGracePeriodSeconds = ptr.To[int64](1)
	if _, err := kube.CoreV1().Pods(testNS).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitPod(t, kube, pod.Name, "finished", finished)
	if got.Status.Phase != v1.PodFailed || got.Status.Reason != reasonDeadlineExceeded {
		t.Errorf("phase %s reason %q, want Failed/%s", got.Status.Phase, got.Status.Reason, reasonDeadlineExceeded)
	}
	if term := got.Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode == 0 {
		t.Errorf("container state %+v, want terminated by a signal", got.Status.ContainerStatuses[0].State)
	}
}

func TestRunOnFailureRestartsInPlace(t *testing.T) {
	kube := fake.NewClientset()
	startRunner(t, kube, map[string]string{"busybox": imageDir(t)})
	pod := shPod("flaky", v1.Container{
		Name: "c", Image: "busybox",
		Command:      []string{"/bin/sh", "-c", "if [ -f /work/once ]; then exit 0; fi; touch /work/once; exit 7"},
		VolumeMounts: []v1.VolumeMount{{Name: "work", MountPath: "/work"}},
	})
	pod.Spec.RestartPolicy = v1.RestartPolicyOnFailure
	pod.Spec.Volumes = []v1.Volume{{Name: "work", VolumeSource: v1.VolumeSource{EmptyDir: &v1.EmptyDirVolumeSource{}}}}
	if _, err := kube.CoreV1().Pods(testNS).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitPod(t, kube, pod.Name, "finished", finished)
	cs := got.Status.ContainerStatuses[0]
	if got.Status.Phase != v1.PodSucceeded || cs.RestartCount != 1 {
		t.Errorf("phase %s restarts %d, want Succeeded after 1 restart", got.Status.Phase, cs.RestartCount)
	}
	if last := cs.LastTerminationState.Terminated; last == nil || last.ExitCode != 7 {
		t.Errorf("last state %+v, want the first run's exit 7", cs.LastTerminationState)
	}
}
