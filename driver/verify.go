package driver

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// The layout of an `etcdctl snapshot save` file and of the etcd backend inside it, as read by
// etcdutl (etcdutl/snapshot/v3_snapshot.go) and the mvcc store (server/storage/mvcc/revision.go).
const (
	// snapshotSectorSize: etcd recognises the trailer by the file size, a bbolt file being a whole
	// number of 512-byte sectors (client/v3/snapshot hasChecksum).
	snapshotSectorSize = 512
	// revBytesLen is a key-bucket key: 8-byte big-endian main revision, '_', 8-byte sub revision;
	// a tombstone (a delete) appends one byte 't'.
	revBytesLen       = 8 + 1 + 8
	tombstoneMark     = 't'
	verifyLockTimeout = 10 * time.Second
	// maxCheckErrors bounds how many bbolt consistency errors go into the one-line message.
	maxCheckErrors = 3
)

var (
	keyBucket           = []byte("key")
	metaBucket          = []byte("meta")
	finishedCompactRev  = []byte("finishedCompactRev")
	scheduledCompactRev = []byte("scheduledCompactRev")
)

// VerifyResult is what the verify subcommand reports about a snapshot file.
type VerifyResult struct {
	File string `json:"file"`
	// Size is the file size in bytes, trailer included.
	Size int64 `json:"size"`
	// SHA256 is the hex sha256 of the whole file, as `sha256sum` prints it.
	SHA256 string `json:"sha256"`
	// HashChecked is true when the embedded sha256 trailer matched the database bytes.
	HashChecked bool `json:"hashChecked"`
	// Revision is the store revision the snapshot holds (what etcd restores as its current revision).
	Revision int64 `json:"revision"`
	// CompactRevision is the last finished compaction, 0 if none.
	CompactRevision int64 `json:"compactRevision"`
	// Keys is the number of live keys at Revision, as etcd serves them.
	Keys int64 `json:"keys"`
	// TotalKeys is the number of key revisions stored, tombstones included.
	TotalKeys int64 `json:"totalKeys"`
	// Hash is the crc32 (Castagnoli) over every bucket name, key and value, as `etcdutl snapshot status`
	// computes it.
	Hash uint32 `json:"hash"`
}

// VerifySnapshot checks the sha256 trailer and the bbolt integrity of an `etcdctl snapshot save` file
// and reads its revision, key counts and hash. Errors name the file and say what is wrong.
func VerifySnapshot(path string) (*VerifyResult, error) {
	res, err := verifySnapshot(path)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", path, err)
	}
	return res, nil
}

// verifySnapshot does the work of VerifySnapshot; its errors leave the file name to the caller.
func verifySnapshot(path string) (*VerifyResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := info.Size()
	switch {
	case info.IsDir():
		return nil, errors.New("is a directory")
	case size == 0:
		return nil, errors.New("file is empty")
	case size%snapshotSectorSize != sha256.Size:
		return nil, fmt.Errorf("missing sha256 trailer: size %d bytes is not whole 512-byte pages plus a 32-byte digest (file truncated, or not written by etcdctl snapshot save)", size)
	}
	res := &VerifyResult{File: path, Size: size}
	if res.SHA256, err = checkTrailer(f, size); err != nil {
		return nil, err
	}
	res.HashChecked = true
	if err := precheckBolt(io.NewSectionReader(f, 0, size-sha256.Size), size-sha256.Size); err != nil {
		return nil, err
	}
	// bbolt reads only the pages its meta page references, so the trailer after them is ignored, as
	// etcdutl snapshot status relies on too; no trimmed copy is needed.
	if err := readBackend(path, res); err != nil {
		return nil, err
	}
	return res, nil
}

// checkTrailer compares the trailing sha256 with the digest of the bytes before it and returns the
// sha256 of the whole file.
func checkTrailer(f *os.File, size int64) (string, error) {
	dbHash, fileHash := sha256.New(), sha256.New()
	if _, err := io.Copy(io.MultiWriter(dbHash, fileHash), io.NewSectionReader(f, 0, size-sha256.Size)); err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	trailer := make([]byte, sha256.Size)
	if _, err := f.ReadAt(trailer, size-sha256.Size); err != nil {
		return "", fmt.Errorf("read sha256 trailer: %w", err)
	}
	fileHash.Write(trailer)
	if got := dbHash.Sum(nil); !bytes.Equal(got, trailer) {
		return "", fmt.Errorf("sha256 mismatch: trailer says %x but the database bytes hash to %x (file corrupted or altered)", trailer, got)
	}
	return hex.EncodeToString(fileHash.Sum(nil)), nil
}

// readBackend opens the bbolt file read-only, checks its consistency and reads the mvcc figures.
func readBackend(path string, res *VerifyResult) (err error) {
	// bbolt panics on some page corruptions (in Open as well as in reads); report them as such.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("bbolt database corrupt: %v", r)
		}
	}()
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: verifyLockTimeout})
	if err != nil {
		return fmt.Errorf("not a readable bbolt database: %v", err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		if err := checkConsistency(tx); err != nil {
			return err
		}
		if tx.Bucket(keyBucket) == nil {
			return fmt.Errorf("no %q bucket: not an etcd v3 backend", keyBucket)
		}
		if err := readCompaction(tx, res); err != nil {
			return err
		}
		return readBuckets(tx, res)
	})
}

// checkConsistency runs bbolt's page consistency check.
func checkConsistency(tx *bolt.Tx) error {
	var msgs []string
	n := 0
	for err := range tx.Check() {
		if n < maxCheckErrors {
			msgs = append(msgs, err.Error())
		}
		n++
	}
	if n > 0 {
		return fmt.Errorf("bbolt consistency check found %d errors: %s", n, strings.Join(msgs, "; "))
	}
	return nil
}

// readCompaction reads the last finished compaction, and raises Revision to the finished or scheduled
// compaction as etcd does on restore (compaction may have removed the newest tombstones).
func readCompaction(tx *bolt.Tx, res *VerifyResult) error {
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		return nil
	}
	for _, name := range [][]byte{finishedCompactRev, scheduledCompactRev} {
		v := meta.Get(name)
		if v == nil {
			continue
		}
		rev, _, err := parseRevision(v)
		if err != nil {
			return fmt.Errorf("meta %s: %w", name, err)
		}
		if bytes.Equal(name, finishedCompactRev) {
			res.CompactRevision = rev
		}
		res.Revision = max(res.Revision, rev)
	}
	return nil
}

// readBuckets hashes every bucket like etcdutl snapshot status and, in the key bucket, finds the
// newest revision and the keys alive at it.
func readBuckets(tx *bolt.Tx, res *VerifyResult) error {
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	live := map[string]struct{}{}
	err := tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		h.Write(name)
		isKey := bytes.Equal(name, keyBucket)
		return b.ForEach(func(k, v []byte) error {
			h.Write(k)
			h.Write(v)
			if !isKey {
				return nil
			}
			rev, tombstone, err := parseRevision(k)
			if err != nil {
				return fmt.Errorf("key bucket entry %x: %w", k, err)
			}
			var kv mvccpb.KeyValue
			if err := proto.Unmarshal(v, &kv); err != nil {
				return fmt.Errorf("key bucket revision %d: value is not an mvccpb.KeyValue: %v", rev, err)
			}
			// Keys are ordered by revision, so the last word on each key is its state at the end.
			switch {
			case len(kv.Key) == 0:
				// etcd refuses empty keys, so this is the placeholder `etcdutl snapshot restore
				// --bump-revision` writes to carry the bumped revision (etcdutl/snapshot/v3_snapshot.go);
				// etcd serves no such key, though `etcdutl snapshot status` counts it.
			case tombstone:
				delete(live, string(kv.Key))
			default:
				live[string(kv.Key)] = struct{}{}
			}
			res.TotalKeys++
			res.Revision = max(res.Revision, rev)
			return nil
		})
	})
	if err != nil {
		return err
	}
	res.Keys = int64(len(live))
	res.Hash = h.Sum32()
	return nil
}

// parseRevision decodes a revision key and reports whether it marks a tombstone.
func parseRevision(b []byte) (main int64, tombstone bool, err error) {
	switch {
	case len(b) == revBytesLen+1 && b[revBytesLen] == tombstoneMark:
		tombstone = true
	case len(b) != revBytesLen:
		return 0, false, fmt.Errorf("revision key of %d bytes, want %d or %d", len(b), revBytesLen, revBytesLen+1)
	}
	if b[8] != '_' {
		return 0, false, errors.New("revision key without '_' separator")
	}
	main = int64(binary.BigEndian.Uint64(b[:8]))
	if main < 0 || int64(binary.BigEndian.Uint64(b[9:revBytesLen])) < 0 {
		return 0, false, errors.New("negative revision")
	}
	return main, tombstone, nil
}

// RunVerify is the `verify` subcommand: it verifies -file (and, with -sha256, that it is the recorded
// file), prints the result as JSON and writes it to -termination-log; on failure it writes a one-line reason to both the termination log and stderr and
// returns 1 (2 for bad usage).
func RunVerify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("file", "", "snapshot file written by `etcdctl snapshot save` (required)")
	wantSHA := fs.String("sha256", "", "hex sha256 the whole file must have (the snapshot record's); empty to skip")
	termLog := fs.String("termination-log", "/dev/termination-log", "file that receives the result for the pod's termination message; empty to skip")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "verify: usage: verify -file <snapshot.db> [-sha256 <hex>] [-termination-log <path>]")
		return 2
	}
	want := strings.ToLower(*wantSHA)
	if b, err := hex.DecodeString(want); want != "" && (err != nil || len(b) != sha256.Size) {
		fmt.Fprintf(stderr, "verify: -sha256 %q is not a sha256 digest: want %d hex digits as sha256sum prints them\n", *wantSHA, 2*sha256.Size)
		return 2
	}
	fail := func(msg string) int {
		msg = strings.ReplaceAll(msg, "\n", " ")
		fmt.Fprintln(stderr, msg)
		writeTerminationLog(*termLog, msg, stderr)
		return 1
	}
	disarm := armCrashReport(*termLog, *file, stderr)
	res, err := VerifySnapshot(*file)
	disarm()
	if err != nil {
		return fail(err.Error())
	}
	// The trailer only proves the file is self-consistent; the record's digest proves it is the file
	// that was verified when the snapshot was taken, not one damaged or replaced at rest since.
	if want != "" && res.SHA256 != want {
		return fail(fmt.Sprintf("snapshot %s differs from the one recorded (damaged at rest): its sha256 is %s, the record says %s", *file, res.SHA256, want))
	}
	out, err := json.Marshal(res)
	if err != nil {
		return fail(fmt.Sprintf("snapshot %s: encode result: %v", *file, err))
	}
	if err := writeTerminationLog(*termLog, string(out), stderr); err != nil {
		// On success the pod's message comes only from this file, so a result not written is a failure.
		return fail(fmt.Sprintf("snapshot %s verified but the result could not be recorded: %v", *file, err))
	}
	fmt.Fprintln(stdout, string(out))
	return 0
}

// armCrashReport prepares the termination log for a crash: bbolt walks the pages of a database whose
// freelist is not stored (etcd's) in a goroutine of its own while opening it, and asserts there, so a
// corrupt page panics beyond any recover. The log gets a reason naming the file and the runtime
// appends the panic to it. The returned func disarms the report; the result overwrites the log.
func armCrashReport(path, file string, stderr io.Writer) (disarm func()) {
	disarm = func() {}
	if path == "" {
		return disarm
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintf(stderr, "verify: prepare termination log %s: %v\n", path, err)
		return disarm
	}
	defer f.Close()
	if _, err := fmt.Fprintf(f, "snapshot %s: verify crashed while reading the database: ", file); err != nil {
		fmt.Fprintf(stderr, "verify: prepare termination log %s: %v\n", path, err)
		return disarm
	}
	if err := debug.SetCrashOutput(f, debug.CrashOptions{}); err != nil {
		fmt.Fprintf(stderr, "verify: route crash output to %s: %v\n", path, err)
		return disarm
	}
	return func() { debug.SetCrashOutput(nil, debug.CrashOptions{}) }
}

// writeTerminationLog replaces the content of path with msg; a failure is also reported on stderr.
func writeTerminationLog(path, msg string, stderr io.Writer) error {
	if path == "" {
		return nil
	}
	if err := os.WriteFile(path, []byte(msg), 0o644); err != nil {
		fmt.Fprintf(stderr, "verify: write termination log %s: %v\n", path, err)
		return err
	}
	return nil
}
