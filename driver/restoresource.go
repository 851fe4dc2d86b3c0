package driver

import (
	"context"
	"fmt"
	"strings"

	snapclientset "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// restoreSource is the snapshot a restore starts from: its record and, when the operator named one,
// the VolumeGroupSnapshot or VolumeSnapshot that Events about the restore are reported on.
type restoreSource struct {
	Record *Record
	// Object is the VolumeGroupSnapshot or VolumeSnapshot named on the command line, nil for -snapshot-id.
	Object *corev1.ObjectReference
	// ClassSecret is the namespace/name of the client credentials the snapshot's class names, if any.
	ClassSecret string
}

// splitNamespaced parses "namespace/name", or "name" in defaultNamespace.
func splitNamespaced(flag, value, defaultNamespace string) (string, string, error) {
	ns, name, found := strings.Cut(value, "/")
	if !found {
		ns, name = defaultNamespace, value
	}
	if ns == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("%s %q: want <namespace>/<name> or <name>", flag, value)
	}
	return ns, name, nil
}

// resolveRestoreSource finds the record of the snapshot named by exactly one of the source flags and
// refuses anything that is not a Ready, verified snapshot of this driver.
func resolveRestoreSource(ctx context.Context, kube kubernetes.Interface, snap snapclientset.Interface, cfg RestoreConfig) (*restoreSource, error) {
	src := &restoreSource{}
	id := cfg.SnapshotID
	var bound *boundSnapshot
	var err error
	switch {
	case cfg.GroupSnapshot != "":
		bound, err = boundGroupSnapshot(ctx, snap, cfg)
	case cfg.VolumeSnapshot != "":
		bound, err = boundVolumeSnapshot(ctx, snap, cfg)
	}
	if err != nil {
		return nil, err
	}
	switch {
	case bound != nil:
		if id, err = bound.snapshotID(cfg.DriverName); err != nil {
			return nil, err
		}
		src.Object, src.ClassSecret = bound.ref, bound.classSecret
	case id == "":
		return nil, fmt.Errorf("no snapshot given: set one of -group-snapshot, -volume-snapshot or -snapshot-id")
	}
	if g := GroupIDOfMember(id); g != "" {
		id = g
	}
	if !isRecordID(id) {
		return nil, fmt.Errorf("snapshot id %q is not an id of this driver (etcdgs-<32 hex> or etcds-<32 hex>)", id)
	}
	cm, err := kube.CoreV1().ConfigMaps(cfg.MetadataNamespace).Get(ctx, recordName(id), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("snapshot %s has no record (ConfigMap %s/%s); check -metadata-namespace", id, cfg.MetadataNamespace, id)
	}
	if err != nil {
		return nil, fmt.Errorf("record of snapshot %s (ConfigMap %s/%s): %w", id, cfg.MetadataNamespace, id, err)
	}
	rec, err := decodeRecord(cm)
	if err != nil {
		return nil, fmt.Errorf("record of snapshot %s: %v", id, err)
	}
	if rec.Phase != PhaseReady {
		why := ""
		if rec.Error != "" {
			why = ": " + rec.Error
		}
		return nil, fmt.Errorf("snapshot %s (%s) is %s, not Ready%s; only a verified snapshot can be restored", id, rec.Name, rec.Phase, why)
	}
	if rec.SHA256 == "" || !rec.HashChecked {
		return nil, fmt.Errorf("snapshot %s (%s) records no verified sha256; it cannot be checked before restore", id, rec.Name)
	}
	src.Record = rec
	return src, nil
}

// boundSnapshot is what a VolumeGroupSnapshot or VolumeSnapshot and its bound content say about the
// snapshot behind them; the two APIs differ only in their types, so the checks are one.
type boundSnapshot struct {
	kind, contentKind string
	ns, name          string
	ref               *corev1.ObjectReference
	// content is the bound content's name, "" while unbound; driver and handle are the content's.
	content, driver, handle string
	classSecret             string
}

// snapshotID is the driver's snapshot id behind b, or why there is none to restore from.
func (b *boundSnapshot) snapshotID(driverName string) (string, error) {
	switch {
	case b.content == "":
		return "", fmt.Errorf("%s %s/%s is not bound to a content yet; wait until it is readyToUse", b.kind, b.ns, b.name)
	case b.driver != driverName:
		return "", fmt.Errorf("%s %s/%s was taken by CSI driver %s, not %s", b.kind, b.ns, b.name, b.driver, driverName)
	case b.handle == "":
		return "", fmt.Errorf("%s %s has no snapshot handle yet; wait until %s %s/%s is readyToUse", b.contentKind, b.content, b.kind, b.ns, b.name)
	}
	return b.handle, nil
}

// boundGroupSnapshot reads -group-snapshot and its content.
func boundGroupSnapshot(ctx context.Context, snap snapclientset.Interface, cfg RestoreConfig) (*boundSnapshot, error) {
	ns, name, err := splitNamespaced("-group-snapshot", cfg.GroupSnapshot, cfg.Namespace)
	if err != nil {
		return nil, err
	}
	b := &boundSnapshot{kind: "VolumeGroupSnapshot", contentKind: "VolumeGroupSnapshotContent", ns: ns, name: name}
	vgs, err := snap.GroupsnapshotV1().VolumeGroupSnapshots(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s %s/%s: %w", b.kind, ns, name, err)
	}
	b.ref = &corev1.ObjectReference{APIVersion: "groupsnapshot.storage.k8s.io/v1", Kind: b.kind, Namespace: ns, Name: name, UID: vgs.UID, ResourceVersion: vgs.ResourceVersion}
	if vgs.Status == nil || vgs.Status.BoundVolumeGroupSnapshotContentName == nil {
		return b, nil
	}
	b.content = *vgs.Status.BoundVolumeGroupSnapshotContentName
	content, err := snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(ctx, b.content, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s %s of %s %s/%s: %w", b.contentKind, b.content, b.kind, ns, name, err)
	}
	b.driver = content.Spec.Driver
	if content.Status != nil && content.Status.VolumeGroupSnapshotHandle != nil {
		b.handle = *content.Status.VolumeGroupSnapshotHandle
	}
	if class := content.Spec.VolumeGroupSnapshotClassName; class != nil {
		if c, err := snap.GroupsnapshotV1().VolumeGroupSnapshotClasses().Get(ctx, *class, metav1.GetOptions{}); err == nil {
			b.classSecret = secretRef(c.Parameters[upstreamGroupSnapshotterSecretNamespace], c.Parameters[upstreamGroupSnapshotterSecretName])
		}
	}
	return b, nil
}

// boundVolumeSnapshot reads -volume-snapshot and its content.
func boundVolumeSnapshot(ctx context.Context, snap snapclientset.Interface, cfg RestoreConfig) (*boundSnapshot, error) {
	ns, name, err := splitNamespaced("-volume-snapshot", cfg.VolumeSnapshot, cfg.Namespace)
	if err != nil {
		return nil, err
	}
	b := &boundSnapshot{kind: "VolumeSnapshot", contentKind: "VolumeSnapshotContent", ns: ns, name: name}
	vs, err := snap.SnapshotV1().VolumeSnapshots(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s %s/%s: %w", b.kind, ns, name, err)
	}
	b.ref = &corev1.ObjectReference{APIVersion: "snapshot.storage.k8s.io/v1", Kind: b.kind, Namespace: ns, Name: name, UID: vs.UID, ResourceVersion: vs.ResourceVersion}
	if vs.Status == nil || vs.Status.BoundVolumeSnapshotContentName == nil {
		return b, nil
	}
	b.content = *vs.Status.BoundVolumeSnapshotContentName
	content, err := snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, b.content, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s %s of %s %s/%s: %w", b.contentKind, b.content, b.kind, ns, name, err)
	}
	b.driver = content.Spec.Driver
	if content.Status != nil && content.Status.SnapshotHandle != nil {
		b.handle = *content.Status.SnapshotHandle
	}
	if class := content.Spec.VolumeSnapshotClassName; class != nil {
		if c, err := snap.SnapshotV1().VolumeSnapshotClasses().Get(ctx, *class, metav1.GetOptions{}); err == nil {
			b.classSecret = secretRef(c.Parameters[upstreamSnapshotterSecretNamespace], c.Parameters[upstreamSnapshotterSecretName])
		}
	}
	return b, nil
}

func secretRef(ns, name string) string {
	if ns == "" || name == "" {
		return ""
	}
	return ns + "/" + name
}
