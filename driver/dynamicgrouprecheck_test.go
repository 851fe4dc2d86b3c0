package driver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

// mrtVGS is the test VolumeGroupSnapshot bound to dgtContent, with the given readiness.
func mrtVGS(ready bool) *groupsnapshotv1.VolumeGroupSnapshot {
	return dgtVGS(func(v *groupsnapshotv1.VolumeGroupSnapshot) {
		v.Status = &groupsnapshotv1.VolumeGroupSnapshotStatus{
			BoundVolumeGroupSnapshotContentName: ptr.To(dgtContent),
			ReadyToUse:                          ptr.To(ready),
		}
	})
}

// mrtGroupContent is the bound group content of driver, listing the members as the
// sidecar does from the first, not-ready reply.
func mrtGroupContent(driver string) *groupsnapshotv1.VolumeGroupSnapshotContent {
	c := dgtContentFor(dgtHandles, snapshotv1.VolumeSnapshotContentDelete, "etcd", nil)
	c.Spec.Driver = driver
	c.Status = &groupsnapshotv1.VolumeGroupSnapshotContentStatus{
		VolumeGroupSnapshotHandle: ptr.To("etcdgs-0123"),
		ReadyToUse:                ptr.To(true),
	}
	for i, h := range dgtHandles {
		c.Status.VolumeSnapshotInfoList = append(c.Status.VolumeSnapshotInfoList, groupsnapshotv1.VolumeSnapshotInfo{
			VolumeHandle: h, SnapshotHandle: fmt.Sprintf("etcdgs-0123-%08x", i), ReadyToUse: ptr.To(false),
		})
	}
	return c
}

// mrtMember is the member content upstream creates for volume handle h.
func mrtMember(h, driver string, ready bool) *snapshotv1.VolumeSnapshotContent {
	return &snapshotv1.VolumeSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: upstreamMemberContentName(dgtUID, h)},
		Spec: snapshotv1.VolumeSnapshotContentSpec{
			Driver: driver,
			Source: snapshotv1.VolumeSnapshotContentSource{VolumeHandle: ptr.To(h)},
		},
		Status: &snapshotv1.VolumeSnapshotContentStatus{ReadyToUse: ptr.To(ready)},
	}
}

func TestMemberReadinessCheck(t *testing.T) {
	// Upstream's name for UID dgtUID and handle "etcd-test/data-main-0", from
	// printf '%s' "<uid><handle>" | sha256sum.
	if got, want := upstreamMemberContentName(dgtUID, "etcd-test/data-main-0"), "snapcontent-d43546f0ad3fcd2233e677b40dee656558aa5278a38e5ba2173f4e8b11791a14"; got != want {
		t.Fatalf("member content name %s, want %s", got, want)
	}

	cases := []struct {
		name        string
		vgs         *groupsnapshotv1.VolumeGroupSnapshot
		group       *groupsnapshotv1.VolumeGroupSnapshotContent
		ready       []bool // per dgtHandles
		memberDrv   string
		requeued    int // earlier retries of the key
		wantPatched []string
		wantRetry   bool
	}{
		{
			name: "ready group, members not ready", vgs: mrtVGS(true), group: mrtGroupContent(dgtDriver),
			ready: []bool{false, true, false}, memberDrv: dgtDriver,
			wantPatched: []string{dgtHandles[0], dgtHandles[2]}, wantRetry: true,
		},
		{
			name: "ready group, all members ready", vgs: mrtVGS(true), group: mrtGroupContent(dgtDriver),
			ready: []bool{true, true, true}, memberDrv: dgtDriver,
		},
		{
			name: "group not ready", vgs: mrtVGS(false), group: mrtGroupContent(dgtDriver),
			ready: []bool{false, false, false}, memberDrv: dgtDriver,
		},
		{
			name: "another driver's group content", vgs: mrtVGS(true), group: mrtGroupContent(dgtPVDriver),
			ready: []bool{false, false, false}, memberDrv: dgtPVDriver,
		},
		{
			name: "another driver's member contents", vgs: mrtVGS(true), group: mrtGroupContent(dgtDriver),
			ready: []bool{false, false, false}, memberDrv: dgtPVDriver,
		},
		{
			name: "retries used up", vgs: mrtVGS(true), group: mrtGroupContent(dgtDriver),
			ready: []bool{false, true, true}, memberDrv: dgtDriver, requeued: dgMemberCheckLimit,
			wantPatched: []string{dgtHandles[0]},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			snapObjs := []runtime.Object{tc.vgs, tc.group, dgtEtcdClass()}
			for i, h := range dgtHandles {
				snapObjs = append(snapObjs, mrtMember(h, tc.memberDrv, tc.ready[i]))
			}
			f := newDGTFixture(t, dgtCluster(), snapObjs)
			key := dgtNamespace + "/backup"
			for range tc.requeued {
				f.ctrl.queue.AddRateLimited(key)
			}
			f.snap.ClearActions()

			err := f.ctrl.sync(context.Background(), key)
			if tc.wantRetry && !errors.Is(err, errDGRetry) {
				t.Errorf("sync: %v, want a retry error", err)
			}
			if !tc.wantRetry && err != nil {
				t.Errorf("sync: %v, want nil", err)
			}

			var patched []string
			for _, a := range f.snap.Actions() {
				if a.GetVerb() == "patch" {
					p := a.(k8stesting.PatchAction)
					if a.GetResource().Resource != "volumesnapshotcontents" {
						t.Errorf("patched %s %s", a.GetResource().Resource, p.GetName())
					}
					patched = append(patched, p.GetName())
				}
				if v := a.GetVerb(); v == "create" || v == "update" || v == "delete" {
					t.Errorf("unexpected %s of %s", v, a.GetResource().Resource)
				}
			}
			var want []string
			for _, h := range tc.wantPatched {
				want = append(want, upstreamMemberContentName(dgtUID, h))
			}
			slices.Sort(patched)
			slices.Sort(want)
			if !slices.Equal(patched, want) {
				t.Errorf("patched member contents %v, want %v", patched, want)
			}
			for i, h := range dgtHandles {
				m, err := f.snap.SnapshotV1().VolumeSnapshotContents().Get(context.Background(), upstreamMemberContentName(dgtUID, h), metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				_, has := m.Annotations[annotationReadinessCheck]
				if wantAnn := slices.Contains(tc.wantPatched, h); has != wantAnn {
					t.Errorf("member %d (%s): annotation present %v, want %v", i, m.Name, has, wantAnn)
				}
				if got := *m.Status.ReadyToUse; got != tc.ready[i] {
					t.Errorf("member %d (%s): readyToUse changed to %v", i, m.Name, got)
				}
			}
		})
	}
}
