package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// releaseSnapshotDir holds the snapshots real etcd releases saved (tools/etcdreleases/regenerate).
var releaseSnapshotDir = filepath.Join("..", "testdata")

// releasesWanted are the etcd minor releases whose snapshots must be in releaseSnapshotDir: a backup
// taken before an upgrade to the driver's etcd must still verify and restore.
var releasesWanted = []string{"etcd-v3.5", "etcd-v3.6", "etcd-v3.7"}

// releaseSnapshot is one snapshot file saved by a real etcd release.
type releaseSnapshot struct {
	// Release is the file name's release part, "etcd-v3.5".
	Release string
	Path    string
	Facts   releaseFacts
}

// releaseFacts is what the etcd that saved a release snapshot served at that moment, as
// tools/etcdreleases wrote it beside the snapshot (etcd-v3.X.snapshot.json).
type releaseFacts struct {
	EtcdVersion     string `json:"etcdVersion"`
	StorageVersion  string `json:"storageVersion"`
	Revision        int64  `json:"revision"`
	CompactRevision int64  `json:"compactRevision"`
	Keys            int64  `json:"keys"`
	Leases          int    `json:"leases"`
	LeaseKeys       int    `json:"leaseKeys"`
}

// releaseSnapshots returns every etcd-v*.snapshot.db in releaseSnapshotDir with its facts; the test
// fails when one of releasesWanted is missing or a file has no facts.
func releaseSnapshots(t *testing.T) []releaseSnapshot {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(releaseSnapshotDir, "etcd-v*.snapshot.db"))
	if err != nil {
		t.Fatal(err)
	}
	var snaps []releaseSnapshot
	var found []string
	for _, p := range paths {
		s := releaseSnapshot{Release: strings.TrimSuffix(filepath.Base(p), ".snapshot.db"), Path: p}
		b, err := os.ReadFile(strings.TrimSuffix(p, ".db") + ".json")
		if err != nil {
			t.Fatalf("facts of %s: %v (tools/etcdreleases/regenerate writes both)", p, err)
		}
		if err := json.Unmarshal(b, &s.Facts); err != nil {
			t.Fatalf("facts of %s: %v", p, err)
		}
		if !strings.HasPrefix("etcd-v"+s.Facts.EtcdVersion, s.Release+".") {
			t.Fatalf("%s was saved by etcd %s", p, s.Facts.EtcdVersion)
		}
		snaps = append(snaps, s)
		found = append(found, s.Release)
	}
	for _, r := range releasesWanted {
		if !slices.Contains(found, r) {
			t.Fatalf("no %s snapshot in %s (found %q); regenerate with tools/etcdreleases/regenerate", r, releaseSnapshotDir, found)
		}
	}
	return snaps
}

// TestVerifySnapshotReadsReleaseSnapshots verifies the snapshot each etcd release saved: the hash,
// revision and totalKey against the pinned `etcdutl snapshot status` on the same file, the live keys,
// revision and compaction against what the saving etcd served, the sha256 against crypto/sha256.
func TestVerifySnapshotReadsReleaseSnapshots(t *testing.T) {
	etcdutl := etcdutlBinary(t)
	for _, snap := range releaseSnapshots(t) {
		t.Run(snap.Release, func(t *testing.T) {
			res, err := VerifySnapshot(snap.Path)
			if err != nil {
				t.Fatalf("VerifySnapshot: %v", err)
			}
			st := etcdutlSnapshotStatus(t, etcdutl, snap.Path)
			if res.Hash != st.Hash || res.Revision != st.Revision || res.TotalKeys != st.TotalKey {
				t.Errorf("VerifySnapshot reads hash %d, revision %d, %d total keys; etcdutl snapshot status of the same file: hash %d, revision %d, totalKey %d",
					res.Hash, res.Revision, res.TotalKeys, st.Hash, st.Revision, st.TotalKey)
			}
			data, err := os.ReadFile(snap.Path)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			f := snap.Facts
			if res.File != snap.Path || res.Size != int64(len(data)) || res.SHA256 != hex.EncodeToString(sum[:]) || !res.HashChecked ||
				res.Keys != f.Keys || res.Revision != f.Revision || res.CompactRevision != f.CompactRevision {
				t.Errorf("VerifySnapshot = %+v; want file %s, %d bytes, sha256 %x, hash checked, and what etcd %s served: %d keys at revision %d, compacted at %d",
					*res, snap.Path, len(data), sum, f.EtcdVersion, f.Keys, f.Revision, f.CompactRevision)
			}
		})
	}
}
