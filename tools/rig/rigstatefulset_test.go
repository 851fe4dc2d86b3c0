package rig_test

import (
	"context"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// TestE2ERigEtcdStatefulSet starts a rig whose cluster under test is a StatefulSet
// (Options.EtcdStatefulSet) and takes a group snapshot of it with the unchanged example classes, as
// the user workflow and the playground do.
func TestE2ERigEtcdStatefulSet(t *testing.T) {
	r, ctx := startRig(t, 5*time.Minute, func(t testing.TB) *rig.Rig {
		return rig.ForTestWithOptions(t, rig.Options{EtcdStatefulSet: true})
	})
	if r.Etcd != nil || r.EtcdSet == nil {
		t.Fatalf("Etcd %v, EtcdSet %v: want only the StatefulSet", r.Etcd, r.EtcdSet)
	}
	s := r.EtcdSet
	if s.Name() != rig.EtcdClusterName || s.Namespace() != r.Namespace {
		t.Fatalf("cluster under test %s/%s, want %s/%s", s.Namespace(), s.Name(), r.Namespace, rig.EtcdClusterName)
	}
	if _, err := r.Kube.AppsV1().StatefulSets(r.Namespace).Get(ctx, rig.EtcdClusterName, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}

	if err := r.InstallExampleClasses(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 100
	written, err := r.WriteSampleData(ctx, "/rig-sts/", n)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateGroupSnapshot(ctx, "rig-sts"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer dcancel()
		if err := r.DeleteGroupSnapshot(dctx, "rig-sts"); err != nil {
			t.Errorf("delete VolumeGroupSnapshot: %v", err)
		}
	})
	ready, err := r.WaitGroupSnapshotReady(ctx, "rig-sts")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := r.GroupSnapshotRecord(ctx, ready)
	if err != nil {
		t.Fatal(err)
	}
	var pvcs, members []string
	for _, src := range rec.Sources {
		pvcs = append(pvcs, src.PVC)
	}
	for _, m := range rec.Members {
		members = append(members, m.Name)
	}
	slices.Sort(pvcs)
	slices.Sort(members)
	wantPVCs := []string{s.ClaimName(0), s.ClaimName(1), s.ClaimName(2)}
	wantMembers := []string{s.MemberName(0), s.MemberName(1), s.MemberName(2)}
	if !slices.Equal(pvcs, wantPVCs) || !slices.Equal(members, wantMembers) {
		t.Errorf("record %s: PVCs %v members %v, want %v and %v", rec.ID, pvcs, members, wantPVCs, wantMembers)
	}
	if rec.Revision < written || rec.Keys < n {
		t.Errorf("record %s: revision %d keys %d, want at least %d and %d", rec.ID, rec.Revision, rec.Keys, written, n)
	}
}
