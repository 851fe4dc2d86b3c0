package rig_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// TestE2ERigUp proves the rig is a working cluster: a Ready node, the default StorageClass served by
// the provisioner, Jobs run through the real Job controller, scheduler and pod runner, the snapshot
// CRDs served, the etcd cluster under test registered, the driver restartable with the sidecar
// following it, and nothing left running after Stop.
func TestE2ERigUp(t *testing.T) {
	r, ctx := startRig(t, 5*time.Minute, rig.ForTest)

	t.Run("NodeReady", func(t *testing.T) {
		nodes, err := r.Kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes.Items) != 1 || nodes.Items[0].Name != r.NodeName {
			t.Fatalf("nodes = %v, want exactly %s", nodeNames(nodes.Items), r.NodeName)
		}
		if !nodeReady(&nodes.Items[0]) {
			t.Fatalf("node %s not Ready: %+v", r.NodeName, nodes.Items[0].Status.Conditions)
		}
		if len(nodes.Items[0].Spec.Taints) != 0 {
			t.Fatalf("node %s has taints %v; pods would not schedule", r.NodeName, nodes.Items[0].Spec.Taints)
		}
	})

	t.Run("SnapshotCRDsServed", func(t *testing.T) {
		want := map[string][]string{
			"snapshot.storage.k8s.io/v1":      {"volumesnapshots", "volumesnapshotcontents", "volumesnapshotclasses"},
			"groupsnapshot.storage.k8s.io/v1": {"volumegroupsnapshots", "volumegroupsnapshotcontents", "volumegroupsnapshotclasses"},
		}
		for gv, resources := range want {
			list, err := r.Kube.Discovery().ServerResourcesForGroupVersion(gv)
			if err != nil {
				t.Fatalf("discovery of %s: %v", gv, err)
			}
			served := map[string]bool{}
			for _, res := range list.APIResources {
				served[res.Name] = true
			}
			for _, res := range resources {
				if !served[res] {
					t.Errorf("%s does not serve %s", gv, res)
				}
			}
		}
		if _, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshots(r.Namespace).List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("list VolumeGroupSnapshots: %v", err)
		}
		if _, err := r.Snap.SnapshotV1().VolumeSnapshotClasses().List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("list VolumeSnapshotClasses: %v", err)
		}
	})

	ns := createNamespace(ctx, t, r, "rig-smoke")

	t.Run("DefaultClassPVCBound", func(t *testing.T) {
		pvc := &v1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: ns},
			Spec: v1.PersistentVolumeClaimSpec{
				AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
				Resources:   v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Mi")}},
			},
		}
		if _, err := r.Kube.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var bound *v1.PersistentVolumeClaim
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			got, err := r.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
			bound = got
			return err == nil && got.Status.Phase == v1.ClaimBound, nil
		})
		if err != nil {
			t.Fatalf("PVC not bound: %v; status %+v", err, bound.Status)
		}
		if sc := ptr.Deref(bound.Spec.StorageClassName, ""); sc != r.StorageClass {
			t.Errorf("PVC storage class %q, want the default %q", sc, r.StorageClass)
		}
		pv, err := r.Kube.CoreV1().PersistentVolumes().Get(ctx, bound.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != "hostpath.csi.k8s.io" {
			t.Fatalf("PV %s source %+v, want CSI driver hostpath.csi.k8s.io", pv.Name, pv.Spec.PersistentVolumeSource)
		}
		if st, err := os.Stat(pv.Spec.CSI.VolumeHandle); err != nil || !st.IsDir() {
			t.Errorf("volume handle %q is not a directory: %v", pv.Spec.CSI.VolumeHandle, err)
		}

		// Deleting the claim releases and deletes the volume (protection finalizers, binder, provisioner).
		if err := r.Kube.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, "data", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := r.Kube.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			t.Errorf("PV %s still exists a minute after its claim was deleted", pv.Name)
		}
	})

	t.Run("JobCompletes", func(t *testing.T) {
		pod := runJobPod(ctx, t, r, ns, "etcdctl-version", batchv1.JobComplete, v1.PodSucceeded, "version")
		if code := exitCode(pod, "etcdctl"); code != 0 {
			t.Fatalf("etcdctl exit code %d", code)
		}
		if out, err := os.ReadFile(filepath.Join(r.Root, "pods", ns+"_"+pod.Name, "etcdctl.log")); err == nil && !strings.Contains(string(out), "etcdctl version") {
			t.Errorf("etcdctl output %q does not name its version", out)
		}
	})

	t.Run("JobFailureReported", func(t *testing.T) {
		pod := runJobPod(ctx, t, r, ns, "etcdctl-bad-flag", batchv1.JobFailed, v1.PodFailed, "--no-such-flag")
		if code := exitCode(pod, "etcdctl"); code == 0 {
			t.Fatalf("etcdctl exit code 0 for an unknown flag")
		}
		if msg := terminated(pod, "etcdctl").Message; !strings.Contains(msg, "no-such-flag") {
			t.Errorf("termination message %q does not carry the output tail (FallbackToLogsOnError)", msg)
		}
	})

	t.Run("EtcdUnderTest", func(t *testing.T) {
		pvcs, err := r.Kube.CoreV1().PersistentVolumeClaims(r.Namespace).List(ctx, metav1.ListOptions{LabelSelector: rig.ClusterLabel + "=" + rig.EtcdClusterName})
		if err != nil {
			t.Fatal(err)
		}
		if len(pvcs.Items) != 3 {
			t.Fatalf("%d PVCs of the etcd cluster, want 3", len(pvcs.Items))
		}
		for _, pvc := range pvcs.Items {
			pv, err := r.Kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if pvc.Status.Phase != v1.ClaimBound || pv.Spec.CSI == nil || pv.Spec.CSI.Driver == r.DriverName {
				t.Errorf("PVC %s: phase %s, PV source %+v; want Bound to another CSI driver's PV", pvc.Name, pvc.Status.Phase, pv.Spec.PersistentVolumeSource)
			}
		}
		if _, err := r.Kube.CoreV1().Secrets(r.Namespace).Get(ctx, rig.EtcdClusterName+"-client-tls", metav1.GetOptions{}); err != nil {
			t.Errorf("client Secret: %v", err)
		}
		cli, err := r.Etcd.Client()
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		ectx, ecancel := context.WithTimeout(ctx, 30*time.Second)
		defer ecancel()
		members, err := cli.MemberList(ectx)
		if err != nil {
			t.Fatal(err)
		}
		if len(members.Members) != 3 {
			t.Errorf("%d etcd members, want 3", len(members.Members))
		}
	})

	t.Run("DriverRestart", func(t *testing.T) {
		get := func() error {
			resp, err := http.Get("http://" + r.DriverHTTPAddress + "/ready")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("/ready: %s", resp.Status)
			}
			return nil
		}
		if err := get(); err != nil {
			t.Fatal(err)
		}
		before := r.DriverPID()
		if err := r.KillDriver(); err != nil {
			t.Fatal(err)
		}
		if r.DriverRunning() {
			t.Fatal("driver still running after KillDriver")
		}
		if get() == nil {
			t.Fatal("/ready answers with the driver killed")
		}
		start := time.Now()
		if err := r.StartDriver(); err != nil {
			t.Fatal(err)
		}
		t.Logf("driver and csi-snapshotter back in %s", time.Since(start).Round(10*time.Millisecond))
		if r.DriverPID() == before {
			t.Errorf("driver pid unchanged after restart")
		}
		if err := get(); err != nil {
			t.Fatal(err)
		}
		if err := r.StopDriver(); err != nil {
			t.Fatal(err)
		}
		if err := r.StartDriver(); err != nil {
			t.Fatal(err)
		}
	})

	t.Logf("rig resident memory now %d MiB, peak %d MiB", rig.TreeRSS()>>20, r.PeakRSS()>>20)
}

func nodeNames(nodes []v1.Node) []string {
	var names []string
	for _, n := range nodes {
		names = append(names, n.Name)
	}
	return names
}

func nodeReady(n *v1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// createNamespace creates a namespace with a generated name, deleted when t ends.
func createNamespace(ctx context.Context, t *testing.T, r *rig.Rig, prefix string) string {
	t.Helper()
	ns, err := r.Kube.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Kube.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	return ns.Name
}

// runJob runs etcdctl with args as a Job and returns it once it completed or failed.
func runJob(ctx context.Context, t *testing.T, r *rig.Rig, ns, name string, args ...string) *batchv1.Job {
	t.Helper()
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To[int32](0),
			Template: v1.PodTemplateSpec{Spec: v1.PodSpec{
				RestartPolicy:                v1.RestartPolicyNever,
				AutomountServiceAccountToken: ptr.To(false),
				Containers: []v1.Container{{
					Name:                     "etcdctl",
					Image:                    r.EtcdImage,
					Command:                  []string{"/usr/local/bin/etcdctl"},
					Args:                     args,
					TerminationMessagePolicy: v1.TerminationMessageFallbackToLogsOnError,
				}},
			}},
		},
	}
	if _, err := r.Kube.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got *batchv1.Job
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		got, err = r.Kube.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && (jobCondition(got, batchv1.JobComplete) || jobCondition(got, batchv1.JobFailed)), nil
	})
	if err != nil {
		t.Fatalf("job %s/%s did not finish: %v; status %+v", ns, name, err, got.Status)
	}
	return got
}

func jobCondition(job *batchv1.Job, c batchv1.JobConditionType) bool {
	for _, cond := range job.Status.Conditions {
		if cond.Type == c && cond.Status == v1.ConditionTrue {
			return true
		}
	}
	return false
}

func jobPod(ctx context.Context, t *testing.T, r *rig.Rig, ns, job string) *v1.Pod {
	t.Helper()
	pods, err := r.Kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + job})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 {
		t.Fatalf("job %s has %d pods, want 1", job, len(pods.Items))
	}
	if pods.Items[0].Spec.NodeName != r.NodeName {
		t.Fatalf("pod %s scheduled to %q, want %s", pods.Items[0].Name, pods.Items[0].Spec.NodeName, r.NodeName)
	}
	return &pods.Items[0]
}

func terminated(pod *v1.Pod, container string) v1.ContainerStateTerminated {
	for _, s := range pod.Status.ContainerStatuses {
		if s.Name == container && s.State.Terminated != nil {
			return *s.State.Terminated
		}
	}
	return v1.ContainerStateTerminated{ExitCode: -1}
}

func exitCode(pod *v1.Pod, container string) int32 { return terminated(pod, container).ExitCode }

// runJobPod runs a Job of etcdctl args (runJob) and returns its pod; the Job must end with condition
// cond and the pod in phase.
func runJobPod(ctx context.Context, t *testing.T, r *rig.Rig, ns, name string, cond batchv1.JobConditionType, phase v1.PodPhase, args ...string) *v1.Pod {
	t.Helper()
	job := runJob(ctx, t, r, ns, name, args...)
	if !jobCondition(job, cond) {
		t.Fatalf("job %s did not end %s: %+v", job.Name, cond, job.Status)
	}
	pod := jobPod(ctx, t, r, ns, job.Name)
	if pod.Status.Phase != phase {
		t.Fatalf("pod %s phase %s, want %s", pod.Name, pod.Status.Phase, phase)
	}
	return pod
}

// startRig returns the rig start gives t (rig.ForTest or rig.ForTestWithOptions) and a context that
// ends after timeout or with t. Once the rig's own cleanup has stopped it, it checks that nothing
// this test binary started is left running.
func startRig(t *testing.T, timeout time.Duration, start func(testing.TB) *rig.Rig) (*rig.Rig, context.Context) {
	t.Helper()
	// Registered before start so that it runs after the rig's own cleanup.
	t.Cleanup(func() { checkNoChildren(t) })
	r := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return r, ctx
}

// checkNoChildren fails t if any process started by this test binary outlives the rig.
func checkNoChildren(t *testing.T) {
	var left []int
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		left = rig.Descendants(os.Getpid())
		return len(left) == 0, nil
	})
	if err == nil {
		return
	}
	var desc []string
	for _, pid := range left {
		desc = append(desc, fmt.Sprintf("%d %s", pid, strings.Join(rig.ProcessArgs(pid), " ")))
	}
	t.Errorf("processes left after the rig stopped:\n%s", strings.Join(desc, "\n"))
}
