package driver

import (
	"context"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// GroupControllerGetCapabilities advertises group snapshots, the one thing the GroupController does.
func (d *Driver) GroupControllerGetCapabilities(context.Context, *csi.GroupControllerGetCapabilitiesRequest) (*csi.GroupControllerGetCapabilitiesResponse, error) {
	return &csi.GroupControllerGetCapabilitiesResponse{Capabilities: []*csi.GroupControllerServiceCapability{{
		Type: &csi.GroupControllerServiceCapability_Rpc{Rpc: &csi.GroupControllerServiceCapability_RPC{
			Type: csi.GroupControllerServiceCapability_RPC_CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT,
		}},
	}}}, nil
}

// CreateVolumeGroupSnapshot takes one verified snapshot of the etcd cluster owning the source volumes.
// It answers at once with ready_to_use=false while the Job runs; the CO calls again with the same
// name until it is ready, and every call lands on the same snapshot.
func (d *Driver) CreateVolumeGroupSnapshot(ctx context.Context, req *csi.CreateVolumeGroupSnapshotRequest) (*csi.CreateVolumeGroupSnapshotResponse, error) {
	if err := checkCreate(req.GetName(), checkVolumeIDs("source_volume_ids", req.GetSourceVolumeIds()), req.GetParameters(), req.GetSecrets()); err != nil {
		return nil, err
	}
	r, err := d.engine.Create(ctx, SnapshotRequest{
		Name:            req.GetName(),
		SourceVolumeIDs: req.GetSourceVolumeIds(),
		Parameters:      req.GetParameters(),
		Secrets:         req.GetSecrets(),
		Group:           true,
	})
	if err != nil {
		return nil, err
	}
	if !r.Group || !sameIDs(sourceVolumeIDs(r), req.GetSourceVolumeIds()) {
		return nil, status.Errorf(codes.AlreadyExists, "group snapshot name %q is already used by snapshot %s of volumes %q",
			req.GetName(), r.ID, sourceVolumeIDs(r))
	}
	r = d.engine.AwaitFinished(ctx, r)
	if err := r.Err(); err != nil {
		return nil, err
	}
	return &csi.CreateVolumeGroupSnapshotResponse{GroupSnapshot: groupSnapshotOf(r)}, nil
}

// GetVolumeGroupSnapshot reports a group snapshot. An unknown id is NOT_FOUND whatever snapshot_ids
// says; a known id with other member ids is INVALID_ARGUMENT.
func (d *Driver) GetVolumeGroupSnapshot(ctx context.Context, req *csi.GetVolumeGroupSnapshotRequest) (*csi.GetVolumeGroupSnapshotResponse, error) {
	id := req.GetGroupSnapshotId()
	if id == "" {
		return nil, invalidArgument("group_snapshot_id", "is required")
	}
	r, err := d.groupRecord(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := checkMemberIDs(r, req.GetSnapshotIds()); err != nil {
		return nil, err
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	return &csi.GetVolumeGroupSnapshotResponse{GroupSnapshot: groupSnapshotOf(r)}, nil
}

// DeleteVolumeGroupSnapshot removes a group snapshot and everything created for it. An unknown id is
// already deleted (OK); a known id with other member ids is INVALID_ARGUMENT and nothing is deleted.
func (d *Driver) DeleteVolumeGroupSnapshot(ctx context.Context, req *csi.DeleteVolumeGroupSnapshotRequest) (*csi.DeleteVolumeGroupSnapshotResponse, error) {
	id := req.GetGroupSnapshotId()
	if id == "" {
		return nil, invalidArgument("group_snapshot_id", "is required")
	}
	r, err := d.groupRecord(ctx, id)
	if status.Code(err) == codes.NotFound {
		return &csi.DeleteVolumeGroupSnapshotResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := checkMemberIDs(r, req.GetSnapshotIds()); err != nil {
		return nil, err
	}
	if err := d.engine.Delete(ctx, id); err != nil {
		return nil, err
	}
	return &csi.DeleteVolumeGroupSnapshotResponse{}, nil
}

// groupRecord loads a group snapshot record; a single snapshot's id is not a group and reads as
// NOT_FOUND, since GroupController ids only ever name groups.
func (d *Driver) groupRecord(ctx context.Context, id string) (*Record, error) {
	r, err := d.engine.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if !r.Group {
		return nil, status.Errorf(codes.NotFound, "group snapshot %q does not exist (%s is a single snapshot; use the Controller service)", id, id)
	}
	return r, nil
}

// checkMemberIDs compares the member snapshot ids a caller passed with the recorded ones. An empty list
// is accepted: the upstream sidecar sends none when the content has no status yet, and refusing that
// would leave a group impossible to delete.
func checkMemberIDs(r *Record, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	want := make([]string, 0, len(r.Sources))
	for _, s := range r.Sources {
		want = append(want, s.SnapshotID)
	}
	if !sameIDs(ids, want) {
		slices.Sort(want)
		return invalidArgument("snapshot_ids", "%q do not match the snapshots of group snapshot %s, which are %q", ids, r.ID, want)
	}
	return nil
}

// checkCreate validates the fields shared by CreateVolumeGroupSnapshot and CreateSnapshot; sourcesErr
// is the outcome of checking the source volume field(s), reported after the name.
func checkCreate(name string, sourcesErr error, params, secrets map[string]string) error {
	if err := checkName("name", name); err != nil {
		return err
	}
	if sourcesErr != nil {
		return sourcesErr
	}
	if err := checkMap("parameters", params, maxMapBytes); err != nil {
		return err
	}
	return checkSecrets("secrets", secrets)
}

// sourceVolumeIDs lists the volume ids a record was created for, as the caller passed them.
func sourceVolumeIDs(r *Record) []string {
	ids := make([]string, 0, len(r.Sources))
	for _, s := range r.Sources {
		ids = append(ids, s.VolumeID)
	}
	return ids
}

// groupSnapshotOf maps a group record to CSI: exactly one Snapshot per source volume, its
// source_volume_id the id the caller passed, each carrying the group id. Every member stands for the
// same cluster snapshot file, so each reports its size.
func groupSnapshotOf(r *Record) *csi.VolumeGroupSnapshot {
	created := timestamppb.New(r.CreatedAt)
	ready := r.ReadyToUse()
	snapshots := make([]*csi.Snapshot, 0, len(r.Sources))
	for _, s := range r.Sources {
		snapshots = append(snapshots, &csi.Snapshot{
			SnapshotId:      s.SnapshotID,
			SourceVolumeId:  s.VolumeID,
			GroupSnapshotId: r.ID,
			CreationTime:    created,
			SizeBytes:       r.SizeBytes,
			ReadyToUse:      ready,
		})
	}
	return &csi.VolumeGroupSnapshot{GroupSnapshotId: r.ID, Snapshots: snapshots, CreationTime: created, ReadyToUse: ready}
}
