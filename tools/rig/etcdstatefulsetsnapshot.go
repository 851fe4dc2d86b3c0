package rig

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// SnapshotClassName is the name of the VolumeGroupSnapshotClass and of the VolumeSnapshotClass that
// InstallSnapshotClasses makes for this cluster (class names are cluster-wide, hence the namespace).
func (s *EtcdStatefulSet) SnapshotClassName() string {
	return "etcd-snapshot-" + s.namespace + "-" + s.name
}

// InstallSnapshotClasses applies, for this cluster, copies of the example classes of manifests/examples
// named SnapshotClassName whose credentials parameters (*-secret-name, *-secret-namespace) name this
// cluster's client Secret, and the example credentials RoleBinding in this cluster's namespace, so
// that the snapshots of a cluster beside the one under test take the path a user's would. Delete
// removes the classes; the RoleBinding, shared by every cluster of the namespace, stays.
func (s *EtcdStatefulSet) InstallSnapshotClasses(ctx context.Context) error {
	files, err := filepath.Glob(filepath.Join(s.r.repoRoot, ExamplesDir, "*.yaml"))
	if err != nil {
		return err
	}
	objs, err := readManifests(files...)
	if err != nil {
		return err
	}
	var apply []manifest
	for _, m := range objs {
		obj := m.obj.DeepCopy()
		switch obj.GetKind() {
		case "VolumeGroupSnapshotClass", "VolumeSnapshotClass":
			obj.SetName(s.SnapshotClassName())
			params, _, err := unstructuredStringMap(obj.Object, "parameters")
			if err != nil {
				return fmt.Errorf("rig: %s %s: parameters: %w", m.source, obj.GetKind(), err)
			}
			for k := range params {
				switch {
				case strings.HasSuffix(k, "-secret-name"):
					params[k] = s.SecretName()
				case strings.HasSuffix(k, "-secret-namespace"):
					params[k] = s.namespace
				}
			}
			obj.Object["parameters"] = params
		case "RoleBinding":
			obj.SetNamespace(s.namespace)
		default:
			continue
		}
		apply = append(apply, manifest{obj: obj, source: m.source})
	}
	if len(apply) != 3 {
		return fmt.Errorf("rig: %s: want a VolumeGroupSnapshotClass, a VolumeSnapshotClass and a RoleBinding, found %d of them", ExamplesDir, len(apply))
	}
	return s.r.apply(ctx, apply, s.namespace)
}

// unstructuredStringMap reads obj[field] as a map of strings.
func unstructuredStringMap(obj map[string]any, field string) (map[string]any, bool, error) {
	v, ok := obj[field]
	if !ok {
		return map[string]any{}, false, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, true, fmt.Errorf("%s is a %T, not a map", field, v)
	}
	for k, x := range m {
		if _, ok := x.(string); !ok {
			return nil, true, fmt.Errorf("%s.%s is a %T, not a string", field, k, x)
		}
	}
	return m, true, nil
}

// deleteSnapshotClasses removes what InstallSnapshotClasses made, if anything.
func (s *EtcdStatefulSet) deleteSnapshotClasses(ctx context.Context) error {
	name := s.SnapshotClassName()
	err := s.r.Snap.GroupsnapshotV1().VolumeGroupSnapshotClasses().Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete VolumeGroupSnapshotClass %s: %w", name, err)
	}
	err = s.r.Snap.SnapshotV1().VolumeSnapshotClasses().Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete VolumeSnapshotClass %s: %w", name, err)
	}
	return nil
}

// CreateGroupSnapshot creates a dynamic VolumeGroupSnapshot name in the cluster's namespace selecting
// its PVCs (Selector) with its class (InstallSnapshotClasses first). Wait with
// Rig.WaitGroupSnapshotReadyIn, delete with Rig.DeleteGroupSnapshotIn.
func (s *EtcdStatefulSet) CreateGroupSnapshot(ctx context.Context, name string) (*groupsnapshotv1.VolumeGroupSnapshot, error) {
	vgs := &groupsnapshotv1.VolumeGroupSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.namespace},
		Spec: groupsnapshotv1.VolumeGroupSnapshotSpec{
			VolumeGroupSnapshotClassName: ptr.To(s.SnapshotClassName()),
			Source: groupsnapshotv1.VolumeGroupSnapshotSource{
				Selector: &metav1.LabelSelector{MatchLabels: s.clusterLabels()},
			},
		},
	}
	out, err := s.r.Snap.GroupsnapshotV1().VolumeGroupSnapshots(s.namespace).Create(ctx, vgs, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("rig: create VolumeGroupSnapshot %s/%s: %w", s.namespace, name, err)
	}
	return out, nil
}

// CreateSnapshot creates a VolumeSnapshot name of member i's PVC with the cluster's class
// (InstallSnapshotClasses first); the driver saves the whole cluster.
func (s *EtcdStatefulSet) CreateSnapshot(ctx context.Context, name string, i int) (*snapshotv1.VolumeSnapshot, error) {
	if i < 0 || i >= s.members {
		return nil, fmt.Errorf("rig: no member %d in a cluster of %d", i, s.members)
	}
	vs := &snapshotv1.VolumeSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.namespace},
		Spec: snapshotv1.VolumeSnapshotSpec{
			Source:                  snapshotv1.VolumeSnapshotSource{PersistentVolumeClaimName: ptr.To(s.ClaimName(i))},
			VolumeSnapshotClassName: ptr.To(s.SnapshotClassName()),
		},
	}
	out, err := s.r.Snap.SnapshotV1().VolumeSnapshots(s.namespace).Create(ctx, vs, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("rig: create VolumeSnapshot %s/%s: %w", s.namespace, name, err)
	}
	return out, nil
}
