package driver

import (
	"context"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
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
		if got := e.objectsOf(groupID); got != all {
			t.Fatalf("group after refused member delete: %s", got)
		}
	})

	t.Run("group id is INVALID_ARGUMENT", func(t *testing.T) {
		_, err := e.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: groupID})
		wantCode(t, err, codes.InvalidArgument, groupID, "DeleteVolumeGroupSnapshot")
		if got := e.objectsOf(groupID); got != all {
			t.Fatalf("group after refused delete: %s", got)
		}
	})

	t.Run("group RPCs do not see single snapshots", func(t *testing.T) {
		_, err := e.group.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: id})
		wantCode(t, err, codes.NotFound, id)
		if _, err := e.group.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: id}); err != nil {
			t.Fatal(err)
		}
		if got := e.objectsOf(id); got != all {
			t.Fatalf("single snapshot after a group delete of its id: %s", got)
		}
	})

	t.Run("delete single snapshot", func(t *testing.T) {
		if _, err := e.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: id}); err != nil {
			t.Fatal(err)
		}
		if got := e.objectsOf(id); got != "Job=false Secret=false PersistentVolumeClaim=false ConfigMap=false" {
			t.Fatalf("after delete: %s", got)
		}
		if got := e.objectsOf(groupID); got != all {
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
