package driver

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// Names of the test world: one etcd cluster "main" in "etcd-test", metadata in "kube-system", and
// PVs owned by the rig's hostpath CSI driver (not ours), as in CONTRACTS.md.
const (
	fxMetaNS       = "kube-system"
	fxNS           = "etcd-test"
	fxCluster      = "main"
	fxClusterLabel = "etcd.io/cluster"
	fxOtherDriver  = "hostpath.csi.k8s.io"
	fxEtcdImage    = "gcr.io/etcd-development/etcd:v3.7.3"
	fxDriverImage  = "ghcr.io/etcd-snapshot-driver/etcd-snapshot-driver:test"
)

// engineFixture is an Engine started against a fake clientset.
type engineFixture struct {
	t      *testing.T
	kube   *fake.Clientset
	engine *Engine
	ctx    context.Context
	stop   context.CancelFunc
}

// newEngineFixture starts an Engine over a fake clientset holding objs.
func newEngineFixture(t *testing.T, objs ...runtime.Object) *engineFixture {
	t.Helper()
	kube := fake.NewClientset(objs...)
	return startFixtureEngine(t, kube)
}

// startFixtureEngine starts a (new) Engine over an existing fake clientset, as a restarted driver would.
func startFixtureEngine(t *testing.T, kube *fake.Clientset) *engineFixture {
	t.Helper()
	e, err := NewEngine(EngineConfig{
		Kube: kube, MetadataNamespace: fxMetaNS, ClusterLabel: fxClusterLabel,
		EtcdImage: fxEtcdImage, DriverImage: fxDriverImage, HealthTimeout: 15 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return &engineFixture{t: t, kube: kube, engine: e, ctx: ctx, stop: cancel}
}

// stopEngine ends f's engine as a driver exit would, and waits until its workers have stopped.
func stopEngine(f *engineFixture) {
	f.stop()
	for f.engine.ready.Load() || !f.engine.queue.ShuttingDown() {
		time.Sleep(5 * time.Millisecond)
	}
}

// etcdPVCs returns, for each client URL of a cluster, a PVC data-<cluster>-<i> in ns labelled with
// the cluster and a PV of another CSI driver bound to it, whose handle is an absolute directory.
func etcdPVCs(ns, cluster string, n int) []runtime.Object {
	var out []runtime.Object
	for i := range n {
		pvcName := fmt.Sprintf("data-%s-%d", cluster, i)
		pvName := fmt.Sprintf("pv-%s-%s-%d", ns, cluster, i)
		out = append(out,
			&corev1.PersistentVolumeClaim{
				ObjectMeta: metav1.ObjectMeta{Name: pvcName, Namespace: ns, Labels: map[string]string{fxClusterLabel: cluster}},
				Spec: corev1.PersistentVolumeClaimSpec{
					VolumeName:  pvName,
					AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			},
			&corev1.PersistentVolume{
				ObjectMeta: metav1.ObjectMeta{Name: pvName},
				Spec: corev1.PersistentVolumeSpec{
					PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
						Driver: fxOtherDriver, VolumeHandle: pvHandle(ns, cluster, i),
					}},
					ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: ns, Name: pvcName},
				},
			})
	}
	return out
}

// pvHandle is the volume handle of member i's PV: an absolute path, slashes and all, like hostpath's.
func pvHandle(ns, cluster string, i int) string {
	return fmt.Sprintf("/var/lib/csi-hostpath/%s/%s/member-%d", ns, cluster, i)
}

// clientService is the cluster's client Service as the rig makes it: ExternalName localhost, port
// "client" = the given client URL's port.
func clientService(t *testing.T, ns, cluster, clientURL string) *corev1.Service {
	t.Helper()
	u, err := url.Parse(clientURL)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: cluster + "-client", Namespace: ns, Labels: map[string]string{fxClusterLabel: cluster}},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeExternalName, ExternalName: "localhost",
			Ports: []corev1.ServicePort{{Name: "client", Port: int32(port)}},
		},
	}
}

// etcdWorld is the fake Kubernetes side of a real test cluster: PVCs, PVs and the client Service.
func etcdWorld(t *testing.T, tc *testCluster) []runtime.Object {
	t.Helper()
	objs := etcdPVCs(fxNS, fxCluster, len(tc.ClientURLs))
	return append(objs, clientService(t, fxNS, fxCluster, tc.ClientURLs[0]))
}

// secretsOf are CSI snapshotter secrets holding the cluster's client credentials.
func secretsOf(tc *testCluster) map[string]string {
	c := tc.Creds()
	return map[string]string{secretKeyCA: string(c.CA), secretKeyCert: string(c.Cert), secretKeyKey: string(c.Key)}
}

// groupRequest asks for a group snapshot of every member PVC of the test cluster, by PV handle as
// the upstream sidecar passes them.
func groupRequest(tc *testCluster, name string) SnapshotRequest {
	ids := make([]string, len(tc.ClientURLs))
	for i := range ids {
		ids[i] = pvHandle(fxNS, fxCluster, i)
	}
	return SnapshotRequest{Name: name, SourceVolumeIDs: ids, Secrets: secretsOf(tc), Group: true}
}

// countActions counts the fake clientset's actions of verb on resource.
func (f *engineFixture) countActions(verb, resource string) int {
	n := 0
	for _, a := range f.kube.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == resource {
			n++
		}
	}
	return n
}

// writeActions lists every create, update, patch and delete the engine sent, for "nothing created".
func (f *engineFixture) writeActions() []string {
	var out []string
	for _, a := range f.kube.Actions() {
		switch a.GetVerb() {
		case "create", "update", "patch", "delete":
			out = append(out, a.GetVerb()+" "+a.GetResource().Resource)
		}
	}
	return out
}

// exists reports whether the named object is in the fake API server.
func (f *engineFixture) exists(kind, ns, name string) bool {
	f.t.Helper()
	var err error
	switch kind {
	case "Job":
		_, err = f.kube.BatchV1().Jobs(ns).Get(f.ctx, name, metav1.GetOptions{})
	case "Secret":
		_, err = f.kube.CoreV1().Secrets(ns).Get(f.ctx, name, metav1.GetOptions{})
	case "PersistentVolumeClaim":
		_, err = f.kube.CoreV1().PersistentVolumeClaims(ns).Get(f.ctx, name, metav1.GetOptions{})
	case "ConfigMap":
		_, err = f.kube.CoreV1().ConfigMaps(ns).Get(f.ctx, name, metav1.GetOptions{})
	default:
		f.t.Fatalf("unknown kind %s", kind)
	}
	if err != nil && !apierrors.IsNotFound(err) {
		f.t.Fatal(err)
	}
	return err == nil
}

// objectsOf reports which of the Job, Secret, PVC and metadata ConfigMap of snapshot id exist.
func (f *engineFixture) objectsOf(id string) map[string]bool {
	return map[string]bool{
		"Job":                   f.exists("Job", fxNS, id),
		"Secret":                f.exists("Secret", fxNS, tlsSecretName(id)),
		"PersistentVolumeClaim": f.exists("PersistentVolumeClaim", fxNS, id),
		"ConfigMap":             f.exists("ConfigMap", fxMetaNS, id),
	}
}

// waitRecord waits until the record of id satisfies ok and returns it.
func (f *engineFixture) waitRecord(id string, ok func(*Record) bool) *Record {
	f.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last *Record
	for time.Now().Before(deadline) {
		rec, err := f.engine.meta.getLive(f.ctx, id)
		if err != nil {
			f.t.Fatal(err)
		}
		if rec != nil && ok(rec) {
			return rec
		}
		last = rec
		time.Sleep(20 * time.Millisecond)
	}
	f.t.Fatalf("record %s never reached the expected state; last: %+v", id, last)
	return nil
}

// finishJob writes what the Job controller and kubelet would: a pod of the Job with the given status,
// then the Job's terminal condition.
func (f *engineFixture) finishJob(rec *Record, podName string, podStatus corev1.PodStatus, cond batchv1.JobCondition) {
	f.t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: rec.Namespace, Labels: objectLabels(rec.ID, rec.Cluster),
			CreationTimestamp: metav1.Now()},
		Status: podStatus,
	}
	if _, err := f.kube.CoreV1().Pods(rec.Namespace).Create(f.ctx, pod, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	job, err := f.kube.BatchV1().Jobs(rec.Namespace).Get(f.ctx, rec.ID, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	cond.Status = corev1.ConditionTrue
	job.Status.Conditions = append(job.Status.Conditions, cond)
	if cond.Type == batchv1.JobComplete {
		job.Status.Succeeded = 1
	} else {
		job.Status.Failed = jobBackoffLimit + 1
	}
	if _, err := f.kube.BatchV1().Jobs(rec.Namespace).UpdateStatus(f.ctx, job, metav1.UpdateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// failOnce makes the first verb on resource fail with err; later calls pass through.
func failOnce(kube *fake.Clientset, verb, resource string, err error) {
	done := false
	kube.PrependReactor(verb, resource, func(k8stesting.Action) (bool, runtime.Object, error) {
		if done {
			return false, nil, nil
		}
		done = true
		return true, nil, err
	})
}

// hasAll reports whether s contains every part.
func hasAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
