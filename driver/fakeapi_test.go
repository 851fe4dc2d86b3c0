package driver

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// The fake API server of the fixtures (fixture_test.go) behaves as a real one where the driver relies
// on it: RBAC, optimistic concurrency, and failures injected by a test.

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
	"/persistentvolumes":      {verbs: []string{"get", "list", "watch", "patch"}},
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
			t.Errorf("the engine made calls manifests/rbac.yaml does not allow: %s", strings.Join(sets.List(sets.New(refused...)), "; "))
		}
	})
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
