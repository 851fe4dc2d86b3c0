package driver

import (
	"bytes"
	"context"
	"strings"
	"testing"

	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

// The restore reads a snapshot whose PVC went with its namespace from the volume the record names,
// as long as that volume is still bound to the snapshot's PVC (Released); otherwise it says what is gone.
func TestSnapshotVolumeOfReleasedVolume(t *testing.T) {
	rec := restoreTestRecord("data-main-0")
	released := newBoundPV("pv-snap", rec.Namespace, snapshotPVCName(rec.ID), corev1.PersistentVolumeReclaimRetain)
	released.Status.Phase = corev1.VolumeReleased
	rebound := newBoundPV("pv-snap", "elsewhere", "data", corev1.PersistentVolumeReclaimRetain)
	boundPVC := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: snapshotPVCName(rec.ID), Namespace: rec.Namespace},
		Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-snap"}, Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound}}
	cases := []struct {
		name     string
		volume   string // the record's
		objs     []runtime.Object
		wantGone bool
		wantErr  string
	}{
		{name: "PVC bound", volume: "pv-snap", objs: []runtime.Object{boundPVC, released}},
		{name: "PVC gone, volume Released", volume: "pv-snap", objs: []runtime.Object{released}, wantGone: true},
		{name: "PVC and volume gone", volume: "pv-snap", wantGone: true, wantErr: "PersistentVolume pv-snap of snapshot " + rec.ID},
		{name: "volume bound to another claim", volume: "pv-snap", objs: []runtime.Object{rebound}, wantGone: true, wantErr: "is not snapshot " + rec.ID + "'s volume any more"},
		{name: "record without a volume", objs: []runtime.Object{released}, wantErr: "snapshot PVC etcd/" + rec.ID},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := *rec
			r.Volume = tc.volume
			kube := fake.NewClientset(tc.objs...)
			gone, err := snapshotClaimGone(context.Background(), kube, &r)
			if err != nil || gone != tc.wantGone {
				t.Errorf("snapshotClaimGone = %t, %v; want %t", gone, err, tc.wantGone)
			}
			pv, err := snapshotVolumeOf(context.Background(), kube, &r)
			if checkErr(t, err, tc.wantErr) {
				return
			}
			if pv.Name != "pv-snap" {
				t.Errorf("volume %s; want pv-snap", pv.Name)
			}
		})
	}
}

// A restore of a snapshot whose PVC and volume are both gone is refused before anything changes,
// naming the volume; with the volume kept (Released) the plan reads it through the snapshot view even
// in the snapshot's own namespace.
func TestRestoreFromReleasedVolume(t *testing.T) {
	rec := restoreTestRecord("data-main-0", "data-main-1", "data-main-2")
	rec.Volume, rec.VolumeReclaimPolicy = "pv-snap", string(corev1.PersistentVolumeReclaimDelete)
	newCfg := func(kube *fake.Clientset, progress *bytes.Buffer) RestoreConfig {
		return RestoreConfig{Kube: kube, Snap: snapfake.NewSimpleClientset(), DriverName: "etcd-snapshot.csi.io", MetadataNamespace: "kube-system",
			ClusterLabel: "etcd.io/cluster", SnapshotID: rec.ID, BumpRevision: DefaultBumpRevision, Progress: progress}
	}
	withoutSnapshotPVC := func(extra ...runtime.Object) *fake.Clientset {
		kube := restoreCluster(t, rec, extra...)
		if err := kube.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("persistentvolumeclaims"), rec.Namespace, snapshotPVCName(rec.ID)); err != nil {
			t.Fatal(err)
		}
		return kube
	}

	kube := withoutSnapshotPVC()
	before := len(kube.Actions())
	var progress bytes.Buffer
	_, err := Restore(context.Background(), newCfg(kube, &progress))
	if err == nil || !strings.Contains(err.Error(), "the snapshot's PVC etcd/"+rec.ID+" is gone and its volume cannot be read") || !strings.Contains(err.Error(), "pv-snap") {
		t.Fatalf("restore with the snapshot's volume gone: %v; want a refusal naming pv-snap", err)
	}
	for _, a := range kube.Actions()[before:] {
		if v := a.GetVerb(); v != "get" && v != "list" && v != "watch" {
			t.Errorf("a refused restore changed the cluster: %s %s", v, a.GetResource().Resource)
		}
	}

	released := newBoundPV("pv-snap", rec.Namespace, snapshotPVCName(rec.ID), corev1.PersistentVolumeReclaimRetain)
	released.Status.Phase = corev1.VolumeReleased
	kube = withoutSnapshotPVC(released)
	cfg := newCfg(kube, &progress)
	src, err := resolveRestoreSource(context.Background(), kube, cfg.Snap, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := planRestore(context.Background(), cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	if !p.snapshotViewRequired || p.SnapshotClaim != snapshotViewName(p.ID) {
		t.Errorf("plan reads the snapshot through claim %s (view %t); want the snapshot view %s", p.SnapshotClaim, p.snapshotViewRequired, snapshotViewName(p.ID))
	}
	if err := preflight(context.Background(), cfg, p); err != nil && strings.Contains(err.Error(), "snapshot's PVC") {
		t.Errorf("preflight refuses the kept volume: %v", err)
	}
}
