package driver

import (
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Phase is where a snapshot is in its life. It only moves forward:
// Pending -> Running -> Ready | Failed (Pending -> Failed is possible too), and Ready -> Lost.
type Phase string

const (
	// PhasePending means the metadata exists and the PVC, Secret and Job are being created.
	PhasePending Phase = "Pending"
	// PhaseRunning means the Job exists and has not finished.
	PhaseRunning Phase = "Running"
	// PhaseReady means the snapshot file was saved and verified.
	PhaseReady Phase = "Ready"
	// PhaseFailed means the Job failed; Error says why and the Job, Secret and PVC are removed.
	PhaseFailed Phase = "Failed"
	// PhaseLost means a Ready snapshot's file is gone (its volume was deleted); Error says what is gone.
	PhaseLost Phase = "Lost"
)

// recordVersion is the schema version written into every record.
const recordVersion = 1

// Record is the metadata of one group or single snapshot, stored as JSON under data["record.json"] of
// the ConfigMap named by ID in the metadata namespace. Schema (all keys always written unless marked
// omitempty):
//
//	{
//	  "version": 1,
//	  "id": "etcdgs-<32 hex>" | "etcds-<32 hex>",
//	  "name": "<CSI request name>",
//	  "group": true,
//	  "phase": "Pending" | "Running" | "Ready" | "Failed" | "Lost",
//	  "namespace": "<etcd namespace>", "cluster": "<cluster label value>",
//	  "paramsHash": "<sha256 hex of the class parameters>",
//	  "sources": [{"volumeId": "<as passed in>", "pvc": "<PVC name>", "snapshotId": "<member or single id>"}],  // sorted by volumeId
//	  "members": [{"id": "<hex>", "name": "...", "peerURLs": [...], "clientURLs": [...], "isLearner": false}],
//	  "sourceMember": {"id": "<hex>", "name": "...", "endpoint": "<client URL saved from>", "leader": true,
//	                   "revision": 0, "raftIndex": 0, "raftTerm": 0, "dbSize": 0, "version": "3.7.3"},
//	  "storageClass": "<snapshot PVC class, omitempty>", "pvcSize": "<quantity>",
//	  "volume": "<PV bound to the snapshot PVC, omitempty>", "volumeReclaimPolicy": "<its policy before Retain, omitempty>",
//	  "revision": 0, "compactRevision": 0, "keys": 0, "totalKeys": 0, "hash": 0, "hashChecked": true,  // verified, omitempty
//	  "sizeBytes": 0, "sha256": "<hex>",                                                               // verified, omitempty
//	  "createdAt": "<RFC 3339>", "readyAt": "<RFC 3339, omitempty>",
//	  "error": "<why it failed or was lost, omitempty>", "errorCode": "<gRPC code name, omitempty>",
//	  "cleanedUp": true  // omitempty; Failed records whose Job, Secret and PVC are gone
//	}
type Record struct {
	Version             int            `json:"version"`
	ID                  string         `json:"id"`
	Name                string         `json:"name"`
	Group               bool           `json:"group"`
	Phase               Phase          `json:"phase"`
	Namespace           string         `json:"namespace"`
	Cluster             string         `json:"cluster"`
	ParamsHash          string         `json:"paramsHash"`
	Sources             []SourceRecord `json:"sources"`
	Members             []MemberRecord `json:"members"`
	SourceMember        *SourceMember  `json:"sourceMember,omitempty"`
	StorageClass        string         `json:"storageClass,omitempty"`
	PVCSize             string         `json:"pvcSize,omitempty"`
	Volume              string         `json:"volume,omitempty"`
	VolumeReclaimPolicy string         `json:"volumeReclaimPolicy,omitempty"`
	Revision            int64          `json:"revision,omitempty"`
	CompactRevision     int64          `json:"compactRevision,omitempty"`
	Keys                int64          `json:"keys,omitempty"`
	TotalKeys           int64          `json:"totalKeys,omitempty"`
	Hash                uint32         `json:"hash,omitempty"`
	HashChecked         bool           `json:"hashChecked,omitempty"`
	SizeBytes           int64          `json:"sizeBytes,omitempty"`
	SHA256              string         `json:"sha256,omitempty"`
	CreatedAt           time.Time      `json:"createdAt"`
	ReadyAt             *time.Time     `json:"readyAt,omitempty"`
	Error               string         `json:"error,omitempty"`
	ErrorCode           string         `json:"errorCode,omitempty"`
	CleanedUp           bool           `json:"cleanedUp,omitempty"`
}

// SourceRecord ties one source volume id, exactly as the caller passed it, to its PVC and to the
// snapshot id reported for it (a member id in a group, the snapshot's own id otherwise).
type SourceRecord struct {
	VolumeID   string `json:"volumeId"`
	PVC        string `json:"pvc"`
	SnapshotID string `json:"snapshotId"`
}

// MemberRecord is one etcd member from MemberList at snapshot time; restore needs the names and URLs.
type MemberRecord struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
	IsLearner  bool     `json:"isLearner,omitempty"`
}

// SourceMember is the member the snapshot is taken from and its status when it was chosen.
type SourceMember struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Endpoint  string `json:"endpoint"`
	Leader    bool   `json:"leader"`
	Revision  int64  `json:"revision"`
	RaftIndex uint64 `json:"raftIndex"`
	RaftTerm  uint64 `json:"raftTerm"`
	DBSize    int64  `json:"dbSize"`
	Version   string `json:"version,omitempty"`
}

// ReadyToUse reports whether the snapshot is saved and verified.
func (r *Record) ReadyToUse() bool { return r.Phase == PhaseReady }

// Err returns the final error of a Failed or Lost record as a gRPC status, else nil.
func (r *Record) Err() error {
	switch r.Phase {
	case PhaseFailed:
		return status.Errorf(codeByName(r.ErrorCode), "snapshot %q (%s) failed: %s", r.Name, r.ID, r.Error)
	case PhaseLost:
		return status.Errorf(codeByName(r.ErrorCode), "snapshot %q (%s) is lost: %s", r.Name, r.ID, r.Error)
	}
	return nil
}

// memberIDString formats an etcd member id the way etcdctl prints it.
func memberIDString(id uint64) string { return fmt.Sprintf("%x", id) }

// codeByName maps a code name written by codes.Code.String back to the code; unknown names (older or
// hand-edited records) read as Internal so a failure never turns into success.
func codeByName(name string) codes.Code {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if c.String() == name {
			if c == codes.OK {
				break
			}
			return c
		}
	}
	return codes.Internal
}
