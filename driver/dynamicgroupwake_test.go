package driver

import (
	"context"
	"testing"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
)

func TestWakeGroupContent(t *testing.T) {
	const id = "etcdgs-0123"
	content := func(name, driver, statusHandle, staticHandle string) *groupsnapshotv1.VolumeGroupSnapshotContent {
		c := dgtContentFor(dgtHandles, snapshotv1.VolumeSnapshotContentDelete, "etcd", map[string]string{"keep": "me"})
		c.Name, c.Spec.Driver = name, driver
		if statusHandle != "" {
			c.Status = &groupsnapshotv1.VolumeGroupSnapshotContentStatus{VolumeGroupSnapshotHandle: ptr.To(statusHandle), ReadyToUse: ptr.To(false)}
		}
		if staticHandle != "" {
			c.Spec.Source = groupsnapshotv1.VolumeGroupSnapshotContentSource{
				GroupSnapshotHandles: &groupsnapshotv1.GroupSnapshotHandles{VolumeGroupSnapshotHandle: staticHandle, VolumeSnapshotHandles: []string{id + "-0"}}}
		}
		return c
	}
	objs := []runtime.Object{
		content("dynamic", dgtDriver, id, ""),
		content("static-import", dgtDriver, "", id),
		content("other-driver", "hostpath.csi.k8s.io", id, ""),
		content("other-snapshot", dgtDriver, "etcdgs-4567", ""),
		content("not-answered-yet", dgtDriver, "", ""),
	}
	f := newDGTFixture(t, nil, objs)
	readyAt := time.Date(2026, 12, 1, 9, 0, 0, 123000000, time.UTC)
	f.ctrl.WakeGroupContent(context.Background(), id, readyAt)

	want := map[string]bool{"dynamic": true, "static-import": true}
	for _, name := range []string{"dynamic", "static-import", "other-driver", "other-snapshot", "not-answered-yet"} {
		c, err := f.snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, ok := c.Annotations[annotationReadyAt]
		switch {
		case want[name] && got != "2026-12-01T09:00:00.123Z":
			t.Errorf("content %s: annotation %s = %q (set %v), want the ready time", name, annotationReadyAt, got, ok)
		case !want[name] && ok:
			t.Errorf("content %s: annotated %s=%q, want untouched", name, annotationReadyAt, got)
		}
		if c.Annotations["keep"] != "me" {
			t.Errorf("content %s lost its other annotations: %v", name, c.Annotations)
		}
	}
}
