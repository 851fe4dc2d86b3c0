package driver

import (
	"context"
	"testing"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
)

// A content of this driver being deleted loses its deletion-secret annotations, so the
// csi-snapshotter deletes it without reading the Secret; a live one or another driver's keeps them.
func TestDynamicGroupDeletionDropsDeletionSecret(t *testing.T) {
	deleting := metav1.NewTime(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	content := func(name, driver string, deleted bool) *groupsnapshotv1.VolumeGroupSnapshotContent {
		annotations := map[string]string{"keep": "me"}
		for k, v := range dgtSecretAnnotations {
			annotations[k] = v
		}
		c := dgtContentFor(dgtHandles, snapshotv1.VolumeSnapshotContentDelete, "etcd", annotations)
		c.Name, c.Spec.Driver = name, driver
		if deleted {
			c.DeletionTimestamp = &deleting
			c.Finalizers = []string{"groupsnapshot.storage.kubernetes.io/volumegroupsnapshotcontent-bound-protection"}
		}
		return c
	}
	objs := []runtime.Object{
		content("deleting", dgtDriver, true),
		content("live", dgtDriver, false),
		content("other-driver-deleting", "hostpath.csi.k8s.io", true),
	}
	f := newDGTFixture(t, nil, objs)

	// The informer's Add queued the deleting content and the started worker patched it.
	get := func(name string) *groupsnapshotv1.VolumeGroupSnapshotContent {
		c, err := f.snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return !dgtHasDeletionSecret(get("deleting")), nil
	})
	if err != nil {
		t.Errorf("content being deleted still names its deletion secret: %v", get("deleting").Annotations)
	}
	// Sync every content directly too: the others must stay as they are.
	for _, name := range []string{"deleting", "live", "other-driver-deleting"} {
		if err := f.ctrl.syncDeletingContent(context.Background(), name); err != nil {
			t.Errorf("syncDeletingContent(%s): %v", name, err)
		}
	}
	for name, wantSecret := range map[string]bool{"deleting": false, "live": true, "other-driver-deleting": true} {
		c := get(name)
		if got := dgtHasDeletionSecret(c); got != wantSecret {
			t.Errorf("content %s: names deletion secret = %v, want %v (annotations %v)", name, got, wantSecret, c.Annotations)
		}
		if c.Annotations["keep"] != "me" {
			t.Errorf("content %s lost its other annotations: %v", name, c.Annotations)
		}
	}
	if err := f.ctrl.syncDeletingContent(context.Background(), "gone"); err != nil {
		t.Errorf("syncDeletingContent of a content that is gone: %v", err)
	}
}

// A VolumeGroupSnapshot being deleted gets the deletion secret of its bound content removed before
// the content itself is deleted.
func TestDynamicGroupDeletionOfVolumeGroupSnapshot(t *testing.T) {
	deleting := metav1.NewTime(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	bound := dgtVGS(func(v *groupsnapshotv1.VolumeGroupSnapshot) {
		v.DeletionTimestamp = &deleting
		v.Finalizers = []string{"groupsnapshot.storage.kubernetes.io/volumegroupsnapshot-bound-protection"}
		v.Status = &groupsnapshotv1.VolumeGroupSnapshotStatus{BoundVolumeGroupSnapshotContentName: ptr.To(dgtContent)}
	})
	content := dgtContentFor(dgtHandles, snapshotv1.VolumeSnapshotContentDelete, "etcd", map[string]string{
		upstreamGroupDeletionSecretNameAnnotation:      "main-client-tls",
		upstreamGroupDeletionSecretNamespaceAnnotation: dgtNamespace,
	})
	f := newDGTFixture(t, nil, []runtime.Object{bound, content, dgtEtcdClass()})
	if err := f.ctrl.sync(context.Background(), dgtNamespace+"/backup"); err != nil {
		t.Fatalf("sync: %v", err)
	}
	got, err := f.snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(context.Background(), dgtContent, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dgtHasDeletionSecret(got) {
		t.Errorf("content of a deleting VolumeGroupSnapshot still names its deletion secret: %v", got.Annotations)
	}
}

func dgtHasDeletionSecret(c *groupsnapshotv1.VolumeGroupSnapshotContent) bool {
	_, name := c.Annotations[upstreamGroupDeletionSecretNameAnnotation]
	_, namespace := c.Annotations[upstreamGroupDeletionSecretNamespaceAnnotation]
	return name || namespace
}
