package rig

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
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
	sel := metav1.ListOptions{LabelSelector: labels.Set{ManagedByLabel: ManagedByValue}.String()}
	out := DriverObjects{}
	add := func(kind, ns, name string, uid types.UID) {
		if ns != "" {
			name = ns + "/" + name
		}
		out[uid] = kind + " " + name
	}
	all := metav1.NamespaceAll
	jobs, err := r.Kube.BatchV1().Jobs(all).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("rig: list Jobs: %w", err)
	}
	for _, o := range jobs.Items {
		add("Job", o.Namespace, o.Name, o.UID)
	}
	pods, err := r.Kube.CoreV1().Pods(all).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("rig: list Pods: %w", err)
	}
	for _, o := range pods.Items {
		add("Pod", o.Namespace, o.Name, o.UID)
	}
	pvcs, err := r.Kube.CoreV1().PersistentVolumeClaims(all).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("rig: list PersistentVolumeClaims: %w", err)
	}
	for _, o := range pvcs.Items {
		add("PersistentVolumeClaim", o.Namespace, o.Name, o.UID)
	}
	secrets, err := r.Kube.CoreV1().Secrets(all).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("rig: list Secrets: %w", err)
	}
	for _, o := range secrets.Items {
		add("Secret", o.Namespace, o.Name, o.UID)
	}
	records, err := r.Kube.CoreV1().ConfigMaps(DriverNamespace).List(ctx, sel)
	if err != nil {
		return nil, fmt.Errorf("rig: list records: %w", err)
	}
	for _, o := range records.Items {
		add("ConfigMap", o.Namespace, o.Name, o.UID)
	}
	groups, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotContents().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("rig: list VolumeGroupSnapshotContents: %w", err)
	}
	for _, o := range groups.Items {
		if o.Spec.Driver == r.DriverName {
			add("VolumeGroupSnapshotContent", "", o.Name, o.UID)
		}
	}
	contents, err := r.Snap.SnapshotV1().VolumeSnapshotContents().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("rig: list VolumeSnapshotContents: %w", err)
	}
	for _, o := range contents.Items {
		if o.Spec.Driver == r.DriverName {
			add("VolumeSnapshotContent", "", o.Name, o.UID)
		}
	}
	return out, nil
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
