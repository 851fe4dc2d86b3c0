package driver

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
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
	t *testing.T
	// kube is the engine's client: it refuses what the driver's RBAC refuses (driverRBAC), and its
	// Actions() are the engine's calls alone.
	kube *fake.Clientset
	// admin is the rest of the cluster (the test, controllers, users) on the same objects, unrestricted.
	admin  *fake.Clientset
	engine *Engine
	ctx    context.Context
	stop   context.CancelFunc
}

// newEngineFixture starts an Engine over a fake clientset holding objs, limited to the driver's RBAC.
func newEngineFixture(t *testing.T, objs ...runtime.Object) *engineFixture {
	t.Helper()
	kube := fake.NewClientset(objs...)
	enforceDriverRBAC(t, kube)
	return startFixtureEngine(t, kube)
}

// startFixtureEngine starts a (new) Engine over an existing fake clientset, as a restarted driver would.
func startFixtureEngine(t *testing.T, kube *fake.Clientset) *engineFixture {
	t.Helper()
	return startFixtureEngineWith(t, kube, nil)
}

// startFixtureEngineWith is startFixtureEngine with the engine configuration adjusted by tweak.
func startFixtureEngineWith(t *testing.T, kube *fake.Clientset, tweak func(*EngineConfig)) *engineFixture {
	t.Helper()
	cfg := EngineConfig{
		Kube: kube, MetadataNamespace: fxMetaNS, ClusterLabel: fxClusterLabel,
		EtcdImage: fxEtcdImage, DriverImage: fxDriverImage, HealthTimeout: 15 * time.Second,
	}
	if tweak != nil {
		tweak(&cfg)
	}
	e, err := NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	enforceResourceVersions(kube, kube.Tracker())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return &engineFixture{t: t, kube: kube, admin: adminClient(kube), engine: e, ctx: ctx, stop: cancel}
}

// adminClient is a second client on kube's objects that bypasses kube's reactors and does not add
// to kube.Actions(). Informers of kube see its writes (one object tracker).
func adminClient(kube *fake.Clientset) *fake.Clientset {
	admin := &fake.Clientset{}
	admin.AddReactor("*", "*", k8stesting.ObjectReaction(kube.Tracker()))
	enforceResourceVersions(admin, kube.Tracker())
	return admin
}

// rvGuard is the optimistic concurrency of one fake API server's ConfigMaps: the fake object tracker
// neither sets metadata.resourceVersion nor refuses a stale one, and the metadata store relies on
// both (an update from a cache that trails the API server must conflict, as it does in a cluster).
type rvGuard struct {
	mu   sync.Mutex
	last int64
}

var (
	rvGuards    sync.Map // k8stesting.ObjectTracker -> *rvGuard
	rvInstalled sync.Map // *fake.Clientset -> true
)

// enforceResourceVersions makes c's ConfigMap creates and updates, on tracker's objects, stamp a new
// resourceVersion, and refuses with Conflict an update whose resourceVersion is not the stored one
// (an empty one is unconditional, as with the API server). Every client of tracker shares the guard.
func enforceResourceVersions(c *fake.Clientset, tracker k8stesting.ObjectTracker) {
	if _, done := rvInstalled.LoadOrStore(c, true); done {
		return
	}
	v, _ := rvGuards.LoadOrStore(tracker, &rvGuard{})
	g := v.(*rvGuard)
	store := k8stesting.ObjectReaction(tracker)
	stamp := func(obj runtime.Object) (runtime.Object, metav1.Object) {
		obj = obj.DeepCopyObject()
		m, err := meta.Accessor(obj)
		if err != nil {
			panic(err)
		}
		return obj, m
	}
	guard := &k8stesting.SimpleReactor{Verb: "*", Resource: "configmaps", Reaction: func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "" {
			return false, nil, nil
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		switch act := a.(type) {
		case k8stesting.CreateActionImpl:
			obj, m := stamp(act.Object)
			g.last++
			m.SetResourceVersion(strconv.FormatInt(g.last, 10))
			act.Object = obj
			return store(act)
		case k8stesting.UpdateActionImpl:
			obj, m := stamp(act.Object)
			cur, err := tracker.Get(act.GetResource(), act.GetNamespace(), m.GetName())
			if err == nil {
				cm, merr := meta.Accessor(cur)
				if merr != nil {
					return true, nil, merr
				}
				if rv := m.GetResourceVersion(); rv != "" && rv != cm.GetResourceVersion() {
					return true, nil, apierrors.NewConflict(act.GetResource().GroupResource(), m.GetName(),
						fmt.Errorf("the object has been modified: resourceVersion %s, stored %s", rv, cm.GetResourceVersion()))
				}
			}
			g.last++
			m.SetResourceVersion(strconv.FormatInt(g.last, 10))
			act.Object = obj
			return store(act)
		}
		return false, nil, nil
	}}
	c.Lock()
	defer c.Unlock()
	// Just before the tracker's own reaction, the last in the chain: reactors added in front of it
	// (RBAC, injected failures) still answer first.
	n := len(c.ReactionChain)
	c.ReactionChain = append(c.ReactionChain[:n-1:n-1], guard, c.ReactionChain[n-1])
}

// rbacRule is what manifests/rbac.yaml grants on one resource: verbs, and the one namespace a
// namespaced Role limits them to ("" = a ClusterRole, any namespace and cluster-wide lists).
type rbacRule struct {
	verbs     []string
	namespace string
}

// driverRBAC mirrors the rules of the driver's ClusterRole and metadata Role in manifests/rbac.yaml,
// keyed by "group/resource" (TestManifestsRBAC checks the file grants each of them). No subresources,
// and no Secret verb that returns Secret contents.
var driverRBAC = map[string]rbacRule{
	"/persistentvolumeclaims": {verbs: []string{"get", "list", "watch", "create", "delete"}},
	"/persistentvolumes":      {verbs: []string{"get", "list", "watch"}},
	"/services":               {verbs: []string{"list"}},
	"/secrets":                {verbs: []string{"create", "delete"}},
	"batch/jobs":              {verbs: []string{"get", "list", "watch", "create", "delete", "patch"}},
	"/pods":                   {verbs: []string{"list", "watch"}},
	"/events":                 {verbs: []string{"create", "patch"}},
	"/configmaps":             {verbs: []string{"get", "list", "watch", "create", "update", "delete"}, namespace: fxMetaNS},
}

// rbacAllows reports whether driverRBAC permits action.
func rbacAllows(a k8stesting.Action) bool {
	if a.GetSubresource() != "" {
		return false
	}
	gvr := a.GetResource()
	rule, ok := driverRBAC[gvr.Group+"/"+gvr.Resource]
	if !ok || !slices.Contains(rule.verbs, a.GetVerb()) {
		return false
	}
	return rule.namespace == "" || rule.namespace == a.GetNamespace()
}

// enforceDriverRBAC makes kube answer Forbidden, as the API server would, to every call (watches
// included) outside driverRBAC, and fails t for each one at the end.
func enforceDriverRBAC(t *testing.T, kube *fake.Clientset) {
	var mu sync.Mutex
	var refused []string
	refuse := func(a k8stesting.Action) error {
		gvr := a.GetResource()
		what := fmt.Sprintf("%s %s", a.GetVerb(), gvr.GroupResource())
		if sub := a.GetSubresource(); sub != "" {
			what += "/" + sub
		}
		if ns := a.GetNamespace(); ns != "" {
			what += " in " + ns
		}
		mu.Lock()
		refused = append(refused, what)
		mu.Unlock()
		name := ""
		if n, ok := a.(interface{ GetName() string }); ok {
			name = n.GetName()
		}
		return apierrors.NewForbidden(gvr.GroupResource(), name, fmt.Errorf("the driver's RBAC does not allow %s", what))
	}
	kube.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if rbacAllows(a) {
			return false, nil, nil
		}
		return true, nil, refuse(a)
	})
	kube.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		if rbacAllows(a) {
			return false, nil, nil
		}
		return true, nil, refuse(a)
	})
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if len(refused) > 0 {
			t.Errorf("the engine made calls manifests/rbac.yaml does not allow: %s", strings.Join(slices.Compact(slices.Sorted(slices.Values(refused))), "; "))
		}
	})
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

// countActions counts the engine's actions of verb on resource.
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
		_, err = f.admin.BatchV1().Jobs(ns).Get(f.ctx, name, metav1.GetOptions{})
	case "Secret":
		_, err = f.admin.CoreV1().Secrets(ns).Get(f.ctx, name, metav1.GetOptions{})
	case "PersistentVolumeClaim":
		_, err = f.admin.CoreV1().PersistentVolumeClaims(ns).Get(f.ctx, name, metav1.GetOptions{})
	case "ConfigMap":
		_, err = f.admin.CoreV1().ConfigMaps(ns).Get(f.ctx, name, metav1.GetOptions{})
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

// waitRecord waits until the record of id satisfies ok, both in the API server and in the engine's
// metadata cache (which Create and Get read, and which trails the API server), and returns it.
func (f *engineFixture) waitRecord(id string, ok func(*Record) bool) *Record {
	f.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last, lastCached *Record
	for time.Now().Before(deadline) {
		rec, err := f.engine.meta.getLive(f.ctx, id)
		if err != nil {
			f.t.Fatal(err)
		}
		last = rec
		if rec != nil && ok(rec) {
			cached, err := f.engine.meta.get(f.ctx, id)
			if err != nil {
				f.t.Fatal(err)
			}
			if cached != nil && ok(cached) {
				return rec
			}
			lastCached = cached
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.t.Fatalf("record %s never reached the expected state; last: %+v; last cached: %+v", id, last, lastCached)
	return nil
}

// waitCounter waits until the counter read by value has grown from before by at least want (the
// engine bumps its metrics after the write that waitRecord sees), then returns its value; the caller
// checks it for exactly before+want.
func waitCounter(t *testing.T, value func() float64, before, want float64) float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	got := value()
	for got < before+want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		got = value()
	}
	return got
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
	if _, err := f.admin.CoreV1().Pods(rec.Namespace).Create(f.ctx, pod, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	job, err := f.admin.BatchV1().Jobs(rec.Namespace).Get(f.ctx, rec.ID, metav1.GetOptions{})
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
	if _, err := f.admin.BatchV1().Jobs(rec.Namespace).UpdateStatus(f.ctx, job, metav1.UpdateOptions{}); err != nil {
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

// failOnceNamed makes the first verb on resource of the object called name fail with err.
func failOnceNamed(kube *fake.Clientset, verb, resource, name string, err error) {
	done := false // reactions run under the Fake's lock
	kube.PrependReactor(verb, resource, func(a k8stesting.Action) (bool, runtime.Object, error) {
		n, ok := a.(interface{ GetName() string })
		if done || !ok || n.GetName() != name {
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
