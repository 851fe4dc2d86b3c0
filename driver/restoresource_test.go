package driver

import (
	"context"
	"fmt"
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
	// source returns a VolumeGroupSnapshot (group) or VolumeSnapshot bound to content, and that
	// content of driver with handle, when content is set.
	source := func(group bool, name, content, driver, handle string) []runtime.Object {
		meta, cmeta := metav1.ObjectMeta{Name: name, Namespace: ns}, metav1.ObjectMeta{Name: content}
		var h *string
		if handle != "" {
			h = ptr.To(handle)
		}
		if group {
			o := &groupsnapshotv1.VolumeGroupSnapshot{ObjectMeta: meta}
			if content == "" {
				return []runtime.Object{o}
			}
			o.Status = &groupsnapshotv1.VolumeGroupSnapshotStatus{BoundVolumeGroupSnapshotContentName: ptr.To(content)}
			return []runtime.Object{o, &groupsnapshotv1.VolumeGroupSnapshotContent{ObjectMeta: cmeta, Spec: groupsnapshotv1.VolumeGroupSnapshotContentSpec{Driver: driver},
				Status: &groupsnapshotv1.VolumeGroupSnapshotContentStatus{VolumeGroupSnapshotHandle: h}}}
		}
		o := &snapshotv1.VolumeSnapshot{ObjectMeta: meta}
		if content == "" {
			return []runtime.Object{o}
		}
		o.Status = &snapshotv1.VolumeSnapshotStatus{BoundVolumeSnapshotContentName: ptr.To(content)}
		return []runtime.Object{o, &snapshotv1.VolumeSnapshotContent{ObjectMeta: cmeta, Spec: snapshotv1.VolumeSnapshotContentSpec{Driver: driver},
			Status: &snapshotv1.VolumeSnapshotContentStatus{SnapshotHandle: h}}}
	}
	var objs []runtime.Object
	for _, group := range []bool{true, false} {
		objs = append(objs, source(group, "unbound", "", "", "")...)
		objs = append(objs, source(group, "other", fmt.Sprintf("c-other-%t", group), "hostpath.csi.k8s.io", "x")...)
		objs = append(objs, source(group, "nohandle", fmt.Sprintf("c-nohandle-%t", group), driverName, "")...)
	}
	objs = append(objs, source(true, "norecord", "c-norecord", driverName, "etcdgs-"+strings.Repeat("a", 32))...)
	snap := snapfake.NewSimpleClientset(objs...)
	kube := kubefake.NewSimpleClientset()
	for _, tc := range []struct {
		group, single string
		want          string
	}{
		{group: "unbound", want: "VolumeGroupSnapshot etcd-test/unbound is not bound to a content yet"},
		{group: "other", want: "VolumeGroupSnapshot etcd-test/other was taken by CSI driver hostpath.csi.k8s.io, not " + driverName},
		{group: "nohandle", want: "VolumeGroupSnapshotContent c-nohandle-true has no snapshot handle yet; wait until VolumeGroupSnapshot etcd-test/nohandle is readyToUse"},
		{group: "missing", want: "VolumeGroupSnapshot etcd-test/missing: "},
		{group: "norecord", want: "has no record (ConfigMap kube-system/etcdgs-"},
		{single: "unbound", want: "VolumeSnapshot etcd-test/unbound is not bound to a content yet"},
		{single: "other", want: "VolumeSnapshot etcd-test/other was taken by CSI driver hostpath.csi.k8s.io, not " + driverName},
		{single: "nohandle", want: "VolumeSnapshotContent c-nohandle-false has no snapshot handle yet; wait until VolumeSnapshot etcd-test/nohandle is readyToUse"},
	} {
		cfg := RestoreConfig{DriverName: driverName, MetadataNamespace: "kube-system", Namespace: ns, GroupSnapshot: tc.group, VolumeSnapshot: tc.single}
		src, err := resolveRestoreSource(context.Background(), kube, snap, cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("group %q single %q: got %v, %v; want an error containing %q", tc.group, tc.single, src, err, tc.want)
		}
	}
}
