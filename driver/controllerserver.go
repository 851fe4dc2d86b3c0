package driver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ControllerGetCapabilities advertises CREATE_DELETE_SNAPSHOT (the upstream csi-snapshotter exits at
// start without it), LIST_SNAPSHOTS and GET_SNAPSHOT; every other Controller RPC answers UNIMPLEMENTED.
//
// LIST_SNAPSHOTS matters for group members: the csi-snapshotter (v8.7.0,
// pkg/snapshotter/snapshotter.go GetSnapshotStatus) asks ListSnapshots for the readiness of each
// member VolumeSnapshotContent, and without the capability it assumes every member is ready, even
// while the Job still runs or after it failed.
func (d *Driver) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	capability := func(t csi.ControllerServiceCapability_RPC_Type) *csi.ControllerServiceCapability {
		return &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}}
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{
		capability(csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT),
		capability(csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS),
		capability(csi.ControllerServiceCapability_RPC_GET_SNAPSHOT),
	}}, nil
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
	r = d.engine.AwaitFinished(ctx, r)
	if err := r.Err(); err != nil {
		return nil, err
	}
	return &csi.CreateSnapshotResponse{Snapshot: singleSnapshotOf(r)}, nil
}

// singleSnapshotOf maps a single snapshot record to CSI; its one source is the volume id as passed in.
func singleSnapshotOf(r *Record) *csi.Snapshot {
	s := &csi.Snapshot{
		SnapshotId:   r.ID,
		CreationTime: timestamppb.New(r.CreatedAt),
		SizeBytes:    r.SizeBytes,
		ReadyToUse:   r.ReadyToUse(),
	}
	if len(r.Sources) > 0 {
		s.SourceVolumeId = r.Sources[0].VolumeID
	}
	return s
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

// ListSnapshots answers from the metadata records (read through the engine's informer caches): a single
// snapshot is itself, a group snapshot is one snapshot per source volume carrying group_snapshot_id.
// Group snapshot ids are not snapshot ids and match nothing.
//
// The CSI spec forbids listing a snapshot that is not cut yet. A snapshot is cut once its file is on
// the snapshot PVC, that is once `etcdctl snapshot save` exited 0 (Engine.isCut); verification is the
// processing after the cut, during which it is listed with ready_to_use=false. A snapshot with an id
// Create handed out but not cut yet is left out of a full listing; asked for by id it is ABORTED
// ("operation pending" in the spec's error scheme), not an empty list: the csi-snapshotter (v8.7.0,
// pkg/snapshotter/snapshotter.go GetSnapshotStatus) reads an empty answer as "can not find snapshot"
// and would show that on the member's VolumeSnapshotContent, while ABORTED says what it waits for and
// gets the same retry with backoff. GetSnapshot reports such a snapshot at once. A snapshot whose Job
// failed answers with that final error, as GetVolumeGroupSnapshot does, so the member's
// VolumeSnapshotContent shows why. An unknown id is an empty list (CSI spec).
//
// Entries are ordered by snapshot id; next_token is the last id returned and the next page starts after
// it, so concurrent creations and deletions never make a page repeat or skip a snapshot that stays.
func (d *Driver) ListSnapshots(ctx context.Context, req *csi.ListSnapshotsRequest) (*csi.ListSnapshotsResponse, error) {
	if req.GetMaxEntries() < 0 {
		return nil, invalidArgument("max_entries", "is %d; it must not be negative", req.GetMaxEntries())
	}
	start := req.GetStartingToken()
	if start != "" && !isSnapshotID(start) {
		return nil, status.Errorf(codes.Aborted, "starting_token %q is not a token this driver issued; list again without it", start)
	}
	source := req.GetSourceVolumeId()
	var snapshots []*csi.Snapshot
	if id := req.GetSnapshotId(); id != "" {
		s, r, err := d.snapshotByID(ctx, id)
		if err != nil {
			return nil, err
		}
		if s != nil && (source == "" || s.GetSourceVolumeId() == source) {
			if !d.engine.isCut(r) {
				return nil, notCutYet(id, r)
			}
			snapshots = append(snapshots, s)
		}
	} else {
		all, err := d.cutSnapshots()
		if err != nil {
			return nil, err
		}
		for _, s := range all {
			if source == "" || s.GetSourceVolumeId() == source {
				snapshots = append(snapshots, s)
			}
		}
	}
	return pageSnapshots(snapshots, start, int(req.GetMaxEntries())), nil
}

// notCutYet is ListSnapshots' answer for a snapshot whose file is not saved yet.
func notCutYet(id string, r *Record) error {
	from := ""
	if m := r.SourceMember; m != nil {
		from = fmt.Sprintf(" from member %s (%s)", m.Name, m.Endpoint)
	}
	return status.Errorf(codes.Aborted, "snapshot %s is not cut yet: `etcdctl snapshot save`%s has not finished (record %s is %s); "+
		"ListSnapshots lists it once its file is saved, GetSnapshot reports it now; retry", id, from, r.ID, r.Phase)
}

// GetSnapshot reports a single or member snapshot in any phase, ready_to_use=false until it is
// verified; a failed one is its final error; any other id (a group snapshot's too) is NOT_FOUND.
func (d *Driver) GetSnapshot(ctx context.Context, req *csi.GetSnapshotRequest) (*csi.GetSnapshotResponse, error) {
	id := req.GetSnapshotId()
	if id == "" {
		return nil, invalidArgument("snapshot_id", "is required")
	}
	s, _, err := d.snapshotByID(ctx, id)
	if err != nil {
		return nil, err
	}
	if s == nil {
		if groupIDPattern.MatchString(id) {
			return nil, status.Errorf(codes.NotFound, "snapshot %q does not exist (%s is a group snapshot id; use GetVolumeGroupSnapshot)", id, id)
		}
		return nil, status.Errorf(codes.NotFound, "snapshot %q does not exist", id)
	}
	return &csi.GetSnapshotResponse{Snapshot: s}, nil
}

// snapshotByID returns the snapshot a single or member snapshot id names with its record, nil when
// there is none, or the final error of a failed one.
func (d *Driver) snapshotByID(ctx context.Context, id string) (*csi.Snapshot, *Record, error) {
	recordID := id
	if groupID := GroupIDOfMember(id); groupID != "" {
		recordID = groupID
	} else if !singleIDPattern.MatchString(id) {
		return nil, nil, nil
	}
	r, err := d.engine.Get(ctx, recordID)
	switch {
	case status.Code(err) == codes.NotFound:
		return nil, nil, nil
	case err != nil:
		return nil, nil, err
	}
	var found *csi.Snapshot
	if r.Group {
		for _, s := range groupSnapshotOf(r).GetSnapshots() {
			if s.GetSnapshotId() == id {
				found = s
			}
		}
	} else if r.ID == id {
		found = singleSnapshotOf(r)
	}
	if found == nil {
		return nil, nil, nil
	}
	if err := r.Err(); err != nil {
		return nil, nil, err
	}
	return found, r, nil
}

// cutSnapshots lists every snapshot of every cut record in the cache, ordered by snapshot id.
func (d *Driver) cutSnapshots() ([]*csi.Snapshot, error) {
	if !d.engine.Ready() {
		return nil, status.Error(codes.Unavailable, "snapshot engine is starting (informer caches not synced yet); retry")
	}
	records, err := d.engine.meta.list()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "listing snapshot metadata: %v", err)
	}
	var out []*csi.Snapshot
	for _, r := range records {
		// A record this process just deleted can linger in the cache for a moment.
		if !d.engine.isCut(r) || d.engine.meta.isDeleted(r.ID) {
			continue
		}
		if r.Group {
			out = append(out, groupSnapshotOf(r).GetSnapshots()...)
		} else {
			out = append(out, singleSnapshotOf(r))
		}
	}
	slices.SortFunc(out, func(a, b *csi.Snapshot) int { return cmp.Compare(a.GetSnapshotId(), b.GetSnapshotId()) })
	return out, nil
}

// pageSnapshots returns the snapshots (ordered by id) after the starting token, at most limit of them
// (0: all), with next_token set when more remain.
func pageSnapshots(snapshots []*csi.Snapshot, start string, limit int) *csi.ListSnapshotsResponse {
	if start != "" {
		i, _ := slices.BinarySearchFunc(snapshots, start, func(s *csi.Snapshot, id string) int { return cmp.Compare(s.GetSnapshotId(), id) })
		for i < len(snapshots) && snapshots[i].GetSnapshotId() <= start {
			i++
		}
		snapshots = snapshots[i:]
	}
	resp := &csi.ListSnapshotsResponse{}
	if limit > 0 && len(snapshots) > limit {
		snapshots = snapshots[:limit]
		resp.NextToken = snapshots[limit-1].GetSnapshotId()
	}
	for _, s := range snapshots {
		resp.Entries = append(resp.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: s})
	}
	return resp
}

// isSnapshotID reports whether id has the form of a snapshot id this driver issues (single or member).
func isSnapshotID(id string) bool {
	return singleIDPattern.MatchString(id) || memberIDPattern.MatchString(id)
}

// ValidateVolumeCapabilities, which the CSI spec requires of every Controller plugin, answers for the
// etcd volumes the driver snapshots (a PV's CSI handle or namespace/pvc-name, as CreateSnapshot takes
// them) but confirms no capability: those volumes belong to another CSI driver, and this one never
// provisions, attaches or mounts a volume, so it cannot vouch for an access mode. An id that names no
// volume is NOT_FOUND.
func (d *Driver) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	if err := checkString("volume_id", req.GetVolumeId()); err != nil {
		return nil, err
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, invalidArgument("volume_capabilities", "is required")
	}
	for i, c := range req.GetVolumeCapabilities() {
		if c.GetAccessMode() == nil {
			return nil, invalidArgument(fmt.Sprintf("volume_capabilities[%d].access_mode", i), "is required")
		}
	}
	if err := checkMap("volume_context", req.GetVolumeContext(), maxMapBytes); err != nil {
		return nil, err
	}
	if err := checkMap("parameters", req.GetParameters(), maxMapBytes); err != nil {
		return nil, err
	}
	if err := checkSecrets("secrets", req.GetSecrets()); err != nil {
		return nil, err
	}
	if err := d.engine.notStarted(); err != nil {
		return nil, err
	}
	pvc, err := d.engine.lookupVolume(ctx, req.GetVolumeId())
	if errors.Is(err, errUnnamedVolume) {
		return nil, status.Errorf(codes.NotFound, "volume %q: no PV has this CSI volume handle, and it is not of the form namespace/pvc-name", req.GetVolumeId())
	}
	if err != nil {
		return nil, err
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Message: fmt.Sprintf(
		"volume %q is PVC %s/%s; %s does not provision, attach or mount volumes (it only snapshots the etcd cluster owning them), so it confirms no capability: ask the volume's own CSI driver",
		req.GetVolumeId(), pvc.Namespace, pvc.Name, d.cfg.DriverName)}, nil
}
