package driver

import (
	"context"
	"strings"
	"testing"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// TestResolveRestoreSourceRefusesUnusableSnapshots checks that a VolumeGroupSnapshot or
// VolumeSnapshot that is unbound, another driver's, or without a handle yet is refused with a message
// naming the object, for both APIs alike.
func TestResolveRestoreSourceRefusesUnusableSnapshots(t *testing.T) {
	const ns, driverName = "etcd-test", "etcd-snapshot.csi.io"
	vgs := func(name, content string) *groupsnapshotv1.VolumeGroupSnapshot {
		o := &groupsnapshotv1.VolumeGroupSnapshot{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
		if content != "" {
			o.Status = &groupsnapshotv1.VolumeGroupSnapshotStatus{BoundVolumeGroupSnapshotContentName: ptr.To(content)}
		}
		return o
	}
	vgsc := func(name, driver, handle string) *groupsnapshotv1.VolumeGroupSnapshotContent {
		o := &groupsnapshotv1.VolumeGroupSnapshotContent{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: groupsnapshotv1.VolumeGroupSnapshotContentSpec{Driver: driver}}
		if handle != "" {
			o.Status = &groupsnapshotv1.VolumeGroupSnapshotContentStatus{VolumeGroupSnapshotHandle: ptr.To(handle)}
		}
		return o
	}
	vs := func(name, content string) *snapshotv1.VolumeSnapshot {
		o := &snapshotv1.VolumeSnapshot{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
		if content != "" {
			o.Status = &snapshotv1.VolumeSnapshotStatus{BoundVolumeSnapshotContentName: ptr.To(content)}
		}
		return o
	}
	vsc := func(name, driver, handle string) *snapshotv1.VolumeSnapshotContent {
		o := &snapshotv1.VolumeSnapshotContent{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: snapshotv1.VolumeSnapshotContentSpec{Driver: driver}}
		if handle != "" {
			o.Status = &snapshotv1.VolumeSnapshotContentStatus{SnapshotHandle: ptr.To(handle)}
		}
		return o
	}
	objs := []runtime.Object{
		vgs("unbound", ""), vgs("other", "c-other"), vgs("nohandle", "c-nohandle"), vgs("norecord", "c-norecord"),
		vgsc("c-other", "hostpath.csi.k8s.io", "x"), vgsc("c-nohandle", driverName, ""), vgsc("c-norecord", driverName, "etcdgs-"+strings.Repeat("a", 32)),
		vs("unbound", ""), vs("other", "s-other"), vs("nohandle", "s-nohandle"),
		vsc("s-other", "hostpath.csi.k8s.io", "x"), vsc("s-nohandle", driverName, ""),
	}
	snap := snapfake.NewSimpleClientset(objs...)
	kube := kubefake.NewSimpleClientset()
	for _, tc := range []struct {
		group, single string
		want          string
	}{
		{group: "unbound", want: "VolumeGroupSnapshot etcd-test/unbound is not bound to a content yet"},
		{group: "other", want: "VolumeGroupSnapshot etcd-test/other was taken by CSI driver hostpath.csi.k8s.io, not " + driverName},
		{group: "nohandle", want: "VolumeGroupSnapshotContent c-nohandle has no snapshot handle yet; wait until VolumeGroupSnapshot etcd-test/nohandle is readyToUse"},
		{group: "missing", want: "VolumeGroupSnapshot etcd-test/missing: "},
		{group: "norecord", want: "has no record (ConfigMap kube-system/etcdgs-"},
		{single: "unbound", want: "VolumeSnapshot etcd-test/unbound is not bound to a content yet"},
		{single: "other", want: "VolumeSnapshot etcd-test/other was taken by CSI driver hostpath.csi.k8s.io, not " + driverName},
		{single: "nohandle", want: "VolumeSnapshotContent s-nohandle has no snapshot handle yet; wait until VolumeSnapshot etcd-test/nohandle is readyToUse"},
	} {
		cfg := RestoreConfig{DriverName: driverName, MetadataNamespace: "kube-system", Namespace: ns, GroupSnapshot: tc.group, VolumeSnapshot: tc.single}
		src, err := resolveRestoreSource(context.Background(), kube, snap, cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("group %q single %q: got %v, %v; want an error containing %q", tc.group, tc.single, src, err, tc.want)
		}
	}
}
