package driver

import (
	"context"
	"errors"
	"reflect"
	"testing"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func TestDynamicGroupSync(t *testing.T) {
	now := metav1.Now()
	bound := dgtContent
	preContent := "imported"
	foreign := dgtContentFor([]string{"somebody/else"}, snapshotv1.VolumeSnapshotContentRetain, "etcd", nil)
	foreign.Labels = nil
	ours := dgtContentFor([]string{"etcd-test/data-main-0"}, snapshotv1.VolumeSnapshotContentDelete, "etcd-default", nil)

	cases := []struct {
		name      string
		kube      []runtime.Object
		snap      []runtime.Object
		wantRetry bool // sync returns a retryable wait
		wantErr   bool // sync returns another error
		// wantContent is the only content expected afterwards; nil = none.
		wantContent *groupsnapshotv1.VolumeGroupSnapshotContent
		wantEvents  []string // reasons, in order
		wantClass   *string  // VolumeGroupSnapshot spec.volumeGroupSnapshotClassName afterwards
	}{
		{
			name:        "our class and selector",
			kube:        dgtCluster(),
			snap:        []runtime.Object{dgtVGS(), dgtEtcdClass()},
			wantContent: dgtContentFor(dgtHandles, snapshotv1.VolumeSnapshotContentDelete, "etcd", dgtSecretAnnotations),
			wantEvents:  []string{"CreatingGroupSnapshot"},
			wantClass:   new("etcd"),
		},
		{
			name:        "Retain class without secrets",
			kube:        dgtCluster(),
			snap:        []runtime.Object{dgtVGS(dgtClassName("keep")), dgtClass("keep", dgtDriver, snapshotv1.VolumeSnapshotContentRetain, false, nil)},
			wantContent: dgtContentFor(dgtHandles, snapshotv1.VolumeSnapshotContentRetain, "keep", nil),
			wantEvents:  []string{"CreatingGroupSnapshot"},
			wantClass:   new("keep"),
		},
		{
			name: "secret name from content and snapshot names",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(dgtClassName("tmpl")), dgtClass("tmpl", dgtDriver, snapshotv1.VolumeSnapshotContentDelete, false, map[string]string{
				"csi.storage.k8s.io/group-snapshotter-secret-name":      "${volumegroupsnapshot.name}-${volumegroupsnapshotcontent.name}",
				"csi.storage.k8s.io/group-snapshotter-secret-namespace": "creds",
			})},
			wantContent: dgtContentFor(dgtHandles, snapshotv1.VolumeSnapshotContentDelete, "tmpl", map[string]string{
				"groupsnapshot.storage.kubernetes.io/deletion-secret-name":      "backup-" + dgtContent,
				"groupsnapshot.storage.kubernetes.io/deletion-secret-namespace": "creds",
			}),
			wantEvents: []string{"CreatingGroupSnapshot"},
			wantClass:  new("tmpl"),
		},
		{
			name: "selector with matchExpressions",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(func(v *groupsnapshotv1.VolumeGroupSnapshot) {
				v.Spec.Source.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "etcd.io/cluster", Operator: metav1.LabelSelectorOpIn, Values: []string{"main"}},
				}}
			}), dgtEtcdClass()},
			wantContent: dgtContentFor(dgtHandles, snapshotv1.VolumeSnapshotContentDelete, "etcd", dgtSecretAnnotations),
			wantEvents:  []string{"CreatingGroupSnapshot"},
			wantClass:   new("etcd"),
		},
		{
			name:      "other driver's class",
			kube:      dgtCluster(),
			snap:      []runtime.Object{dgtVGS(dgtClassName("hostpath")), dgtEtcdClass(), dgtClass("hostpath", dgtPVDriver, snapshotv1.VolumeSnapshotContentDelete, false, nil)},
			wantClass: new("hostpath"),
		},
		{
			name:      "class does not exist yet",
			kube:      dgtCluster(),
			snap:      []runtime.Object{dgtVGS(dgtClassName("missing")), dgtEtcdClass()},
			wantClass: new("missing"),
		},
		{
			name:        "default class of our driver",
			kube:        dgtCluster(),
			snap:        []runtime.Object{dgtVGS(dgtNoClass), dgtClass("etcd-default", dgtDriver, snapshotv1.VolumeSnapshotContentDelete, true, dgtSecretParams), dgtEtcdClass()},
			wantContent: dgtContentFor(dgtHandles, snapshotv1.VolumeSnapshotContentDelete, "etcd-default", dgtSecretAnnotations),
			wantEvents:  []string{"CreatingGroupSnapshot"},
			wantClass:   new("etcd-default"),
		},
		{
			// The driver stopped between creating the content and naming the class.
			name:        "default class, our content exists, class not yet set",
			kube:        dgtCluster(),
			snap:        []runtime.Object{dgtVGS(dgtNoClass), dgtClass("etcd-default", dgtDriver, snapshotv1.VolumeSnapshotContentDelete, true, nil), ours},
			wantContent: ours,
			wantClass:   new("etcd-default"),
		},
		{
			name: "default class of the volumes' own driver wins",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(dgtNoClass),
				dgtClass("etcd-default", dgtDriver, snapshotv1.VolumeSnapshotContentDelete, true, nil),
				dgtClass("hostpath-default", dgtPVDriver, snapshotv1.VolumeSnapshotContentDelete, true, nil)},
		},
		{
			name: "no default class of our driver",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(dgtNoClass), dgtEtcdClass()},
		},
		{
			name: "two default classes of our driver",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(dgtNoClass),
				dgtClass("a", dgtDriver, snapshotv1.VolumeSnapshotContentDelete, true, nil),
				dgtClass("b", dgtDriver, snapshotv1.VolumeSnapshotContentDelete, true, nil)},
			wantEvents: []string{"AmbiguousDefaultGroupSnapshotClass"},
		},
		{
			name: "already bound",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(func(v *groupsnapshotv1.VolumeGroupSnapshot) {
				v.Status = &groupsnapshotv1.VolumeGroupSnapshotStatus{BoundVolumeGroupSnapshotContentName: &bound}
			}), dgtEtcdClass()},
			wantClass: new("etcd"),
		},
		{
			name: "pre-provisioned",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(func(v *groupsnapshotv1.VolumeGroupSnapshot) {
				v.Spec.Source = groupsnapshotv1.VolumeGroupSnapshotSource{VolumeGroupSnapshotContentName: &preContent}
			}), dgtEtcdClass()},
			wantClass: new("etcd"),
		},
		{
			name: "being deleted",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(func(v *groupsnapshotv1.VolumeGroupSnapshot) {
				v.DeletionTimestamp = &now
				v.Finalizers = []string{"test/keep"}
			}), dgtEtcdClass()},
			wantClass: new("etcd"),
		},
		{
			name:       "no matching PVCs",
			kube:       []runtime.Object{dgtPVC(dgtNamespace, "data-other-0", map[string]string{"etcd.io/cluster": "other"}, corev1.ClaimBound)},
			snap:       []runtime.Object{dgtVGS(), dgtEtcdClass()},
			wantRetry:  true,
			wantEvents: []string{"NoMatchingPersistentVolumeClaims"},
			wantClass:  new("etcd"),
		},
		{
			name: "a PVC not bound",
			kube: []runtime.Object{
				dgtPVC(dgtNamespace, "data-main-0", dgtMain, corev1.ClaimBound),
				dgtPVC(dgtNamespace, "data-main-1", dgtMain, corev1.ClaimPending),
			},
			snap:       []runtime.Object{dgtVGS(), dgtEtcdClass()},
			wantRetry:  true,
			wantEvents: []string{"PersistentVolumeClaimNotBound"},
			wantClass:  new("etcd"),
		},
		{
			name: "secret namespace parameter missing",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(dgtClassName("half")), dgtClass("half", dgtDriver, snapshotv1.VolumeSnapshotContentDelete, false, map[string]string{
				"csi.storage.k8s.io/group-snapshotter-secret-name": "main-client-tls",
			})},
			wantErr:    true,
			wantEvents: []string{"InvalidSecretParameters"},
			wantClass:  new("half"),
		},
		{
			name: "secret name uses an unknown token",
			kube: dgtCluster(),
			snap: []runtime.Object{dgtVGS(dgtClassName("bad")), dgtClass("bad", dgtDriver, snapshotv1.VolumeSnapshotContentDelete, false, map[string]string{
				"csi.storage.k8s.io/group-snapshotter-secret-name":      "${pvc.name}",
				"csi.storage.k8s.io/group-snapshotter-secret-namespace": "creds",
			})},
			wantErr:    true,
			wantEvents: []string{"InvalidSecretParameters"},
			wantClass:  new("bad"),
		},
		{
			name:        "content of that name exists, not ours",
			kube:        dgtCluster(),
			snap:        []runtime.Object{dgtVGS(), dgtEtcdClass(), foreign},
			wantContent: foreign,
			wantClass:   new("etcd"),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newDGTFixture(t, tc.kube, tc.snap)
			key := dgtNamespace + "/backup"
			err := f.ctrl.sync(context.Background(), key)
			switch {
			case tc.wantRetry:
				if !errors.Is(err, errDGRetry) {
					t.Fatalf("sync = %v, want a retryable wait", err)
				}
			case tc.wantErr:
				if err == nil || errors.Is(err, errDGRetry) {
					t.Fatalf("sync = %v, want a failure", err)
				}
			case err != nil:
				t.Fatalf("sync: %v", err)
			}

			f.checkClass(t, tc.wantClass)

			// A second pass (resync, restart, a second replica) changes nothing.
			if err2 := f.ctrl.sync(context.Background(), key); (err == nil) != (err2 == nil) {
				t.Fatalf("second sync = %v, first = %v", err2, err)
			}

			got := f.contents(t)
			switch {
			case tc.wantContent == nil && len(got) != 0:
				t.Fatalf("contents = %+v, want none", got)
			case tc.wantContent != nil && len(got) != 1:
				t.Fatalf("got %d contents, want exactly 1: %+v", len(got), got)
			case tc.wantContent != nil:
				dgtCompareContent(t, &got[0], tc.wantContent)
			}

			var reasons []string
			for _, e := range f.events(t) {
				reasons = append(reasons, e.Reason)
				if e.InvolvedObject.Kind != "VolumeGroupSnapshot" || e.InvolvedObject.Name != "backup" || e.InvolvedObject.UID != dgtUID {
					t.Errorf("event %s is about %+v, want the VolumeGroupSnapshot", e.Reason, e.InvolvedObject)
				}
				if wantType := corev1.EventTypeWarning; e.Reason == "CreatingGroupSnapshot" {
					if e.Type != corev1.EventTypeNormal {
						t.Errorf("event %s has type %s, want Normal", e.Reason, e.Type)
					}
				} else if e.Type != wantType {
					t.Errorf("event %s has type %s, want %s", e.Reason, e.Type, wantType)
				}
			}
			if !reflect.DeepEqual(reasons, tc.wantEvents) {
				t.Errorf("event reasons = %q, want %q", reasons, tc.wantEvents)
			}

			f.checkClass(t, tc.wantClass)
		})
	}
}
