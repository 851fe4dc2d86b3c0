package driver

import (
	"context"
	"reflect"
	"testing"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/util/workqueue"
)

// TestDynamicGroupRunConcurrent runs two controllers at once, as a restarted
// driver overlapping its predecessor would: one content, at most one Create call
// per controller, and no failure events.
func TestDynamicGroupRunConcurrent(t *testing.T) {
	kube := kubefake.NewClientset(dgtCluster()...)
	snap := snapfake.NewSimpleClientset(dgtVGS(), dgtEtcdClass())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	errs := make(chan error, 2)
	ctrls := make([]*DynamicGroupController, 2)
	for i := range ctrls {
		c := newDynamicGroupController(kube, snap, dgtDriver, time.Minute, dgRateLimiter())
		ctrls[i] = c
		go func() { errs <- c.Run(ctx) }()
	}

	// Once both caches hold the content, no sync that starts later creates it; draining the queues
	// then waits for the syncs already under way, so every Create the two will ever send is sent.
	err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		for _, c := range ctrls {
			if _, err := c.contentLister.Get(dgtContent); err != nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("content %s not in both controllers' caches: %v", dgtContent, err)
	}
	for _, c := range ctrls {
		c.queue.ShutDownWithDrain()
	}
	creates := 0
	for _, a := range snap.Actions() {
		if a.GetVerb() == "create" && a.GetResource().Resource == "volumegroupsnapshotcontents" {
			creates++
		}
	}
	if creates < 1 || creates > len(ctrls) {
		t.Errorf("%d Create calls for VolumeGroupSnapshotContents, want 1 to %d (one per controller at most)", creates, len(ctrls))
	}
	list, err := snap.GroupsnapshotV1().VolumeGroupSnapshotContents().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Name != dgtContent {
		t.Fatalf("contents = %+v, want exactly %s", list.Items, dgtContent)
	}
	if got := list.Items[0].Spec.Source.VolumeHandles; !reflect.DeepEqual(got, dgtHandles) {
		t.Errorf("volumeHandles = %v, want %v", got, dgtHandles)
	}
	for _, e := range recordedEvents(t, kube, ctrls[0].recorder, ctrls[1].recorder) {
		if e.Type == corev1.EventTypeWarning {
			t.Errorf("warning event %s: %s", e.Reason, e.Message)
		}
	}

	cancel()
	for range ctrls {
		select {
		case err := <-errs:
			if err != nil {
				t.Errorf("Run = %v, want nil after cancel", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
}

// TestDynamicGroupRunWaitsForBoundClaims shows a pending claim delays the content
// and its binding ends the wait through the PVC watch, not the (here hour-long)
// retry backoff.
func TestDynamicGroupRunWaitsForBoundClaims(t *testing.T) {
	pending := dgtPVC(dgtNamespace, "data-main-1", dgtMain, corev1.ClaimPending)
	kube := kubefake.NewClientset(dgtPVC(dgtNamespace, "data-main-0", dgtMain, corev1.ClaimBound), pending)
	snap := snapfake.NewSimpleClientset(dgtVGS(), dgtEtcdClass())
	c := newDynamicGroupController(kube, snap, dgtDriver, 0,
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Hour, time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		events, err := kube.CoreV1().Events(dgtNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, e := range events.Items {
			if e.Reason == "PersistentVolumeClaimNotBound" && e.Type == corev1.EventTypeWarning {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no PersistentVolumeClaimNotBound warning: %v", err)
	}
	if _, err := snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(ctx, dgtContent, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("content exists while a claim is pending (err %v)", err)
	}

	pending = pending.DeepCopy()
	pending.Status.Phase = corev1.ClaimBound
	if _, err := kube.CoreV1().PersistentVolumeClaims(dgtNamespace).UpdateStatus(ctx, pending, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	var content *groupsnapshotv1.VolumeGroupSnapshotContent
	err = wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		content, err = snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(ctx, dgtContent, metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("content not created after the claim was bound: %v", err)
	}
	want := []string{"etcd-test/data-main-0", "etcd-test/data-main-1"}
	if got := content.Spec.Source.VolumeHandles; !reflect.DeepEqual(got, want) {
		t.Errorf("volumeHandles = %v, want %v", got, want)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}
