package driver

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// smallSnapshot is a real `etcdctl snapshot save` file of a one-member etcd 3.7 cluster: 5 keys put
// under fuzz/, one deleted, revision 7. `etcdutl snapshot status` reports hash 2902389647, revision 7.
const smallSnapshot = "testdata/small-snapshot.db"

// FuzzVerifySnapshot mutates a real snapshot and runs the verify subcommand's check on it. Verify must
// never panic; a file whose bytes differ from the snapshot must never be reported as verified while
// its sha256 trailer is the original's (retrail false); with a recomputed trailer (retrail true) the
// mutation reaches the page walk and the mvcc decoding, and whatever verifies must report figures
// consistent with the bytes and be a sound database with the same hash for bbolt itself.
func FuzzVerifySnapshot(f *testing.F) {
	valid, err := os.ReadFile(smallSnapshot)
	if err != nil {
		f.Fatal(err)
	}
	want, err := VerifySnapshot(smallSnapshot)
	if err != nil {
		f.Fatalf("the fixture does not verify: %v", err)
	}
	db := valid[:len(valid)-sha256.Size]
	f.Add(valid, false)
	f.Add(db, true)
	f.Add(flipBit(valid, len(valid)-1), false)       // trailer damaged
	f.Add(flipBit(valid, 4096*2+100), false)         // a page damaged, trailer kept
	f.Add(flipBit(db, 4096*2+100), true)             // a page damaged, trailer recomputed
	f.Add(valid[:len(valid)-512], false)             // truncated by a sector
	f.Add(append(bytes.Clone(valid), 0), false)      // one byte appended
	f.Add(db[:4096*2], true)                         // only the meta pages, trailer recomputed
	f.Add(bytes.Repeat([]byte{0xff}, 512+32), false) // right size, no database

	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, retrail bool) {
		if retrail {
			data = withTrailer(data)
		}
		file, err := os.CreateTemp(dir, "fuzz-*.db")
		if err != nil {
			t.Fatal(err)
		}
		path := file.Name()
		defer os.Remove(path)
		if _, err := file.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := file.Close(); err != nil {
			t.Fatal(err)
		}

		res, err := VerifySnapshot(path)
		same := bytes.Equal(data, valid)
		switch {
		case err != nil && same:
			t.Fatalf("the valid snapshot failed to verify: %v", err)
		case err != nil:
			return
		case !retrail && !same:
			t.Fatalf("a file differing from the snapshot, with its trailer, verified: %+v", res)
		}
		sum := sha256.Sum256(data)
		if res.Size != int64(len(data)) || res.SHA256 != hex.EncodeToString(sum[:]) || !res.HashChecked {
			t.Fatalf("verified file of %d bytes, sha256 %x, reported as %+v", len(data), sum, res)
		}
		if res.Keys < 0 || res.Keys > res.TotalKeys || res.CompactRevision < 0 || res.Revision < res.CompactRevision {
			t.Fatalf("inconsistent figures for a verified file: %+v", res)
		}
		// verify walks the pages itself; bbolt, reading the same file, must agree that it is sound and
		// hash it the same way.
		if hash, err := boltHash(path); err != nil || hash != res.Hash {
			t.Fatalf("verify accepted the file with hash %d; bbolt reads hash %d, error %v", res.Hash, hash, err)
		}
		if same {
			got := *res
			got.File = want.File
			if got != *want {
				t.Fatalf("the snapshot verified as %+v, want %+v", got, *want)
			}
		}
	})
}

// boltHash opens path with bbolt, runs its consistency check and returns the crc32 `etcdutl snapshot
// status` computes over every bucket name, key and value.
func boltHash(path string) (uint32, error) {
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			h.Write(name)
			return b.ForEach(func(k, v []byte) error {
				h.Write(k)
				h.Write(v)
				return nil
			})
		})
	})
	return h.Sum32(), err
}

// TestSmallSnapshotFixture keeps the fuzz fixture what its comment says, as etcdutl reads it.
func TestSmallSnapshotFixture(t *testing.T) {
	res, err := VerifySnapshot(smallSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	// From `etcdutl snapshot status testdata/small-snapshot.db -w json` (etcdutl v3.7.3):
	// {"hash":2902389647,"revision":7,"totalKey":4,"totalSize":28672,"version":"3.7.0"}.
	if res.Hash != 2902389647 || res.Revision != 7 || res.Keys != 4 || res.Size != 28672+sha256.Size {
		t.Errorf("fixture reads as %+v, want etcdutl's hash 2902389647, revision 7, 4 keys, 28672 bytes + trailer", res)
	}
	if filepath.Base(res.File) != filepath.Base(smallSnapshot) {
		t.Errorf("File = %q", res.File)
	}
}
