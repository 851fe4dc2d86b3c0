package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// TestE2EQuorumLost asks for a group snapshot while two of three members are down: the
// VolumeGroupSnapshot shows an error naming quorum and the driver creates nothing at all.
func TestE2EQuorumLost(t *testing.T) {
	r, ctx := setup(t)

	// Everything the driver labels as its own, watched from before the request to the end.
	created := watchManagedObjects(t, ctx, r)

	for _, i := range []int{1, 2} {
		if err := r.Etcd.StopMember(i); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := r.Etcd.StartMember(i); err != nil {
				t.Errorf("clean-up: restart etcd member %d: %v", i, err)
			}
		})
	}
	// Registered after the member restarts, so it runs before them: the sidecar's retries must not
	// meet a healthy cluster while the VolumeGroupSnapshot still exists.
	name := uniqueName("e2e-quorum")
	vgs := createGroup(t, ctx, r, name)

	vgsErr, contentErr, err := waitGroupError(ctx, r, vgs, mentionsQuorum)
	if err != nil {
		t.Fatalf("no error naming quorum on VolumeGroupSnapshot %s (status.error %q) or its content (status.error %q): %v", name, vgsErr, contentErr, err)
	}
	t.Logf("VolumeGroupSnapshot status.error: %q; content status.error: %q", vgsErr, contentErr)

	for _, kind := range []string{"Job", "PersistentVolumeClaim", "Secret"} {
		if n, err := countManaged(ctx, r, kind); err != nil {
			t.Fatal(err)
		} else if n != 0 {
			t.Errorf("%d %s(s) labelled %s=%s in %s with quorum lost", n, kind, rig.ManagedByLabel, rig.ManagedByValue, r.Namespace)
		}
	}
	if got := created(); len(got) > 0 {
		t.Errorf("the driver created objects with quorum lost: %s", strings.Join(got, ", "))
	}
	deleteGroup(t, ctx, r, name)
	if got := created(); len(got) > 0 {
		t.Errorf("objects created before the VolumeGroupSnapshot was gone: %s", strings.Join(got, ", "))
	}
}

func mentionsQuorum(msg string) bool { return strings.Contains(strings.ToLower(msg), "quorum") }

// watchManagedObjects starts informers on the Jobs, PVCs and Secrets of the etcd namespace and the
// ConfigMaps of the driver's namespace labelled as the driver's, and returns a function listing the
// ones created since.
func watchManagedObjects(t *testing.T, ctx context.Context, r *rig.Rig) func() []string {
	t.Helper()
	var mu sync.Mutex
	var created []string
	sel := labels.Set{rig.ManagedByLabel: rig.ManagedByValue}.String()
	tweak := informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = sel })
	etcdNS := informers.NewSharedInformerFactoryWithOptions(r.Kube, 0, informers.WithNamespace(r.Namespace), tweak)
	driverNS := informers.NewSharedInformerFactoryWithOptions(r.Kube, 0, informers.WithNamespace(rig.DriverNamespace), tweak)
	infs := map[string]cache.SharedIndexInformer{
		"Job":                   etcdNS.Batch().V1().Jobs().Informer(),
		"PersistentVolumeClaim": etcdNS.Core().V1().PersistentVolumeClaims().Informer(),
		"Secret":                etcdNS.Core().V1().Secrets().Informer(),
		"ConfigMap":             driverNS.Core().V1().ConfigMaps().Informer(),
	}
	var synced []cache.InformerSynced
	for kind, inf := range infs {
		_, err := inf.AddEventHandler(cache.ResourceEventHandlerDetailedFuncs{
			AddFunc: func(obj any, initial bool) {
				if initial {
					return
				}
				m, err := meta(obj)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					created = append(created, kind+" (unreadable)")
					return
				}
				created = append(created, fmt.Sprintf("%s %s/%s", kind, m.GetNamespace(), m.GetName()))
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		synced = append(synced, inf.HasSynced)
	}
	stop := make(chan struct{})
	etcdNS.Start(stop)
	driverNS.Start(stop)
	t.Cleanup(func() {
		close(stop)
		etcdNS.Shutdown()
		driverNS.Shutdown()
	})
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		t.Fatal("informers of the driver's objects did not sync")
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), created...)
	}
}

func meta(obj any) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T is not an object", obj)
	}
	return m, nil
}

// countManaged counts the objects of kind in the etcd namespace labelled as the driver's.
func countManaged(ctx context.Context, r *rig.Rig, kind string) (int, error) {
	o := metav1.ListOptions{LabelSelector: labels.Set{rig.ManagedByLabel: rig.ManagedByValue}.String()}
	switch kind {
	case "Job":
		l, err := r.Kube.BatchV1().Jobs(r.Namespace).List(ctx, o)
		if err != nil {
			return 0, err
		}
		return len(l.Items), nil
	case "PersistentVolumeClaim":
		l, err := r.Kube.CoreV1().PersistentVolumeClaims(r.Namespace).List(ctx, o)
		if err != nil {
			return 0, err
		}
		return len(l.Items), nil
	case "Secret":
		l, err := r.Kube.CoreV1().Secrets(r.Namespace).List(ctx, o)
		if err != nil {
			return 0, err
		}
		return len(l.Items), nil
	}
	return 0, fmt.Errorf("unknown kind %s", kind)
}
