package driver

import (
	"sync"
	"testing"

	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	k8stesting "k8s.io/client-go/testing"
)

// TestSweeperWaitsForUnansweredCreate: an abandoned content on which the csi-snapshotter has a
// CreateVolumeGroupSnapshot call unanswered (its being-created annotation) is left alone, snapshot
// and all: removing the snapshot under that call lets the call (or the sidecar's next one, which it
// makes while the annotation stays) take it again, and csi-snapshotter v8.7.0 then skips the deleted
// content until its resync. Once the annotation is gone the content is deleted first, so that the
// sidecar stops calling Create, and the snapshot after it.
func TestSweeperWaitsForUnansweredCreate(t *testing.T) {
	const uid = types.UID("3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f")
	taken := listRecord("groupsnapshot-"+string(uid), true, PhasePending, fxNS+"/data-main-0")
	takenCM, err := encodeRecord(fxMetaNS, taken)
	if err != nil {
		t.Fatal(err)
	}
	takenJob := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: taken.ID, Namespace: fxNS, Labels: objectLabels(taken.ID, fxCluster)}}
	content := swContent(uid, snapshotv1.VolumeSnapshotContentDelete, 2*swGrace, "")
	if content.Annotations == nil {
		content.Annotations = map[string]string{}
	}
	content.Annotations[upstreamGroupBeingCreatedAnnotation] = "yes"
	content.Finalizers = []string{"groupsnapshot.storage.kubernetes.io/volumegroupsnapshotcontent-bound-protection"}
	f := newSweeperFixture(t, []runtime.Object{takenCM, takenJob}, []runtime.Object{content})
	waitFor(t, "content in the cache", func() bool { _, err := f.sw.contentLister.Get(content.Name); return err == nil })

	var mu sync.Mutex
	var deletions []string
	record := func(a k8stesting.Action) (bool, runtime.Object, error) {
		if d, ok := a.(k8stesting.DeleteAction); ok {
			mu.Lock()
			deletions = append(deletions, d.GetResource().Resource+"/"+d.GetName())
			mu.Unlock()
		}
		return false, nil, nil
	}
	f.snap.PrependReactor("delete", "*", record)
	f.kube.PrependReactor("delete", "*", record)

	beforeContent, beforeSnapshot := swRemoved(sweptContent), swRemoved(sweptSnapshot)
	if err := f.sw.sweepContent(f.ctx, content.Name); err != nil {
		t.Fatal(err)
	}
	if !f.contentExists(content.Name) || !f.exists("ConfigMap", fxMetaNS, taken.ID) || !f.exists("Job", fxNS, taken.ID) {
		t.Fatalf("with a Create call unanswered: content kept %v, record kept %v, Job kept %v; want all kept (deleted: %v)",
			f.contentExists(content.Name), f.exists("ConfigMap", fxMetaNS, taken.ID), f.exists("Job", fxNS, taken.ID), deletions)
	}

	// The call is answered: the sidecar removes its annotation.
	c, err := f.snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(f.ctx, content.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	delete(c.Annotations, upstreamGroupBeingCreatedAnnotation)
	if _, err := f.snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Update(f.ctx, c, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the answered content in the cache", func() bool {
		c, err := f.sw.contentLister.Get(content.Name)
		_, creating := c.Annotations[upstreamGroupBeingCreatedAnnotation]
		return err == nil && !creating
	})
	if err := f.sw.sweepContent(f.ctx, content.Name); err != nil {
		t.Fatal(err)
	}
	// The fake API has no finalizers to wait for: the content is gone at once.
	if f.contentExists(content.Name) || f.exists("ConfigMap", fxMetaNS, taken.ID) || f.exists("Job", fxNS, taken.ID) {
		t.Errorf("after the answer: content %v, record %v, Job %v left; want none", f.contentExists(content.Name),
			f.exists("ConfigMap", fxMetaNS, taken.ID), f.exists("Job", fxNS, taken.ID))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(deletions) == 0 || deletions[0] != "volumegroupsnapshotcontents/"+content.Name {
		t.Errorf("deletions in order %v; want the content first", deletions)
	}
	if got := swRemoved(sweptContent) - beforeContent; got != 1 {
		t.Errorf("sweeper_removed_total{kind=content} grew by %v, want 1", got)
	}
	if got := swRemoved(sweptSnapshot) - beforeSnapshot; got != 1 {
		t.Errorf("sweeper_removed_total{kind=snapshot} grew by %v, want 1", got)
	}
}
