package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
)

// Snapshot ids are derived from the request name alone so that a repeated Create (the sidecar re-calls
// it about every second) lands on the same metadata and objects. They double as object names, so they
// are DNS-1123 labels: lower-case hex, a short prefix, at most 48 characters.
const (
	groupIDPrefix  = "etcdgs-"
	singleIDPrefix = "etcds-"
	// idHashLen is 128 bits of sha256: collisions need ~2^64 names.
	idHashLen = 32
	// memberHashLen only has to tell apart the volumes of one group.
	memberHashLen = 8
)

var (
	groupIDPattern  = regexp.MustCompile(`^etcdgs-[0-9a-f]{32}$`)
	singleIDPattern = regexp.MustCompile(`^etcds-[0-9a-f]{32}$`)
	memberIDPattern = regexp.MustCompile(`^(etcdgs-[0-9a-f]{32})-[0-9a-f]{8}$`)
)

// snapshotID returns the id of the group or single snapshot created for request name.
func snapshotID(name string, group bool) string {
	prefix := singleIDPrefix
	if group {
		prefix = groupIDPrefix
	}
	return prefix + hexHash(name, idHashLen)
}

// memberSnapshotID returns the id of the member snapshot that stands for volumeID inside a group.
func memberSnapshotID(groupID, volumeID string) string {
	return groupID + "-" + hexHash(volumeID, memberHashLen)
}

// IsMemberSnapshotID reports whether id names a member snapshot of a group snapshot; such ids are
// answered through their group and cannot be deleted on their own.
func IsMemberSnapshotID(id string) bool {
	return memberIDPattern.MatchString(id)
}

// GroupIDOfMember returns the group snapshot id a member snapshot id belongs to, or "" when id is not a
// member snapshot id.
func GroupIDOfMember(id string) string {
	m := memberIDPattern.FindStringSubmatch(id)
	if m == nil {
		return ""
	}
	return m[1]
}

// isRecordID reports whether id can name a snapshot record (a group or a single snapshot).
func isRecordID(id string) bool {
	return groupIDPattern.MatchString(id) || singleIDPattern.MatchString(id)
}

func hexHash(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:n]
}
