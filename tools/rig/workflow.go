package rig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
)

// Files and keys of the documented user workflow (manifests/examples, driver/enginerecord.go).
const (
	// ExamplesDir holds the example classes and the credentials RoleBinding, relative to the repository root.
	ExamplesDir = "manifests/examples"
	// RecordKey is the data key of the metadata ConfigMap holding driver.Record as JSON.
	RecordKey = "record.json"
	// SnapshotFile is the snapshot's file name at the root of its snapshot PVC's volume.
	SnapshotFile = "snapshot.db"
	// ManagedByLabel and ManagedByValue mark every object the driver creates.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "etcd-snapshot-driver"
	// SnapshotIDLabel carries the group or single snapshot id on every object the driver creates.
	SnapshotIDLabel = "snapshot.etcd.io/id"
)

// exampleClassNames returns the names of the VolumeGroupSnapshotClass and VolumeSnapshotClass in
// manifests/examples, so the workflow follows the examples a user copies.
func (r *Rig) exampleClassNames() (group, single string, err error) {
	files, err := filepath.Glob(filepath.Join(r.repoRoot, ExamplesDir, "*.yaml"))
	if err != nil {
		return "", "", err
	}
	objs, err := readManifests(files...)
	if err != nil {
		return "", "", err
	}
	for _, m := range objs {
		switch m.obj.GetKind() {
		case "VolumeGroupSnapshotClass":
			group = m.obj.GetName()
		case "VolumeSnapshotClass":
			single = m.obj.GetName()
		}
	}
	if group == "" || single == "" {
		return "", "", fmt.Errorf("rig: %s lacks a VolumeGroupSnapshotClass or a VolumeSnapshotClass", ExamplesDir)
	}
	return group, single, nil
}

// GroupSnapshotClassName is the name of the example VolumeGroupSnapshotClass (manifests/examples).
func (r *Rig) GroupSnapshotClassName() (string, error) {
	g, _, err := r.exampleClassNames()
	return g, err
}

// SnapshotClassName is the name of the example VolumeSnapshotClass (manifests/examples).
func (r *Rig) SnapshotClassName() (string, error) {
	_, s, err := r.exampleClassNames()
	return s, err
}

// InstallExampleClasses applies every manifest of manifests/examples unchanged (the
// VolumeGroupSnapshotClass, the VolumeSnapshotClass and the RoleBinding that lets the driver's
// ServiceAccount read the credential Secret). Server-side apply makes it idempotent.
func (r *Rig) InstallExampleClasses(ctx context.Context) error {
	files, err := filepath.Glob(filepath.Join(r.repoRoot, ExamplesDir, "*.yaml"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("rig: no *.yaml in %s", ExamplesDir)
	}
	objs, err := readManifests(files...)
	if err != nil {
		return err
	}
	// The example schedule would take snapshots under every test's feet, and the PrometheusRule needs
	// the prometheus-operator's CRD: tests apply those themselves when they want them.
	var classes []manifest
	for _, m := range objs {
		if k := m.obj.GetKind(); k != "EtcdSnapshotSchedule" && k != "PrometheusRule" {
			classes = append(classes, m)
		}
	}
	return r.apply(ctx, classes, r.Namespace)
}

// SampleKV is the i-th key and value WriteSampleData writes under prefix.
func SampleKV(prefix string, i int) (key, value string) {
	return fmt.Sprintf("%s%06d", prefix, i), fmt.Sprintf("value-%06d-of-%s", i, prefix)
}

// sampleBatch stays below etcd's default --max-txn-ops (128).
const sampleBatch = 100

// WriteSampleData writes n keys (see SampleKV) into the etcd cluster under test through EtcdClient
// and returns the revision of the last write.
func (r *Rig) WriteSampleData(ctx context.Context, prefix string, n int) (revision int64, err error) {
	cli, err := r.EtcdClient()
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	for start := 0; start < n; start += sampleBatch {
		var ops []clientv3.Op
		for i := start; i < n && i < start+sampleBatch; i++ {
			k, v := SampleKV(prefix, i)
			ops = append(ops, clientv3.OpPut(k, v))
		}
		resp, err := cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return 0, fmt.Errorf("rig: write sample keys %s[%d..]: %w", prefix, start, err)
		}
		revision = resp.Header.Revision
	}
	return revision, nil
}

// CreateGroupSnapshot creates a dynamic VolumeGroupSnapshot named name in r.Namespace selecting the
// PVCs of the etcd cluster under test (ClusterLabel=EtcdClusterName) with the example class.
func (r *Rig) CreateGroupSnapshot(ctx context.Context, name string) (*groupsnapshotv1.VolumeGroupSnapshot, error) {
	class, err := r.GroupSnapshotClassName()
	if err != nil {
		return nil, err
	}
	return r.CreateGroupSnapshotWithClass(ctx, name, class)
}

// CreateGroupSnapshotWithClass is CreateGroupSnapshot with the VolumeGroupSnapshotClass class.
func (r *Rig) CreateGroupSnapshotWithClass(ctx context.Context, name, class string) (*groupsnapshotv1.VolumeGroupSnapshot, error) {
	vgs := &groupsnapshotv1.VolumeGroupSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.Namespace},
		Spec: groupsnapshotv1.VolumeGroupSnapshotSpec{
			VolumeGroupSnapshotClassName: ptr.To(class),
			Source: groupsnapshotv1.VolumeGroupSnapshotSource{
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{ClusterLabel: EtcdClusterName}},
			},
		},
	}
	out, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshots(r.Namespace).Create(ctx, vgs, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("rig: create VolumeGroupSnapshot %s/%s: %w", r.Namespace, name, err)
	}
	return out, nil
}

// WaitGroupSnapshotReady watches the VolumeGroupSnapshot name in r.Namespace until status.readyToUse
// is true and returns it. A status.error does not end the wait (upstream reports transient errors
// there, such as the driver mismatch warning before it sees the driver's content). When ctx ends
// first, the error quotes the last status.error and the latest Warning events of the
// VolumeGroupSnapshot and of its content.
func (r *Rig) WaitGroupSnapshotReady(ctx context.Context, name string) (*groupsnapshotv1.VolumeGroupSnapshot, error) {
	return r.WaitGroupSnapshotReadyIn(ctx, r.Namespace, name)
}

// WaitGroupSnapshotReadyIn is WaitGroupSnapshotReady for a VolumeGroupSnapshot in namespace.
func (r *Rig) WaitGroupSnapshotReadyIn(ctx context.Context, namespace, name string) (*groupsnapshotv1.VolumeGroupSnapshot, error) {
	client := r.Snap.GroupsnapshotV1().VolumeGroupSnapshots(namespace)
	var last *groupsnapshotv1.VolumeGroupSnapshot
	_, err := WatchNamed(ctx, name,
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return client.List(ctx, o) },
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return client.Watch(ctx, o) },
		&groupsnapshotv1.VolumeGroupSnapshot{},
		func(ev watch.Event) (bool, error) {
			if ev.Type == watch.Deleted {
				return false, fmt.Errorf("rig: VolumeGroupSnapshot %s/%s was deleted while waiting for it", namespace, name)
			}
			vgs, ok := ev.Object.(*groupsnapshotv1.VolumeGroupSnapshot)
			if !ok {
				return false, nil
			}
			last = vgs
			return vgs.Status != nil && ptr.Deref(vgs.Status.ReadyToUse, false), nil
		})
	if err == nil {
		return last, nil
	}
	return last, r.notReadyError(ctx, namespace, "VolumeGroupSnapshot", name, last, err)
}

// notReadyError explains why a VolumeGroupSnapshot did not become ready: its status.error and the
// latest Warning events of it and its content (read with a fresh context, since ctx may be over).
func (r *Rig) notReadyError(ctx context.Context, namespace, kind, name string, last *groupsnapshotv1.VolumeGroupSnapshot, cause error) error {
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var b strings.Builder
	fmt.Fprintf(&b, "rig: %s %s/%s not ready: %v", kind, namespace, name, cause)
	content := ""
	switch {
	case last == nil:
		b.WriteString("; never seen")
	case last.Status == nil:
		b.WriteString("; no status")
	default:
		if last.Status.Error != nil {
			fmt.Fprintf(&b, "; status.error: %q", ptr.Deref(last.Status.Error.Message, ""))
		} else {
			b.WriteString("; no status.error")
		}
		content = ptr.Deref(last.Status.BoundVolumeGroupSnapshotContentName, "")
	}
	if content == "" && last != nil {
		content = "groupsnapcontent-" + string(last.UID)
	}
	if content != "" {
		if c, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(qctx, content, metav1.GetOptions{}); err == nil {
			if c.Status != nil && c.Status.Error != nil {
				fmt.Fprintf(&b, "; content %s status.error: %q", content, ptr.Deref(c.Status.Error.Message, ""))
			}
		} else {
			fmt.Fprintf(&b, "; content %s: %v", content, err)
		}
	}
	for _, ev := range r.warnings(qctx, namespace, kind, name, 5) {
		fmt.Fprintf(&b, "\n  event on %s: %s", name, ev)
	}
	if content != "" {
		for _, ev := range r.warnings(qctx, metav1.NamespaceAll, "VolumeGroupSnapshotContent", content, 5) {
			fmt.Fprintf(&b, "\n  event on %s: %s", content, ev)
		}
	}
	return errors.New(b.String())
}

// warnings returns the latest n Warning events of an object, newest last, as "reason: message".
func (r *Rig) warnings(ctx context.Context, namespace, kind, name string, n int) []string {
	sel := fields.Set{"involvedObject.name": name, "involvedObject.kind": kind, "type": corev1.EventTypeWarning}.AsSelector().String()
	evs, err := r.Kube.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return []string{fmt.Sprintf("(events not listed: %v)", err)}
	}
	items := evs.Items
	sort.Slice(items, func(i, j int) bool { return eventTime(items[i]).Before(eventTime(items[j])) })
	if len(items) > n {
		items = items[len(items)-n:]
	}
	var out []string
	for _, e := range items {
		out = append(out, fmt.Sprintf("%s: %s (x%d)", e.Reason, e.Message, max(e.Count, 1)))
	}
	return out
}

func eventTime(e corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

// WatchNamed lists and watches the one object called name (through list and watch, for example a
// typed client's List and Watch) until cond holds. No polling; the current state counts as a first
// event.
func WatchNamed(ctx context.Context, name string,
	list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error),
	obj runtime.Object, cond watchtools.ConditionFunc,
) (*watch.Event, error) {
	return watchtools.UntilWithSync(ctx, nameListWatch(name, list, watchFn), obj, nil, cond)
}

// nameListWatch lists and watches only the object called name.
func nameListWatch(name string,
	list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error),
) *cache.ListWatch {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return list(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return watchFn(ctx, o)
		},
	}
}

// GroupSnapshotRecord follows a bound VolumeGroupSnapshot to the driver's metadata: its content's
// status.volumeGroupSnapshotHandle is the group id, and the ConfigMap of that name in the driver's
// namespace holds the record.
func (r *Rig) GroupSnapshotRecord(ctx context.Context, vgs *groupsnapshotv1.VolumeGroupSnapshot) (*driver.Record, error) {
	if vgs.Status == nil || ptr.Deref(vgs.Status.BoundVolumeGroupSnapshotContentName, "") == "" {
		return nil, fmt.Errorf("rig: VolumeGroupSnapshot %s/%s is not bound to a content", vgs.Namespace, vgs.Name)
	}
	name := *vgs.Status.BoundVolumeGroupSnapshotContentName
	content, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("rig: VolumeGroupSnapshotContent of %s/%s: %w", vgs.Namespace, vgs.Name, err)
	}
	if content.Status == nil || ptr.Deref(content.Status.VolumeGroupSnapshotHandle, "") == "" {
		return nil, fmt.Errorf("rig: VolumeGroupSnapshotContent %s has no status.volumeGroupSnapshotHandle", name)
	}
	return r.SnapshotRecord(ctx, *content.Status.VolumeGroupSnapshotHandle)
}

// SingleSnapshotRecord follows a bound VolumeSnapshot to the driver's metadata through its content's
// status.snapshotHandle.
func (r *Rig) SingleSnapshotRecord(ctx context.Context, vs *snapshotv1.VolumeSnapshot) (*driver.Record, error) {
	if vs.Status == nil || ptr.Deref(vs.Status.BoundVolumeSnapshotContentName, "") == "" {
		return nil, fmt.Errorf("rig: VolumeSnapshot %s/%s is not bound to a content", vs.Namespace, vs.Name)
	}
	name := *vs.Status.BoundVolumeSnapshotContentName
	content, err := r.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("rig: VolumeSnapshotContent of %s/%s: %w", vs.Namespace, vs.Name, err)
	}
	if content.Status == nil || ptr.Deref(content.Status.SnapshotHandle, "") == "" {
		return nil, fmt.Errorf("rig: VolumeSnapshotContent %s has no status.snapshotHandle", name)
	}
	return r.SnapshotRecord(ctx, *content.Status.SnapshotHandle)
}

// SnapshotRecord reads the record of snapshot id from its metadata ConfigMap (driver.Record).
func (r *Rig) SnapshotRecord(ctx context.Context, id string) (*driver.Record, error) {
	cm, err := r.Kube.CoreV1().ConfigMaps(DriverNamespace).Get(ctx, id, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("rig: metadata ConfigMap %s/%s: %w", DriverNamespace, id, err)
	}
	data, ok := cm.Data[RecordKey]
	if !ok {
		return nil, fmt.Errorf("rig: metadata ConfigMap %s/%s has no %s", DriverNamespace, id, RecordKey)
	}
	var rec driver.Record
	if err := json.Unmarshal([]byte(data), &rec); err != nil {
		return nil, fmt.Errorf("rig: metadata ConfigMap %s/%s: %s: %w", DriverNamespace, id, RecordKey, err)
	}
	return &rec, nil
}

// SnapshotFilePath returns the host path of a snapshot's file: the snapshot PVC (named by the record's
// id, in the etcd namespace), its bound PV, that PV's spec.csi.volumeHandle directory, SnapshotFile.
func (r *Rig) SnapshotFilePath(ctx context.Context, rec *driver.Record) (string, error) {
	ns := rec.Namespace
	if ns == "" {
		ns = r.Namespace
	}
	pvc, err := r.Kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, rec.ID, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("rig: snapshot PVC of %s: %w", rec.ID, err)
	}
	if pvc.Spec.VolumeName == "" {
		return "", fmt.Errorf("rig: snapshot PVC %s/%s is not bound", ns, rec.ID)
	}
	pv, err := r.Kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("rig: PV of snapshot PVC %s/%s: %w", ns, rec.ID, err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.VolumeHandle == "" {
		return "", fmt.Errorf("rig: PV %s of snapshot PVC %s/%s has no spec.csi.volumeHandle", pv.Name, ns, rec.ID)
	}
	return filepath.Join(pv.Spec.CSI.VolumeHandle, SnapshotFile), nil
}

// beingCreatedAnnotation is set by the csi-snapshotter on a VolumeGroupSnapshotContent while a
// CreateVolumeGroupSnapshot call is unanswered (external-snapshotter pkg/utils/util.go
// AnnVolumeGroupSnapshotBeingCreated).
const beingCreatedAnnotation = "groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-being-created"

// settleTimeout bounds how long DeleteGroupSnapshot waits for the sidecar to finish with a content.
const settleTimeout = time.Minute

// DeleteGroupSnapshot deletes the VolumeGroupSnapshot name in r.Namespace and watches until it is
// gone (the snapshot-controller removes its finalizers once the content is handled).
//
// It first waits (up to a minute) until the bound content no longer carries the csi-snapshotter's
// being-created annotation: csi-snapshotter v8.7.0 skips a content deleted while that annotation is
// set, removes the annotation itself, and then ignores the informer event of its own update
// (pkg/sidecar-controller/groupsnapshot_helper.go shouldDeleteGroupSnapshotContent and
// updateGroupSnapshotContentInInformerCache), so a group deleted right as it turns ready keeps its
// content, and the VolumeGroupSnapshot its finalizer, until the sidecar's 15-minute resync.
func (r *Rig) DeleteGroupSnapshot(ctx context.Context, name string) error {
	return r.DeleteGroupSnapshotIn(ctx, r.Namespace, name)
}

// DeleteGroupSnapshotIn is DeleteGroupSnapshot for a VolumeGroupSnapshot in namespace.
func (r *Rig) DeleteGroupSnapshotIn(ctx context.Context, namespace, name string) error {
	client := r.Snap.GroupsnapshotV1().VolumeGroupSnapshots(namespace)
	if vgs, err := client.Get(ctx, name, metav1.GetOptions{}); err == nil && vgs.DeletionTimestamp == nil {
		content := "groupsnapcontent-" + string(vgs.UID)
		if vgs.Status != nil && ptr.Deref(vgs.Status.BoundVolumeGroupSnapshotContentName, "") != "" {
			content = *vgs.Status.BoundVolumeGroupSnapshotContentName
		}
		r.waitContentSettled(ctx, content)
	}
	err := client.Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rig: delete VolumeGroupSnapshot %s/%s: %w", namespace, name, err)
	}
	return r.WaitGroupSnapshotGone(ctx, namespace, name)
}

// WaitGroupSnapshotGone waits until the VolumeGroupSnapshot namespace/name does not exist (upstream
// removes its finalizers once its content is handled).
func (r *Rig) WaitGroupSnapshotGone(ctx context.Context, namespace, name string) error {
	client := r.Snap.GroupsnapshotV1().VolumeGroupSnapshots(namespace)
	return WaitGone(ctx, fmt.Sprintf("VolumeGroupSnapshot %s/%s", namespace, name), name,
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return client.List(ctx, o) },
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return client.Watch(ctx, o) },
		&groupsnapshotv1.VolumeGroupSnapshot{})
}

// waitContentSettled waits, within settleTimeout, until the VolumeGroupSnapshotContent name is gone
// or carries no being-created annotation. It gives up silently: the deletion proceeds either way.
func (r *Rig) waitContentSettled(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	contents := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotContents()
	list := func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return contents.List(ctx, o) }
	watchFn := func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
		return contents.Watch(ctx, o)
	}
	_, err := watchtools.UntilWithSync(ctx, nameListWatch(name, list, watchFn),
		&groupsnapshotv1.VolumeGroupSnapshotContent{},
		func(store cache.Store) (bool, error) { return len(store.List()) == 0, nil },
		func(ev watch.Event) (bool, error) {
			c, ok := ev.Object.(*groupsnapshotv1.VolumeGroupSnapshotContent)
			if ev.Type == watch.Deleted || !ok {
				return ev.Type == watch.Deleted, nil
			}
			_, creating := c.Annotations[beingCreatedAnnotation]
			return !creating, nil
		})
	if err != nil {
		r.logf("rig: VolumeGroupSnapshotContent %s still being created after %s; deleting anyway", name, settleTimeout)
	}
}

// WaitGone watches the object called name (through list and watch, for example a typed client's List
// and Watch) until it does not exist. what names it in the error.
func WaitGone(ctx context.Context, what, name string,
	list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error),
	obj runtime.Object,
) error {
	_, err := watchtools.UntilWithSync(ctx, nameListWatch(name, list, watchFn), obj,
		func(store cache.Store) (bool, error) { return len(store.List()) == 0, nil },
		func(ev watch.Event) (bool, error) { return ev.Type == watch.Deleted, nil })
	if err != nil {
		return fmt.Errorf("rig: %s still exists: %w", what, err)
	}
	return nil
}

// DriverClient returns a client authenticated as the driver's ServiceAccount (a fresh TokenRequest
// token, one hour), so a test sees what RBAC and admission let the driver do.
func (r *Rig) DriverClient(ctx context.Context) (kubernetes.Interface, error) {
	cfg, err := r.DriverRESTConfig(ctx)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// DriverRESTConfig is the client configuration behind DriverClient.
func (r *Rig) DriverRESTConfig(ctx context.Context) (*rest.Config, error) {
	tr, err := r.Kube.CoreV1().ServiceAccounts(DriverNamespace).CreateToken(ctx, DriverServiceAccount,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}},
		metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("rig: token for ServiceAccount %s/%s: %w", DriverNamespace, DriverServiceAccount, err)
	}
	cfg := rest.AnonymousClientConfig(r.RESTConfig)
	cfg.BearerToken = tr.Status.Token
	cfg.UserAgent = "rig-as-driver"
	return cfg, nil
}
