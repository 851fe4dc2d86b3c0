package rig

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
)

// DriverObjects maps the UID of each object of the driver's snapshots to "Kind namespace/name".
type DriverObjects map[types.UID]string

// DriverObjects lists, in every namespace, what snapshots leave behind when they are not cleaned up:
// the Jobs, Pods, PVCs and Secrets labelled as the driver's, the records (ConfigMaps labelled as the
// driver's in DriverNamespace), and the VolumeGroupSnapshotContents and VolumeSnapshotContents of
// the driver's name. Restore Jobs carry another managed-by value and are not listed.
func (r *Rig) DriverObjects(ctx context.Context) (DriverObjects, error) {
	labelled := metav1.ListOptions{LabelSelector: labels.Set{ManagedByLabel: ManagedByValue}.String()}
	out := DriverObjects{}
	for _, k := range driverKinds {
		opts := labelled
		if k.byDriver {
			opts = metav1.ListOptions{}
		}
		list, err := r.Dynamic.Resource(k.resource).Namespace(k.namespace).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("rig: list %s: %w", k.resource.Resource, err)
		}
		for _, o := range list.Items {
			if driver, _, _ := unstructured.NestedString(o.Object, "spec", "driver"); k.byDriver && driver != r.DriverName {
				continue
			}
			name := o.GetName()
			if o.GetNamespace() != "" {
				name = o.GetNamespace() + "/" + name
			}
			out[o.GetUID()] = k.kind + " " + name
		}
	}
	return out, nil
}

// driverKinds are the kinds DriverObjects lists: in namespace (all when empty) and labelled as the
// driver's, or, with byDriver, the contents whose spec.driver is the driver's name.
var driverKinds = []struct {
	kind      string
	resource  schema.GroupVersionResource
	namespace string
	byDriver  bool
}{
	{kind: "Job", resource: batchv1.SchemeGroupVersion.WithResource("jobs")},
	{kind: "Pod", resource: corev1.SchemeGroupVersion.WithResource("pods")},
	{kind: "PersistentVolumeClaim", resource: corev1.SchemeGroupVersion.WithResource("persistentvolumeclaims")},
	{kind: "Secret", resource: corev1.SchemeGroupVersion.WithResource("secrets")},
	{kind: "ConfigMap", resource: corev1.SchemeGroupVersion.WithResource("configmaps"), namespace: DriverNamespace}, // the records
	{kind: "VolumeGroupSnapshotContent", resource: groupsnapshotv1.SchemeGroupVersion.WithResource("volumegroupsnapshotcontents"), byDriver: true},
	{kind: "VolumeSnapshotContent", resource: snapshotv1.SchemeGroupVersion.WithResource("volumesnapshotcontents"), byDriver: true},
}

// Without returns the objects of o that are not in before.
func (o DriverObjects) Without(before DriverObjects) DriverObjects {
	out := DriverObjects{}
	for uid, name := range o {
		if _, ok := before[uid]; !ok {
			out[uid] = name
		}
	}
	return out
}

// String lists the objects sorted, or "none".
func (o DriverObjects) String() string {
	if len(o) == 0 {
		return "none"
	}
	names := make([]string, 0, len(o))
	for _, n := range o {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// WaitNoLeaks waits, polling every interval until ctx ends, until every object of the driver that was
// not in before (see DriverObjects) is gone, and returns those still there at the end: the leaks.
// Deletion goes through finalizers, garbage collection and the driver's sweeper, none of which
// announces that it is done, so there is nothing to watch for but the lists themselves.
func (r *Rig) WaitNoLeaks(ctx context.Context, before DriverObjects, interval time.Duration) (DriverObjects, error) {
	var left DriverObjects
	var lastErr error
	err := wait.PollUntilContextCancel(ctx, interval, true, func(ctx context.Context) (bool, error) {
		now, err := r.DriverObjects(ctx)
		if err != nil {
			lastErr = err
			return false, nil
		}
		left, lastErr = now.Without(before), nil
		return len(left) == 0, nil
	})
	if err != nil && left == nil {
		if lastErr != nil {
			return nil, lastErr
		}
		return nil, fmt.Errorf("rig: listing the driver's objects: %w", err)
	}
	return left, nil
}
