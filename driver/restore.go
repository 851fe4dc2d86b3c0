package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	snapclientset "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
)

// RestoreConfig is what the `restore` subcommand was asked to do.
type RestoreConfig struct {
	Kube kubernetes.Interface
	Snap snapclientset.Interface
	// DriverName is the CSI driver whose snapshots may be restored (flag -driver-name).
	DriverName        string
	MetadataNamespace string
	ClusterLabel      string
	EtcdImage         string
	DriverImage       string
	// Namespace is the default namespace of -group-snapshot and -volume-snapshot (the kubeconfig's).
	Namespace string

	// Exactly one source: GroupSnapshot or VolumeSnapshot ("namespace/name" or "name"), or SnapshotID.
	GroupSnapshot  string
	VolumeSnapshot string
	SnapshotID     string

	// TargetNamespace selects a new cluster restored into new PVCs there; empty restores in place.
	TargetNamespace string
	// StatefulSet, ClaimTemplate and Members name the new cluster's members and PVCs; defaults are the
	// source cluster's StatefulSet name, claim template and voting member count.
	StatefulSet   string
	ClaimTemplate string
	Members       int
	// StorageClass and Size of the new PVCs; defaults are the source PVCs'.
	StorageClass string
	Size         string
	// PeerURLTemplate and PeerURLs give the new members' peer URLs; Service fills {service}.
	PeerURLTemplate string
	PeerURLs        map[string]string
	Service         string
	// MemberPVCs maps member names to PVCs when the StatefulSet convention cannot (in place).
	MemberPVCs map[string]string

	// DataDirInVolume, UID and GID override what is read from the StatefulSet.
	DataDirInVolume string
	UID, GID        *int64

	// BumpRevision is added to the revision with --mark-compacted; 0 turns both off.
	BumpRevision int64
	// Scale scales the owning StatefulSet to 0, restores, scales it back and checks the cluster.
	Scale bool
	// Wait checks the cluster after the restore without scaling (it must be started by someone else).
	Wait bool
	// DeleteOldData removes each member's kept data dir once its swap is done.
	DeleteOldData bool
	// RestoreID names this restore; empty means a new one (or the one an interrupted run left).
	RestoreID string

	// Endpoints and Creds reach the restored cluster for the final check; defaults are the recorded
	// members' client URLs and the Secret the snapshot's class names (or CredentialsSecret).
	Endpoints         []string
	Creds             *Credentials
	CredentialsSecret string
	// Timeout bounds the wait for the cluster to turn healthy after the restore.
	Timeout time.Duration

	// Progress receives a line per member step.
	Progress io.Writer
}

// restorePlan is a checked RestoreConfig: everything the restore creates is derived from it.
type restorePlan struct {
	ID     string
	Record *Record
	Source *restoreSource
	// Namespace is where the member PVCs and the restore Jobs are.
	Namespace string
	InPlace   bool
	Members   []plannedMember
	// StatefulSet owns the member PVCs (in place) and is scaled with -scale; nil when there is none.
	StatefulSet    *appsv1.StatefulSet
	FormerReplicas int32
	InitialCluster string
	Token          string
	Layout         memberLayout
	BumpRevision   int64
	DeleteOldData  bool
	// SnapshotClaim is the PVC the Jobs read snapshot.db from: the snapshot's own, or a read-only view
	// of its volume in Namespace when that is another namespace.
	SnapshotClaim string
	// NewPVC is the PVC template of a new cluster's members (nil in place).
	NewPVC               *corev1.PersistentVolumeClaim
	EtcdImage            string
	DriverImage          string
	Resumed              bool
	ClusterLabel         string
	NewCluster           string
	snapshotViewRequired bool
}

// RestoreMemberResult is one row of the final table.
type RestoreMemberResult struct {
	Member   string
	PVC      string
	Revision int64
	Keys     int64
	// KeptAt is the old data dir's new place in the PVC; empty when there was none or it was deleted.
	KeptAt      string
	Duration    time.Duration
	AlreadyDone bool
}

// RestoreReport is what a finished restore reports.
type RestoreReport struct {
	RestoreID  string
	SnapshotID string
	Namespace  string
	Members    []RestoreMemberResult
	// Check is the health check of the restored cluster; nil without -scale or -wait.
	Check *RestoreCheck
	Total time.Duration
}

// Restore restores a snapshot into the etcd members' PVCs: it checks everything first and changes
// nothing when a check fails, then runs one Job per member and, with Scale, stops and restarts the
// cluster around them and checks the restored cluster against the record.
func Restore(ctx context.Context, cfg RestoreConfig) (*RestoreReport, error) {
	start := time.Now()
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if err := checkRestoreConfig(cfg); err != nil {
		return nil, err
	}
	src, err := resolveRestoreSource(ctx, cfg.Kube, cfg.Snap, cfg)
	if err != nil {
		return nil, err
	}
	p, err := planRestore(ctx, cfg, src)
	if err != nil {
		return nil, err
	}
	if err := preflight(ctx, cfg, p); err != nil {
		return nil, err
	}
	progress := func(format string, args ...any) {
		fmt.Fprintf(cfg.Progress, "restore %s: "+format+"\n", append([]any{p.ID}, args...)...)
	}
	if p.Resumed {
		progress("resuming the interrupted restore of snapshot %s", p.Record.ID)
	} else {
		progress("restoring snapshot %s (%s, revision %d, %d keys) into %d members in namespace %s", p.Record.ID, p.Record.Name, p.Record.Revision, p.Record.Keys, len(p.Members), p.Namespace)
	}
	report, err := runRestore(ctx, cfg, p, progress)
	if err != nil {
		emitRestoreEvent(ctx, cfg, p, corev1.EventTypeWarning, "RestoreFailed", fmt.Sprintf("restore %s into namespace %s failed: %v", p.ID, p.Namespace, err))
		return report, err
	}
	report.Total = time.Since(start)
	emitRestoreEvent(ctx, cfg, p, corev1.EventTypeNormal, "Restored", fmt.Sprintf("restore %s: %d members of namespace %s restored to revision %d (%d keys)%s",
		p.ID, len(p.Members), p.Namespace, p.Record.Revision, p.Record.Keys, checkSuffix(report.Check)))
	return report, nil
}

func checkSuffix(c *RestoreCheck) string {
	if c == nil {
		return ""
	}
	return fmt.Sprintf("; cluster healthy at revision %d with %d keys", c.Revision, c.Keys)
}

// checkRestoreConfig refuses flag combinations that cannot work, before any API call.
func checkRestoreConfig(cfg RestoreConfig) error {
	n := 0
	for _, s := range []string{cfg.GroupSnapshot, cfg.VolumeSnapshot, cfg.SnapshotID} {
		if s != "" {
			n++
		}
	}
	switch {
	case n != 1:
		return errors.New("give exactly one of -group-snapshot, -volume-snapshot and -snapshot-id")
	case cfg.BumpRevision < 0:
		return fmt.Errorf("-bump-revision must be 0 (off) or positive, got %d", cfg.BumpRevision)
	case cfg.Scale && cfg.TargetNamespace != "":
		return errors.New("-scale restarts the snapshot's own StatefulSet; a new cluster (-target-namespace) is started by applying its StatefulSet after the restore")
	case cfg.TargetNamespace == "" && (cfg.StorageClass != "" || cfg.Size != "" || cfg.PeerURLTemplate != "" || len(cfg.PeerURLs) > 0 || cfg.Members != 0):
		return errors.New("-storage-class, -size, -members, -peer-url-template and -peer-urls describe a new cluster and need -target-namespace")
	case cfg.TargetNamespace != "" && len(cfg.MemberPVCs) > 0:
		return errors.New("-member-pvc maps an existing cluster's PVCs; a new cluster's PVCs are named by -claim-template and -statefulset")
	case cfg.RestoreID != "" && !restoreIDPattern.MatchString(cfg.RestoreID):
		return fmt.Errorf("-restore-id %q must be 1 to 20 lower-case letters, digits or '-', starting and ending with a letter or digit", cfg.RestoreID)
	}
	if cfg.DataDirInVolume != "" {
		if err := checkRelDataDir(cfg.DataDirInVolume); err != nil {
			return err
		}
	}
	if cfg.Size != "" {
		if _, err := parseQuantity(cfg.Size); err != nil {
			return fmt.Errorf("-size %q: %v", cfg.Size, err)
		}
	}
	return nil
}
