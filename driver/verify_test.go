package driver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"
	"go.uber.org/zap"
)

// saveSnapshot writes a snapshot of member 0 to path exactly as `etcdctl snapshot save` does (same
// library call).
func (c *testCluster) saveSnapshot(t *testing.T, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := clientv3.Config{Endpoints: c.ClientURLs[:1], TLS: c.tlsConfig(t), DialTimeout: 5 * time.Second}
	if _, err := snapshot.SaveWithVersion(ctx, zap.NewNop(), cfg, path); err != nil {
		t.Fatalf("snapshot save: %v", err)
	}
}

// liveKeys asks etcd itself how many keys exist and at which revision.
func (c *testCluster) liveKeys(t *testing.T) (count, revision int64) {
	t.Helper()
	resp, err := c.cli.Get(context.Background(), "", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count, resp.Header.Revision
}

// snapshotStatus is what `etcdutl snapshot status -w json` reports about a snapshot file.
type snapshotStatus struct {
	Hash     uint32 `json:"hash"`
	Revision int64  `json:"revision"`
	TotalKey int64  `json:"totalKey"`
}

// etcdutlSnapshotStatus runs the real `etcdutl snapshot status -w json` on path.
func etcdutlSnapshotStatus(t *testing.T, etcdutl, path string) snapshotStatus {
	t.Helper()
	out, err := exec.Command(etcdutl, "snapshot", "status", path, "-w", "json").Output()
	if err != nil {
		t.Fatalf("etcdutl snapshot status %s: %v", path, err)
	}
	var st snapshotStatus
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("etcdutl snapshot status output %q: %v", out, err)
	}
	return st
}

// expectLive fails the test unless etcd itself serves keys live keys at revision.
func (c *testCluster) expectLive(t *testing.T, keys, revision int64) {
	t.Helper()
	if count, rev := c.liveKeys(t); count != keys || rev != revision {
		t.Fatalf("etcd reports %d keys at revision %d; the test expects %d at %d", count, rev, keys, revision)
	}
}

// TestVerifySnapshotReadsRealSnapshots checks every figure of VerifySnapshot on real snapshots against
// a tool that is not the code under test: hash, revision and totalKey against `etcdutl snapshot
// status` on the same file, live keys and revision against etcd itself, the sha256 against
// crypto/sha256 of the file; before and after a compaction, and on the database a `--bump-revision`
// restore writes.
func TestVerifySnapshotReadsRealSnapshots(t *testing.T) {
	etcdutl := etcdutlBinary(t)
	c := startTestCluster(t, 1)
	ctx := context.Background()
	dir := t.TempDir()

	// 100 creates (revisions 2..101), 10 updates, 10 single deletes, then one range delete of 10 keys
	// in a single revision: 80 live keys at revision 122, 130 stored key revisions.
	c.Put(t, 100, "verify/")
	c.Put(t, 10, "verify/")
	for _, k := range []string{"10", "11", "12", "13", "14", "15", "16", "17", "18", "19"} {
		if _, err := c.cli.Delete(ctx, "verify/0000"+k); err != nil {
			t.Fatal(err)
		}
	}
	if resp, err := c.cli.Delete(ctx, "verify/00002", clientv3.WithPrefix()); err != nil || resp.Deleted != 10 {
		t.Fatalf("range delete: %v (deleted %v)", err, resp)
	}

	var updated string // the snapshot of the first case, restored in the last
	cases := []struct {
		name string
		// snapshot prepares the cluster and returns the snapshot file to verify.
		snapshot                              func(t *testing.T, path string) string
		wantKeys, wantRevision, wantCompacted int64
	}{
		{
			name: "updates and deletes",
			snapshot: func(t *testing.T, path string) string {
				c.expectLive(t, 80, 122)
				c.saveSnapshot(t, path)
				updated = path
				return path
			},
			wantKeys: 80, wantRevision: 122,
		},
		{
			name: "delete then compact at the newest revision",
			snapshot: func(t *testing.T, path string) string {
				resp, err := c.cli.Delete(ctx, "verify/000099")
				if err != nil {
					t.Fatal(err)
				}
				if _, err := c.cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
					t.Fatal(err)
				}
				c.expectLive(t, 79, 123)
				c.saveSnapshot(t, path)
				return path
			},
			// Compaction drops every superseded revision and tombstone except the tombstone at the
			// compaction revision itself (etcd keeps it so revision 123 stays readable).
			wantKeys: 79, wantRevision: 123, wantCompacted: 123,
		},
		{
			name: "restored with bumped revision",
			snapshot: func(t *testing.T, path string) string {
				// The restore writes an empty-key placeholder at the bumped revision and schedules a
				// compaction there (finished when etcd starts); etcdutl counts the placeholder as a
				// key, etcd serves no such key.
				data := filepath.Join(t.TempDir(), "member-0")
				if err := etcdutlRestore(etcdutl, updated, data, "member-0", "http://127.0.0.1:2380"); err != nil {
					t.Fatal(err)
				}
				db, err := os.ReadFile(filepath.Join(data, "member", "snap", "db"))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, withTrailer(db), 0o600); err != nil {
					t.Fatal(err)
				}
				return path
			},
			wantKeys: 80, wantRevision: 122 + 1_000_000_000,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.snapshot(t, filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".db"))

			res, err := VerifySnapshot(path)
			if err != nil {
				t.Fatalf("VerifySnapshot: %v", err)
			}
			st := etcdutlSnapshotStatus(t, etcdutl, path)
			if res.Hash != st.Hash || res.Revision != st.Revision || res.TotalKeys != st.TotalKey {
				t.Errorf("VerifySnapshot reads hash %d, revision %d, %d total keys; etcdutl snapshot status of the same file: hash %d, revision %d, totalKey %d",
					res.Hash, res.Revision, res.TotalKeys, st.Hash, st.Revision, st.TotalKey)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			if res.File != path || res.Size != int64(len(data)) || res.SHA256 != hex.EncodeToString(sum[:]) || !res.HashChecked ||
				res.Keys != tc.wantKeys || res.Revision != tc.wantRevision || res.CompactRevision != tc.wantCompacted {
				t.Errorf("VerifySnapshot = %+v; want file %s, %d bytes, sha256 %x, hash checked, %d live keys at revision %d, compacted at %d",
					*res, path, len(data), sum, tc.wantKeys, tc.wantRevision, tc.wantCompacted)
			}
		})
	}
}

// TestVerifySnapshotRejectsDamagedFiles damages copies of a real snapshot and checks each message
// names the file and the fault.
func TestVerifySnapshotRejectsDamagedFiles(t *testing.T) {
	good := snapshotFixture(t)
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cases := []struct {
		name   string
		damage func() []byte // contents of the damaged copy; nil means the file does not exist
		want   []string
	}{
		{"truncated", func() []byte { return data[:len(data)-1000] }, []string{"missing sha256 trailer", "truncated"}},
		{"truncated by whole pages", func() []byte { return data[:len(data)-4096] }, []string{"sha256 mismatch"}},
		{"trailer cut off", func() []byte { return data[:len(data)-sha256.Size] }, []string{"missing sha256 trailer"}},
		{"bit flipped in the database", func() []byte { return flipBit(data, len(data)/2) }, []string{"sha256 mismatch", "corrupted"}},
		{"bit flipped in the trailer", func() []byte { return flipBit(data, len(data)-1) }, []string{"sha256 mismatch"}},
		{"empty", func() []byte { return []byte{} }, []string{"file is empty"}},
		{"missing", nil, []string{"no such file"}},
		{"not bbolt behind a valid trailer", func() []byte { return withTrailer(bytes.Repeat([]byte("etcd"), 4096)) }, []string{"not a readable bbolt database"}},
		{"bbolt without key bucket", func() []byte { return withTrailer(emptyBolt(t)) }, []string{`no "key" bucket`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".db")
			if tc.damage != nil {
				if err := os.WriteFile(path, tc.damage(), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			res, err := VerifySnapshot(path)
			if err == nil {
				t.Fatalf("VerifySnapshot accepted a damaged file: %+v", res)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "snapshot "+path+": ") || strings.Contains(msg, "\n") {
				t.Errorf("message %q is not one line starting with %q", msg, "snapshot "+path+": ")
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not contain %q", msg, w)
				}
			}
		})
	}
	if _, err := VerifySnapshot(good); err != nil {
		t.Errorf("the undamaged original fails: %v", err)
	}
}

// snapshotFixture saves a snapshot of a fresh one-member cluster holding 20 keys at revision 21.
func snapshotFixture(t *testing.T) string {
	t.Helper()
	c := startTestCluster(t, 1)
	c.Put(t, 20, "fixture/")
	path := filepath.Join(t.TempDir(), "snapshot.db")
	c.saveSnapshot(t, path)
	return path
}

// flipBit returns a copy of data with one bit at offset i inverted.
func flipBit(data []byte, i int) []byte {
	out := bytes.Clone(data)
	out[i] ^= 0x10
	return out
}

// withTrailer pads db to whole 512-byte sectors and appends its sha256, as etcd's snapshot stream does.
func withTrailer(db []byte) []byte {
	if r := len(db) % 512; r != 0 {
		db = append(bytes.Clone(db), make([]byte, 512-r)...)
	}
	sum := sha256.Sum256(db)
	return append(db, sum[:]...)
}

// zeroKeyRootPage returns the database part of a snapshot with the root page of its "key" bucket
// zeroed, the kind of damage only bbolt's own check finds once the trailer is recomputed.
func zeroKeyRootPage(t *testing.T, path string, data []byte) []byte {
	t.Helper()
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var root, pageSize int
	if err := db.View(func(tx *bolt.Tx) error {
		root, pageSize = int(tx.Bucket([]byte("key")).Root()), db.Info().PageSize
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if root == 0 {
		t.Fatal("the key bucket is inline; the fixture needs more keys")
	}
	out := bytes.Clone(data[:len(data)-sha256.Size])
	clear(out[root*pageSize : (root+1)*pageSize])
	return out
}

// emptyBolt returns the bytes of a valid bbolt database that holds only an unrelated bucket.
func emptyBolt(t *testing.T) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plain.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("other")); return err }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
