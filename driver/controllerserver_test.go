package driver

import (
	"context"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestSingleSnapshot drives CreateSnapshot and DeleteSnapshot, including the refusal to delete a
// member of a group snapshot on its own.
func TestSingleSnapshot(t *testing.T) {
	e, tc := startCSIWithEtcd(t)
	ctx := context.Background()
	secrets := secretsOf(tc)
	source := pvHandle(fxNS, fxCluster, 1)
	req := &csi.CreateSnapshotRequest{Name: "snapshot-1", SourceVolumeId: source, Secrets: secrets}

	first, err := e.ctrl.CreateSnapshot(ctx, req)
	if err != nil {
		t.Fatalf("CreateSnapshot: %v", err)
	}
	s := first.GetSnapshot()
	if !singleIDPattern.MatchString(s.GetSnapshotId()) || s.GetSourceVolumeId() != source || s.GetGroupSnapshotId() != "" ||
		s.GetReadyToUse() || s.GetCreationTime().AsTime().IsZero() {
		t.Fatalf("CreateSnapshot answered %v", s)
	}
	id := s.GetSnapshotId()
	again, err := e.ctrl.CreateSnapshot(ctx, req)
	if err != nil || !proto.Equal(again, first) {
		t.Fatalf("second CreateSnapshot = %v, %v; want %v", again, err, first)
	}
	if n := e.jobCreates(""); n != 1 {
		t.Fatalf("%d Job creations, want 1", n)
	}
	_, err = e.ctrl.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "snapshot-1", SourceVolumeId: pvHandle(fxNS, fxCluster, 0), Secrets: secrets})
	wantCode(t, err, codes.AlreadyExists, "snapshot-1")

	group, err := e.group.CreateVolumeGroupSnapshot(ctx, &csi.CreateVolumeGroupSnapshotRequest{
		Name: "group-1", SourceVolumeIds: []string{pvHandle(fxNS, fxCluster, 0), pvHandle(fxNS, fxCluster, 1)}, Secrets: secrets})
	if err != nil {
		t.Fatal(err)
	}
	groupID := group.GetGroupSnapshot().GetGroupSnapshotId()
	member := group.GetGroupSnapshot().GetSnapshots()[0].GetSnapshotId()
	all := "Job=true Secret=true PersistentVolumeClaim=true ConfigMap=true"

	t.Run("member of a group is INVALID_ARGUMENT", func(t *testing.T) {
		_, err := e.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: member})
		wantCode(t, err, codes.InvalidArgument, member, "member of group snapshot "+groupID, "delete the group")
		if got := e.objectsOf(groupID).String(); got != all {
			t.Fatalf("group after refused member delete: %s", got)
		}
	})

	t.Run("group id is INVALID_ARGUMENT", func(t *testing.T) {
		_, err := e.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: groupID})
		wantCode(t, err, codes.InvalidArgument, groupID, "DeleteVolumeGroupSnapshot")
		if got := e.objectsOf(groupID).String(); got != all {
			t.Fatalf("group after refused delete: %s", got)
		}
	})

	t.Run("group RPCs do not see single snapshots", func(t *testing.T) {
		_, err := e.group.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: id})
		wantCode(t, err, codes.NotFound, id)
		if _, err := e.group.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: id}); err != nil {
			t.Fatal(err)
		}
		if got := e.objectsOf(id).String(); got != all {
			t.Fatalf("single snapshot after a group delete of its id: %s", got)
		}
	})

	t.Run("delete single snapshot", func(t *testing.T) {
		if _, err := e.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: id}); err != nil {
			t.Fatal(err)
		}
		if got := e.objectsOf(id).String(); got != "Job=false Secret=false PersistentVolumeClaim=false ConfigMap=false" {
			t.Fatalf("after delete: %s", got)
		}
		if got := e.objectsOf(groupID).String(); got != all {
			t.Fatalf("group after deleting the single snapshot: %s", got)
		}
	})

	t.Run("delete unknown is OK", func(t *testing.T) {
		for _, unknown := range []string{id, "reallyfakesnapshotid", "etcds-" + strings.Repeat("0", 32), groupIDPrefix + strings.Repeat("0", 32) + "-00000000"} {
			if _, err := e.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: unknown}); err != nil {
				t.Errorf("DeleteSnapshot %q: %v", unknown, err)
			}
		}
	})

	t.Run("member of a deleted group is already deleted", func(t *testing.T) {
		if _, err := e.group.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: groupID}); err != nil {
			t.Fatal(err)
		}
		// Records are read from an informer cache, which learns of the group's deletion shortly after.
		eventually(t, "DeleteSnapshot of a member of a deleted group", func() error {
			_, err := e.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: member})
			return err
		})
	})
}

// TestGetSnapshot checks GetSnapshot (CSI v1.10+, alpha) against stored records: every snapshot a
// Create handed out is reported in any phase, not ready until verified (the spec: "Snapshots which
// were recently created and not yet ready to use must be retrievable"), a failed one as its final
// error, and anything else NOT_FOUND.
func TestGetSnapshot(t *testing.T) {
	v0, v1 := fxNS+"/data-main-0", fxNS+"/data-main-1"
	ready := listRecord("g-ready", true, PhaseReady, v0, v1)
	running := listRecord("g-running", true, PhaseRunning, v0, v1)
	failed := listRecord("g-failed", true, PhaseFailed, v0)
	single := listRecord("s-ready", false, PhaseReady, v1)
	pending := listRecord("s-pending", false, PhasePending, v0)
	e := startCSI(t, listWorld(t, ready, running, failed, single, pending))
	ctx := context.Background()
	created := timestamppb.New(ready.CreatedAt)

	cases := []struct {
		name string
		id   string
		want *csi.Snapshot
		code codes.Code
		msg  []string
	}{
		{name: "member of a ready group", id: ready.Sources[0].SnapshotID, want: &csi.Snapshot{SnapshotId: ready.Sources[0].SnapshotID,
			SourceVolumeId: v0, CreationTime: created, SizeBytes: 4096, ReadyToUse: true, GroupSnapshotId: ready.ID}},
		{name: "member of a running group", id: running.Sources[1].SnapshotID, want: &csi.Snapshot{SnapshotId: running.Sources[1].SnapshotID,
			SourceVolumeId: v1, CreationTime: created, GroupSnapshotId: running.ID}},
		{name: "ready single", id: single.ID, want: &csi.Snapshot{SnapshotId: single.ID, SourceVolumeId: v1, CreationTime: created, SizeBytes: 4096, ReadyToUse: true}},
		{name: "pending single", id: pending.ID, want: &csi.Snapshot{SnapshotId: pending.ID, SourceVolumeId: v0, CreationTime: created}},
		{name: "member of a failed group", id: failed.Sources[0].SnapshotID, code: codes.FailedPrecondition, msg: []string{failed.ID, "no quorum"}},
		{name: "no id", code: codes.InvalidArgument, msg: []string{"snapshot_id"}},
		{name: "group id", id: ready.ID, code: codes.NotFound, msg: []string{ready.ID, "GetVolumeGroupSnapshot"}},
		{name: "member id not in its group", id: memberSnapshotID(ready.ID, fxNS+"/data-main-2"), code: codes.NotFound},
		{name: "member of an unknown group", id: memberSnapshotID(snapshotID("nope", true), v0), code: codes.NotFound},
		{name: "unknown single", id: snapshotID("nope", false), code: codes.NotFound},
		{name: "not an id of this driver", id: "none-exist-id", code: codes.NotFound, msg: []string{"none-exist-id"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.ctrl.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: tc.id})
			if tc.code != codes.OK {
				wantCode(t, err, tc.code, tc.msg...)
				if resp != nil {
					t.Errorf("GetSnapshot(%q) answered %v with its error", tc.id, resp)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(resp.GetSnapshot(), tc.want) {
				t.Fatalf("GetSnapshot(%q) = %v, want %v", tc.id, resp.GetSnapshot(), tc.want)
			}
		})
	}
	if w := e.writes(); len(w) > 0 {
		t.Fatalf("GetSnapshot wrote to the API: %v", w)
	}
}
