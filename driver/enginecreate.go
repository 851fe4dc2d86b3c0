package driver

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/golang/glog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Create takes a snapshot of the etcd cluster that owns req's volumes, or answers for the snapshot an
// earlier call with the same name started: the record while the Job runs (Phase Running), the
// verified record when Ready, the final error when Failed. The same name with other volumes or
// parameters is AlreadyExists. An unhealthy cluster is FailedPrecondition and nothing is created.
func (e *Engine) Create(ctx context.Context, req SnapshotRequest) (*Record, error) {
	if err := validateRequest(req); err != nil {
		return nil, err
	}
	p, err := parseParams(req.Parameters)
	if err != nil {
		return nil, err
	}
	if err := e.notStarted(); err != nil {
		return nil, err
	}
	id := snapshotID(req.Name, req.Group)
	sources := sortedCopy(req.SourceVolumeIDs)
	phash := paramsHash(req.Parameters)
	defer e.lock(id)()

	rec, err := e.meta.get(ctx, id)
	if err == nil && rec != nil && rec.Phase == PhasePending {
		// The cache may trail this process's own last write, and Pending is the one phase in which
		// acting on a stale view would redo work.
		rec, err = e.meta.getLive(ctx, id)
	}
	if err != nil {
		return nil, err
	}
	if rec != nil {
		if err := sameSnapshot(rec, req, sources, phash); err != nil {
			return nil, err
		}
		switch rec.Phase {
		case PhaseReady, PhaseRunning:
			return rec, nil
		case PhaseFailed, PhaseLost:
			return nil, rec.Err()
		}
		glog.V(2).Infof("Snapshot %s (%s) is Pending from an interrupted attempt; resuming", id, req.Name)
	}
	return e.provision(ctx, id, req, p, phash, rec)
}

// validateRequest checks what the engine itself relies on; field limits are the CSI layer's job.
func validateRequest(req SnapshotRequest) error {
	if req.Name == "" {
		return status.Error(codes.InvalidArgument, "snapshot name is required")
	}
	if len(req.SourceVolumeIDs) == 0 {
		return status.Error(codes.InvalidArgument, "at least one source volume id is required")
	}
	if !req.Group && len(req.SourceVolumeIDs) != 1 {
		return status.Errorf(codes.InvalidArgument, "a single snapshot has exactly one source volume, got %d", len(req.SourceVolumeIDs))
	}
	seen := map[string]bool{}
	for _, v := range req.SourceVolumeIDs {
		if v == "" {
			return status.Error(codes.InvalidArgument, "a source volume id is empty")
		}
		if seen[v] {
			return status.Errorf(codes.InvalidArgument, "source volume %q is listed twice", v)
		}
		seen[v] = true
	}
	return nil
}

// sameSnapshot refuses a name reused for other volumes or parameters. Secrets are not compared: a
// rotated client certificate must not turn a retry into a conflict.
func sameSnapshot(rec *Record, req SnapshotRequest, sources []string, phash string) error {
	recorded := make([]string, 0, len(rec.Sources))
	for _, s := range rec.Sources {
		recorded = append(recorded, s.VolumeID)
	}
	slices.Sort(recorded)
	if rec.Group != req.Group || !slices.Equal(recorded, sources) {
		return status.Errorf(codes.AlreadyExists, "snapshot name %q is already used by snapshot %s of volumes %s, not %s",
			req.Name, rec.ID, describeVolumes(recorded), describeVolumes(sources))
	}
	if rec.ParamsHash != phash {
		return status.Errorf(codes.AlreadyExists, "snapshot name %q is already used by snapshot %s with other class parameters", req.Name, rec.ID)
	}
	return nil
}

// provision runs the create flow: resolve, discover, check health, write metadata, then PVC, Job
// (suspended), Secret, and resume the Job. prior is a Pending record left by an interrupted attempt,
// whose objects are adopted only as far as they match this attempt's plan (engineadopt.go; its Secret is
// always replaced).
func (e *Engine) provision(ctx context.Context, id string, req SnapshotRequest, p snapshotParams, phash string, prior *Record) (*Record, error) {
	src, err := e.resolveSources(ctx, req.SourceVolumeIDs)
	if err != nil {
		return nil, e.abandon(ctx, prior, err)
	}
	target, err := e.clusterTarget(ctx, src.Namespace, src.Cluster, p, req.Secrets)
	if err != nil {
		return nil, e.abandon(ctx, prior, err)
	}
	target.Endpoints = e.withRecordedMembers(target.Endpoints, src.Namespace, src.Cluster, p)
	health, err := CheckCluster(ctx, target)
	observeClusterHealth(src.Namespace, src.Cluster, health, err)
	if err != nil {
		return nil, e.abandon(ctx, prior, err)
	}
	if health == nil || health.Source == nil {
		return nil, e.abandon(ctx, prior, status.Errorf(codes.Internal, "health check of etcd cluster %s/%s chose no member to snapshot", src.Namespace, src.Cluster))
	}
	haveCreds := len(target.Creds.CA) > 0
	endpoint, err := clientURL(health.Source, haveCreds, p.AllowPlaintext)
	if err != nil {
		return nil, e.abandon(ctx, prior, err)
	}
	class := p.StorageClass
	if class == "" {
		class = e.cfg.SnapshotStorageClass
	}
	rec, err := newRecord(id, req, src, phash, health, endpoint, class)
	if err != nil {
		return nil, e.abandon(ctx, prior, err)
	}
	size := snapshotPVCSize(health.Source.DBSize, p)
	if p.Size != nil {
		size = p.Size.DeepCopy()
	}
	rec.PVCSize = size.String()

	// Metadata first: from here on every object can be found, and removed, through the record.
	if err := e.writePending(ctx, rec, prior); err != nil {
		return nil, err
	}
	withTLS := strings.HasPrefix(endpoint, "https://")
	if err := e.ensurePlannedPVC(ctx, rec, size, prior != nil); err != nil {
		return nil, e.fail(ctx, rec, err)
	}
	// With TLS the Job is created suspended, then its Secret with the Job as owner (the driver may not
	// patch Secrets), then the record turns Running, then the Job is resumed. A restart before Running
	// leaves a Pending record that the CO's retry, which carries the credentials, resumes; a restart
	// after it leaves a Running record with a suspended Job and its Secret, which the monitor resumes.
	job, err := e.ensurePlannedJob(ctx, rec, e.newSnapshotJob(rec, endpoint, withTLS, health.Source.DBSize, p))
	if err != nil {
		return nil, e.fail(ctx, rec, err)
	}
	if withTLS {
		if err := e.createTLSSecret(ctx, rec, target.Creds, job); err != nil {
			return nil, e.fail(ctx, rec, err)
		}
	}
	out, err := e.updatePending(ctx, rec, false, func(r *Record) { r.Phase = PhaseRunning })
	if err != nil {
		return nil, e.fail(ctx, rec, err)
	}
	if isSuspended(job) {
		if err := e.resumeJob(ctx, rec.Namespace, id); err != nil {
			return nil, e.fail(ctx, rec, err)
		}
	}
	// The Job may have finished before this process watched it; look now rather than wait for an event.
	e.queue.Add(id)
	glog.Infof("Snapshot %s (%s) of etcd cluster %s/%s started: Job %s/%s saves from member %s (%s)",
		id, req.Name, rec.Namespace, rec.Cluster, rec.Namespace, id, rec.SourceMember.Name, endpoint)
	return out, nil
}

// writePending stores rec as Pending: a new ConfigMap, or the prior Pending record refreshed with
// what this attempt found (CreatedAt kept).
func (e *Engine) writePending(ctx context.Context, rec, prior *Record) error {
	if prior == nil {
		_, created, err := e.meta.create(ctx, rec)
		if err != nil {
			return err
		}
		if !created {
			return status.Errorf(codes.Aborted, "snapshot %s (%s) is being created by another caller; retry", rec.ID, rec.Name)
		}
		return nil
	}
	rec.CreatedAt = prior.CreatedAt
	_, err := e.updatePending(ctx, rec, true, func(r *Record) { *r = *rec })
	return err
}

// newRecord builds the Pending record of a snapshot from the resolved volumes and the health check.
func newRecord(id string, req SnapshotRequest, src *resolvedSources, phash string, h *ClusterHealth, endpoint, class string) (*Record, error) {
	rec := &Record{
		ID: id, Name: req.Name, Group: req.Group, Phase: PhasePending,
		Namespace: src.Namespace, Cluster: src.Cluster, ParamsHash: phash, StorageClass: class,
		CreatedAt: time.Now().UTC(),
	}
	seen := map[string]string{}
	for _, v := range src.Volumes {
		snapID := id
		if req.Group {
			snapID = memberSnapshotID(id, v.VolumeID)
			if other, dup := seen[snapID]; dup {
				// 32 bits of sha256 colliding inside one group: refuse rather than report two volumes as one.
				return nil, status.Errorf(codes.InvalidArgument, "volumes %q and %q map to the same member snapshot id %s; snapshot them in separate groups", other, v.VolumeID, snapID)
			}
			seen[snapID] = v.VolumeID
		}
		rec.Sources = append(rec.Sources, SourceRecord{VolumeID: v.VolumeID, PVC: v.PVC.Name, SnapshotID: snapID})
	}
	slices.SortFunc(rec.Sources, func(a, b SourceRecord) int { return strings.Compare(a.VolumeID, b.VolumeID) })
	for _, m := range h.Members {
		rec.Members = append(rec.Members, MemberRecord{
			ID: memberIDString(m.ID), Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner,
		})
	}
	s := h.Source
	rec.SourceMember = &SourceMember{
		ID: memberIDString(s.ID), Name: s.Name, Endpoint: endpoint, Leader: s.ID == h.LeaderID,
		Revision: s.Revision, RaftIndex: s.RaftIndex, RaftTerm: s.RaftTerm, DBSize: s.DBSize, Version: s.Version,
	}
	return rec, nil
}

// fail rolls back a Create that failed after writing metadata and returns its error.
func (e *Engine) fail(ctx context.Context, rec *Record, err error) error {
	e.rollback(ctx, rec, err)
	return err
}

// abandon handles a Create that failed before writing metadata. A Pending record from an interrupted
// attempt is rolled back too, so a failed resume leaves nothing behind either.
func (e *Engine) abandon(ctx context.Context, prior *Record, err error) error {
	if prior != nil {
		e.rollback(ctx, prior, err)
	}
	return err
}

// adoptOnExists finishes a Create call: success stays success; AlreadyExists is fine when the object
// carries this snapshot's id label (an earlier attempt made it) and an error otherwise, because
// somebody else's object must never be used or later deleted as ours.
func (e *Engine) adoptOnExists(ctx context.Context, err error, kind string, rec *Record, name string, get func() (metav1.Object, error)) error {
	if err == nil {
		return nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return kubeStatus(err, "creating %s %s/%s", kind, rec.Namespace, name)
	}
	obj, gerr := get()
	if gerr != nil {
		return kubeStatus(gerr, "reading existing %s %s/%s", kind, rec.Namespace, name)
	}
	if got := obj.GetLabels()[labelSnapshotID]; got != rec.ID {
		return status.Errorf(codes.FailedPrecondition, "%s %s/%s already exists and is not part of snapshot %s (label %s=%q); remove it",
			kind, rec.Namespace, name, rec.ID, labelSnapshotID, got)
	}
	return nil
}
