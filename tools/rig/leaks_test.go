package rig

import (
	"context"
	"maps"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
)

// TestDriverObjects lists, through a fake API, the labelled objects of every namespace, the records
// only in DriverNamespace, and the contents of the driver's name only.
func TestDriverObjects(t *testing.T) {
	obj := func(apiVersion, kind, ns, name string, managed bool, driver string) runtime.Object {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion(apiVersion)
		u.SetKind(kind)
		u.SetNamespace(ns)
		u.SetName(name)
		u.SetUID(types.UID(kind + "/" + ns + "/" + name))
		if managed {
			u.SetLabels(map[string]string{ManagedByLabel: ManagedByValue})
		}
		if driver != "" {
			u.Object["spec"] = map[string]any{"driver": driver}
		}
		return u
	}
	const group, single = "groupsnapshot.storage.k8s.io/v1", "snapshot.storage.k8s.io/v1"
	listKinds := map[schema.GroupVersionResource]string{}
	for _, k := range driverKinds {
		listKinds[k.resource] = k.kind + "List"
	}
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds,
		obj("batch/v1", "Job", "etcd", "snap-1", true, ""),
		obj("batch/v1", "Job", "etcd", "someone-else", false, ""),
		obj("v1", "Pod", "other", "snap-1-x", true, ""),
		obj("v1", "PersistentVolumeClaim", "etcd", "snap-1", true, ""),
		obj("v1", "Secret", "etcd", "snap-1", true, ""),
		obj("v1", "Secret", "etcd", "unrelated", false, ""),
		obj("v1", "ConfigMap", DriverNamespace, "record-1", true, ""),
		obj("v1", "ConfigMap", "etcd", "labelled-elsewhere", true, ""),
		obj(group, "VolumeGroupSnapshotContent", "", "groupcontent-1", false, DriverName),
		obj(group, "VolumeGroupSnapshotContent", "", "other-driver", false, "hostpath.csi.k8s.io"),
		obj(single, "VolumeSnapshotContent", "", "content-1", false, DriverName),
		obj(single, "VolumeSnapshotContent", "", "other-driver", true, "hostpath.csi.k8s.io"),
	)
	r := &Rig{Dynamic: client, DriverName: DriverName}
	got, err := r.DriverObjects(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := DriverObjects{
		"Job/etcd/snap-1":                            "Job etcd/snap-1",
		"Pod/other/snap-1-x":                         "Pod other/snap-1-x",
		"PersistentVolumeClaim/etcd/snap-1":          "PersistentVolumeClaim etcd/snap-1",
		"Secret/etcd/snap-1":                         "Secret etcd/snap-1",
		"ConfigMap/" + DriverNamespace + "/record-1": "ConfigMap " + DriverNamespace + "/record-1",
		"VolumeGroupSnapshotContent//groupcontent-1": "VolumeGroupSnapshotContent groupcontent-1",
		"VolumeSnapshotContent//content-1":           "VolumeSnapshotContent content-1",
	}
	if !maps.Equal(got, want) {
		t.Errorf("DriverObjects() = %v\nwant %v", got, want)
	}
}
