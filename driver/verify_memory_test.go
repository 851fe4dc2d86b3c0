package driver

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// writeBackend writes, as etcd lays out its backend (a "key" bucket of revision keys holding
// mvccpb.KeyValue values, a "meta" bucket, no synced freelist), a database of n keys put once each,
// whose keys are keyLen bytes long and values valueLen, followed by the sha256 trailer.
func writeBackend(t *testing.T, path string, n, keyLen, valueLen int) {
	t.Helper()
	bare := path + ".bolt"
	db, err := bolt.Open(bare, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		t.Fatal(err)
	}
	value := bytes.Repeat([]byte("v"), valueLen)
	for start := 0; start < n; start += 10000 {
		err := db.Update(func(tx *bolt.Tx) error {
			keys, err := tx.CreateBucketIfNotExists(keyBucket)
			if err != nil {
				return err
			}
			keys.FillPercent = 0.9 // etcd's for its appends in revision order
			if _, err := tx.CreateBucketIfNotExists(metaBucket); err != nil {
				return err
			}
			for i := start; i < min(start+10000, n); i++ {
				rev := int64(i + 2)
				name := fmt.Sprintf("/registry/%0*d", keyLen-len("/registry/"), i)
				v, err := proto.Marshal(&mvccpb.KeyValue{Key: []byte(name), CreateRevision: rev, ModRevision: rev, Version: 1, Value: value})
				if err != nil {
					return err
				}
				k := make([]byte, revBytesLen)
				binary.BigEndian.PutUint64(k, uint64(rev))
				k[8] = '_'
				if err := keys.Put(k, v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bare)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, withTrailer(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(bare); err != nil {
		t.Fatal(err)
	}
}

// TestVerifySnapshotMemoryIsBounded verifies a database of long keys and counts what verify allocates:
// it must not grow with the bytes of the file (no copy of the pages, no decoded values) nor with the
// length of the keys (the live keys are held as 64-bit hashes), only by a few words per live key, so
// that an 8 GiB database stays within the verify container's memory limit.
func TestVerifySnapshotMemoryIsBounded(t *testing.T) {
	const keys, keyLen, valueLen = 40000, 512, 512
	path := filepath.Join(t.TempDir(), "long-keys.db")
	writeBackend(t, path, keys, keyLen, valueLen)
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res, err := VerifySnapshot(path)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if res.Keys != keys || res.TotalKeys != keys || res.Revision != keys+1 {
		t.Fatalf("VerifySnapshot = %+v; want %d keys at revision %d", *res, keys, keys+1)
	}
	// A map of 8-byte hashes costs about 60 bytes a key with its growth; the page bitmap and the
	// digests are a few KiB.
	allocated := after.TotalAlloc - before.TotalAlloc
	if limit := uint64(96*keys + 1<<20); allocated > limit {
		t.Errorf("verify of a %d-byte file with %d live keys of %d bytes allocated %d bytes; want at most %d (96 a key + 1 MiB)",
			info.Size(), keys, keyLen, allocated, limit)
	}
	t.Logf("%d-byte file, %d keys: %d bytes allocated (%.1f a key)", info.Size(), keys, allocated, float64(allocated)/keys)
}
