package driver

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/maphash"
	"runtime/debug"

	"google.golang.org/protobuf/encoding/protowire"
)

// mvccKeyField is the field number of `key` in etcd's mvccpb.KeyValue (api/mvccpb/kv.proto).
const mvccKeyField protowire.Number = 1

// hashChunk is how much of the file the sha256 pass hashes at a time between checks for a cancel.
const hashChunk = 4 << 20

// scanSnapshot verifies file, the whole snapshot mapped into memory (database then sha256 trailer):
// the sha256 pass runs beside the one walk over the bbolt pages that checks them, hashes the buckets
// and decodes the mvcc figures, so the file is read once and the two cores a node usually grants
// share the work. A sha256 failure is reported before a database one: a damaged file is damaged
// whatever the pages look like.
func scanSnapshot(file []byte, res *VerifyResult) error {
	db := file[:len(file)-sha256.Size]
	type digests struct {
		file string
		err  error
	}
	done := make(chan digests, 1)
	go func() {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		var d digests
		d.file, d.err = checkTrailer(file)
		done <- d
	}()
	scanErr := scanBackend(db, res)
	d := <-done
	if d.err != nil {
		return d.err
	}
	if scanErr != nil {
		return scanErr
	}
	res.SHA256, res.HashChecked = d.file, true
	return nil
}

// checkTrailer compares the trailing sha256 with the digest of the bytes before it and returns the
// sha256 of the whole file. One digest serves both: its state after the database is cloned to finish
// the whole file's.
func checkTrailer(file []byte) (_ string, err error) {
	defer recoverFault(&err, "read")
	db, trailer := file[:len(file)-sha256.Size], file[len(file)-sha256.Size:]
	h := sha256.New()
	for len(db) > 0 {
		n := min(len(db), hashChunk)
		h.Write(db[:n])
		db = db[n:]
	}
	whole, err := h.(hash.Cloner).Clone()
	if err != nil {
		return "", fmt.Errorf("sha256: %w", err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, trailer) {
		return "", fmt.Errorf("sha256 mismatch: trailer says %x but the database bytes hash to %x (file corrupted or altered)", trailer, got)
	}
	whole.Write(trailer)
	return hex.EncodeToString(whole.Sum(nil)), nil
}

// recoverFault turns a fault reading the mapped file (the volume failing under it, or the file cut
// short by someone else) into an error, where the runtime would otherwise kill the process.
func recoverFault(err *error, what string) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%s: %v", what, r)
	}
}

// scanBackend walks the database db and fills res as `etcdutl snapshot status` reads it, plus the
// compaction and the live keys.
func scanBackend(db []byte, res *VerifyResult) (err error) {
	// A fault reading the mapping must not kill the process; it panics here instead (debug.SetPanicOnFault
	// holds for this goroutine only).
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	// A walk that panics on a crafted file rather than refusing it is a fault of the walk, but the
	// file is still not one to trust.
	defer recoverFault(&err, "bbolt database unreadable")
	s := &mvccScan{res: res, crc: crc32.New(crc32.MakeTable(crc32.Castagnoli)), seed: maphash.MakeSeed(), live: map[uint64]struct{}{}}
	if err := walkBolt(db, s); err != nil {
		return err
	}
	if !s.sawKeyBucket {
		return fmt.Errorf("no %q bucket: not an etcd v3 backend", keyBucket)
	}
	res.Keys = int64(len(s.live))
	res.TotalKeys = res.Keys
	if s.placeholder {
		res.TotalKeys++
	}
	res.Hash = s.crc.Sum32()
	return nil
}

// mvccScan is the boltVisitor that reads an etcd backend: the crc32 of `etcdutl snapshot status`, the
// newest revision, the compaction and the keys alive at the end.
type mvccScan struct {
	res           *VerifyResult
	crc           hash.Hash32
	isKey, isMeta bool
	sawKeyBucket  bool
	seed          maphash.Seed
	// live holds a 64-bit hash of each live key rather than the key: 8 bytes a key however long the
	// keys are, so an 8 GiB database stays within the verify container's memory. Two live keys with
	// the same hash count once (and a delete of one forgets the other), so Keys may fall short by the
	// number of colliding pairs: with n keys about n²/2⁶⁵ of them, 2.7e-7 for 10 million keys. The
	// seed is random per run, so no crafted set of keys collides reliably.
	live map[uint64]struct{}
	// placeholder tracks the empty key `etcdutl snapshot restore --bump-revision` writes to carry the
	// bumped revision (etcdutl/snapshot/v3_snapshot.go): etcd serves no such key, so Keys leaves it
	// out, but etcdutl's totalKey counts it.
	placeholder bool
}

func (s *mvccScan) bucket(name []byte) error {
	s.crc.Write(name)
	s.isKey, s.isMeta = bytes.Equal(name, keyBucket), bytes.Equal(name, metaBucket)
	s.sawKeyBucket = s.sawKeyBucket || s.isKey
	return nil
}

func (s *mvccScan) entry(k, v []byte) error {
	s.crc.Write(k)
	s.crc.Write(v)
	switch {
	case s.isKey:
		return s.keyRevision(k, v)
	case s.isMeta && (bytes.Equal(k, finishedCompactRev) || bytes.Equal(k, scheduledCompactRev)):
		// etcd restores the finished or scheduled compaction as its revision if that is higher
		// (compaction may have removed the newest tombstones).
		rev, _, err := parseRevision(v)
		if err != nil {
			return fmt.Errorf("meta %s: %w", k, err)
		}
		if bytes.Equal(k, finishedCompactRev) {
			s.res.CompactRevision = rev
		}
		s.res.Revision = max(s.res.Revision, rev)
	}
	return nil
}

// keyRevision reads one entry of the key bucket. Entries come in revision order, so the last word on
// each key is its state at the end.
func (s *mvccScan) keyRevision(k, v []byte) error {
	rev, tombstone, err := parseRevision(k)
	if err != nil {
		return fmt.Errorf("key bucket entry %x: %w", k, err)
	}
	key, err := mvccKey(v)
	if err != nil {
		return fmt.Errorf("key bucket revision %d: value is not an mvccpb.KeyValue: %v", rev, err)
	}
	switch {
	case len(key) == 0:
		// etcd refuses empty keys: this is the --bump-revision placeholder.
		s.placeholder = !tombstone
	case tombstone:
		delete(s.live, maphash.Bytes(s.seed, key))
	default:
		s.live[maphash.Bytes(s.seed, key)] = struct{}{}
	}
	s.res.Revision = max(s.res.Revision, rev)
	return nil
}

// mvccKey returns the key field of an encoded mvccpb.KeyValue without decoding the rest (the value,
// most of the bytes, is only skipped). The wire is checked as proto.Unmarshal would: a malformed
// field is an error, a repeated key field's last occurrence wins, a key field of another wire type is
// an unknown field.
func mvccKey(b []byte) ([]byte, error) {
	var key []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		if num == mvccKeyField && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			key, b = v, b[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return key, nil
}
