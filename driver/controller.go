package driver

import (
	"context"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ControllerGetCapabilities advertises CREATE_DELETE_SNAPSHOT only: the upstream csi-snapshotter
// exits at start without it, and every other Controller RPC answers UNIMPLEMENTED.
func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{{
		Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{
			Type: csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		}},
	}}}, nil
}

// CreateSnapshot of one volume snapshots the whole etcd cluster owning it, through the same machinery
// as a group, and reports it as a snapshot of that volume alone.
func (d *Driver) CreateSnapshot(ctx context.Context, req *csi.CreateSnapshotRequest) (*csi.CreateSnapshotResponse, error) {
	if err := checkCreate(req.GetName(), checkString("source_volume_id", req.GetSourceVolumeId()), req.GetParameters(), req.GetSecrets()); err != nil {
		return nil, err
	}
	r, err := d.engine.Create(ctx, SnapshotRequest{
		Name:            req.GetName(),
		SourceVolumeIDs: []string{req.GetSourceVolumeId()},
		Parameters:      req.GetParameters(),
		Secrets:         req.GetSecrets(),
	})
	if err != nil {
		return nil, err
	}
	if r.Group || !sameIDs(sourceVolumeIDs(r), []string{req.GetSourceVolumeId()}) {
		return nil, status.Errorf(codes.AlreadyExists, "snapshot name %q is already used by snapshot %s of volumes %q",
			req.GetName(), r.ID, sourceVolumeIDs(r))
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	return &csi.CreateSnapshotResponse{Snapshot: &csi.Snapshot{
		SnapshotId:     r.ID,
		SourceVolumeId: req.GetSourceVolumeId(),
		CreationTime:   timestamppb.New(r.CreatedAt),
		SizeBytes:      r.SizeBytes,
		ReadyToUse:     r.ReadyToUse(),
	}}, nil
}

// DeleteSnapshot removes a single snapshot. A member of an existing group snapshot is refused: its
// file is the group's, and deleting it alone would break the group. Unknown ids are already deleted.
func (d *Driver) DeleteSnapshot(ctx context.Context, req *csi.DeleteSnapshotRequest) (*csi.DeleteSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if id == "" {
		return nil, invalidArgument("snapshot_id", "is required")
	}
	if groupID := GroupIDOfMember(id); groupID != "" {
		g, err := d.engine.Get(ctx, groupID)
		switch {
		case status.Code(err) == codes.NotFound:
			return &csi.DeleteSnapshotResponse{}, nil
		case err != nil:
			return nil, err
		}
		for _, s := range g.Sources {
			if s.SnapshotID == id {
				return nil, status.Errorf(codes.InvalidArgument, "snapshot %s is a member of group snapshot %s; delete the group snapshot (its VolumeGroupSnapshot) instead", id, groupID)
			}
		}
		return &csi.DeleteSnapshotResponse{}, nil
	}
	r, err := d.engine.Get(ctx, id)
	switch {
	case status.Code(err) == codes.NotFound:
		return &csi.DeleteSnapshotResponse{}, nil
	case err != nil:
		return nil, err
	case r.Group:
		return nil, status.Errorf(codes.InvalidArgument, "%s is a group snapshot; delete it with DeleteVolumeGroupSnapshot (its VolumeGroupSnapshot)", id)
	}
	if err := d.engine.Delete(ctx, id); err != nil {
		return nil, err
	}
	return &csi.DeleteSnapshotResponse{}, nil
}
