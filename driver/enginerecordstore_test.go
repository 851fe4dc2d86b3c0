package driver

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// testRecord is a Ready record of a three-member group, the shape real records have.
func testRecord(i int) *Record {
	id := snapshotID(fmt.Sprintf("groupsnapshot-%d", i), true)
	rec := &Record{ID: id, Name: fmt.Sprintf("groupsnapshot-%d", i), Group: true, Phase: PhaseReady, Namespace: fxNS, Cluster: fxCluster,
		ParamsHash: paramsHash(nil), CreatedAt: time.Unix(1700000000, 0).UTC(), SizeBytes: 1 << 20, SHA256: "ab", Revision: 42}
	for m := range 3 {
		vol := fmt.Sprintf("%s/data-main-%d", fxNS, m)
		rec.Sources = append(rec.Sources, SourceRecord{VolumeID: vol, PVC: fmt.Sprintf("data-main-%d", m), SnapshotID: memberSnapshotID(id, vol)})
		rec.Members = append(rec.Members, MemberRecord{ID: fmt.Sprintf("%x", m+1), Name: fmt.Sprintf("main-%d", m),
			PeerURLs: []string{fmt.Sprintf("https://main-%d.main:2380", m)}, ClientURLs: []string{fmt.Sprintf("https://main-%d.main:2379", m)}})
	}
	rec.SourceMember = &SourceMember{ID: "1", Name: "main-0", Endpoint: "https://main-0.main:2379", Leader: true}
	return rec
}

// recordObjects encodes n records as ConfigMaps for a fake clientset.
func recordObjects(tb testing.TB, n int) []k8sruntime.Object {
	tb.Helper()
	objs := make([]k8sruntime.Object, 0, n)
	for i := range n {
		cm, err := encodeRecord(fxMetaNS, testRecord(i))
		if err != nil {
			tb.Fatal(err)
		}
		objs = append(objs, cm)
	}
	return objs
}

// storeFixture is a metadata store backed by a started informer over a fake clientset holding objs.
func storeFixture(tb testing.TB, objs ...k8sruntime.Object) (*metadataStore, *fake.Clientset) {
	tb.Helper()
	kube := fake.NewClientset(objs...)
	return startStore(tb, kube), kube
}

// startStore starts an engine's informers over kube and returns its metadata store.
func startStore(tb testing.TB, kube *fake.Clientset) *metadataStore {
	tb.Helper()
	e, err := NewEngine(EngineConfig{Kube: kube, MetadataNamespace: fxMetaNS, ClusterLabel: fxClusterLabel, EtcdImage: "e", DriverImage: "d"})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	if err := e.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	return e.meta
}

func TestMetadataRoundTrip(t *testing.T) {
	store, _ := storeFixture(t)
	ctx := context.Background()
	rec := testRecord(1)
	if _, created, err := store.create(ctx, rec); err != nil || !created {
		t.Fatalf("create: %v, %v", created, err)
	}
	// Read-your-writes before the informer has caught up: a cache miss asks the API server.
	got, err := store.get(ctx, rec.ID)
	if err != nil || got == nil || got.ID != rec.ID || len(got.Members) != 3 || got.Version != recordVersion {
		t.Fatalf("get = %+v, %v", got, err)
	}
	existing, created, err := store.create(ctx, testRecord(1))
	if err != nil || created || existing == nil || existing.ID != rec.ID {
		t.Fatalf("second create = %+v, %v, %v; want the existing record", existing, created, err)
	}
	if err := store.delete(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	if err := store.delete(ctx, rec.ID); err != nil {
		t.Fatalf("deleting a missing record: %v", err)
	}
	if got, err := store.getLive(ctx, rec.ID); err != nil || got != nil {
		t.Fatalf("after delete: %+v, %v", got, err)
	}
}

// An update that meets a Conflict re-reads the record from the API server and applies the change
// again; the write carries the resourceVersion it was read at.
func TestMetadataUpdateRetriesOnConflict(t *testing.T) {
	store, kube := storeFixture(t, recordObjects(t, 1)...)
	ctx := context.Background()
	id := testRecord(0).ID
	failOnce(kube, "update", "configmaps", apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, id, fmt.Errorf("the object has been modified")))

	calls := 0
	out, err := store.update(ctx, id, func(r *Record) error {
		calls++
		r.Phase, r.Error = PhaseFailed, "boom"
		return nil
	})
	if err != nil || out == nil || out.Phase != PhaseFailed {
		t.Fatalf("update = %+v, %v", out, err)
	}
	if calls != 2 {
		t.Errorf("mutate ran %d times; want 2 (conflict, then success)", calls)
	}
	updates, liveGets := 0, 0
	for _, a := range kube.Actions() {
		if a.GetResource().Resource != "configmaps" {
			continue
		}
		switch a.GetVerb() {
		case "update":
			updates++
		case "get":
			liveGets++
		}
	}
	if updates != 2 || liveGets != 1 {
		t.Errorf("%d updates and %d API reads; want 2 updates and 1 re-read after the conflict", updates, liveGets)
	}
	got, err := store.getLive(ctx, id)
	if err != nil || got.Phase != PhaseFailed || got.Error != "boom" {
		t.Fatalf("stored record %+v, %v", got, err)
	}
}

// A conflict that never ends is reported as Aborted (retryable), not swallowed.
func TestMetadataUpdatePersistentConflict(t *testing.T) {
	store, kube := storeFixture(t, recordObjects(t, 1)...)
	id := testRecord(0).ID
	kube.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, k8sruntime.Object, error) {
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, id, fmt.Errorf("modified"))
	})
	_, err := store.update(context.Background(), id, func(r *Record) error { r.Error = "x"; return nil })
	if status.Code(err) != codes.Aborted {
		t.Fatalf("update = %v; want Aborted", err)
	}
}

func TestDecodeRecordRejectsGarbage(t *testing.T) {
	for name, cm := range map[string]*corev1.ConfigMap{
		"no key":   {ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: fxMetaNS}},
		"not json": {ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: fxMetaNS}, Data: map[string]string{recordKey: "{"}},
	} {
		if _, err := decodeRecord(cm); status.Code(err) != codes.Internal || !hasAll(err.Error(), "kube-system/x", recordKey) {
			t.Errorf("%s: %v; want Internal naming the ConfigMap and key", name, err)
		}
	}
}

// The per-call cost of metadata reads and writes must not grow with the number of snapshots: compare
// ns/op across the sizes (go test -bench Metadata -run '^$' ./driver/). The benchmarks use the simple
// fake clientset: the field-managed one rebuilds a REST mapper on every write (~1.5 ms), which would
// drown the store's own cost.
// benchStore is a started store holding n records, and their ids.
func benchStore(b *testing.B, n int) (*metadataStore, []string) {
	b.Helper()
	store := startStore(b, fake.NewSimpleClientset(recordObjects(b, n)...))
	ids := make([]string, n)
	for i := range ids {
		ids[i] = testRecord(i).ID
	}
	return store, ids
}

func BenchmarkMetadataGet(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			store, ids := benchStore(b, n)
			ctx := context.Background()
			for i := 0; b.Loop(); i++ {
				rec, err := store.get(ctx, ids[i%n])
				if err != nil || rec == nil {
					b.Fatalf("get: %v", err)
				}
			}
		})
	}
}

func BenchmarkMetadataPut(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			store, ids := benchStore(b, n)
			ctx := context.Background()
			for i := 0; b.Loop(); i++ {
				id := ids[i%n]
				before, err := store.cache.Get(id)
				if err != nil {
					b.Fatal(err)
				}
				rec, err := store.update(ctx, id, func(r *Record) error { r.Keys++; return nil })
				if err != nil || rec == nil {
					b.Fatalf("update: %v", err)
				}
				// A Put counts once the cache shows it (what the next Get reads). Waiting also keeps
				// the fake watch, which panics beyond 100 pending events, from being flooded.
				for {
					if now, _ := store.cache.Get(id); now != before {
						break
					}
					runtime.Gosched()
				}
			}
		})
	}
}
