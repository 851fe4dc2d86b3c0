package driver

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"
	"strings"
	"syscall"
)

// The layout of an `etcdctl snapshot save` file and of the etcd backend inside it, as read by
// etcdutl (etcdutl/snapshot/v3_snapshot.go) and the mvcc store (server/storage/mvcc/revision.go).
const (
	// snapshotSectorSize: etcd recognises the trailer by the file size, a bbolt file being a whole
	// number of 512-byte sectors (client/v3/snapshot hasChecksum).
	snapshotSectorSize = 512
	// revBytesLen is a key-bucket key: 8-byte big-endian main revision, '_', 8-byte sub revision;
	// a tombstone (a delete) appends one byte 't'.
	revBytesLen   = 8 + 1 + 8
	tombstoneMark = 't'
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
	// TotalKeys is what `etcdutl snapshot status` reports as totalKey: the live keys plus, if
	// present, the empty placeholder key a `--bump-revision` restore writes (etcd serves no such key,
	// so Keys leaves it out).
	TotalKeys int64 `json:"totalKeys"`
	// Hash is the crc32 (Castagnoli) over every bucket name, key and value, as `etcdutl snapshot status`
	// computes it.
	Hash uint32 `json:"hash"`
}

// VerifySnapshot checks the sha256 trailer and the bbolt integrity of an `etcdctl snapshot save` file
// and reads its revision, key counts and hash, in one read of the file. Errors name the file and say
// what is wrong.
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
	data, err := mapFile(f, size)
	if err != nil {
		return nil, err
	}
	defer syscall.Munmap(data)
	res := &VerifyResult{File: path, Size: size}
	if err := scanSnapshot(data, res); err != nil {
		return nil, err
	}
	return res, nil
}

// mapFile maps the first size bytes of f read-only. Mapped, the file is read straight from the page
// cache, without a copy; its pages are clean file pages, reclaimable under a memory limit like the
// page cache of any read.
func mapFile(f *os.File, size int64) ([]byte, error) {
	if size > math.MaxInt {
		return nil, fmt.Errorf("file of %d bytes is too large to map on this platform", size)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map the file: %w", err)
	}
	return data, nil
}

// readBackend checks a bare bbolt backend (a member's db, no sha256 trailer) and reads its mvcc
// figures into res, as the verify pass does for a snapshot's database part.
func readBackend(path string, res *VerifyResult) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if info.IsDir() {
		return errors.New("is a directory")
	}
	data, err := mapFile(f, info.Size())
	if err != nil {
		return err
	}
	defer syscall.Munmap(data)
	return scanBackend(data, res)
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

// VerifyOptions are the flags of the verify subcommand.
type VerifyOptions struct {
	// File is the snapshot file written by `etcdctl snapshot save` (-file).
	File string
	// SHA256 is the hex sha256 the whole file must have, the snapshot record's; "" skips the check
	// (-sha256).
	SHA256 string
	// TerminationLog receives the result for the pod's termination message; "" skips it
	// (-termination-log).
	TerminationLog string
}

// RunVerify is the `verify` subcommand once its flags are parsed (main.go): it verifies o.File (and,
// with o.SHA256, that it is the recorded file), prints the result as JSON and writes it to the
// termination log; on failure it writes a one-line reason to both the termination log and stderr and
// returns 1 (2 for a bad -sha256).
func RunVerify(o VerifyOptions, stdout, stderr io.Writer) int {
	want := strings.ToLower(o.SHA256)
	if b, err := hex.DecodeString(want); want != "" && (err != nil || len(b) != sha256.Size) {
		fmt.Fprintf(stderr, "verify: -sha256 %q is not a sha256 digest: want %d hex digits as sha256sum prints them\n", o.SHA256, 2*sha256.Size)
		return 2
	}
	fail := func(msg string) int {
		return ReportFailure(o.TerminationLog, 1, msg, stderr)
	}
	disarm := armCrashReport(o.TerminationLog, o.File, stderr)
	res, err := VerifySnapshot(o.File)
	disarm()
	if err != nil {
		return fail(err.Error())
	}
	// The trailer only proves the file is self-consistent; the record's digest proves it is the file
	// that was verified when the snapshot was taken, not one damaged or replaced at rest since.
	if want != "" && res.SHA256 != want {
		return fail(fmt.Sprintf("snapshot %s differs from the one recorded (damaged at rest): its sha256 is %s, the record says %s", o.File, res.SHA256, want))
	}
	out, err := json.Marshal(res)
	if err != nil {
		return fail(fmt.Sprintf("snapshot %s: encode result: %v", o.File, err))
	}
	if err := writeTerminationLog(o.TerminationLog, string(out), stderr); err != nil {
		// On success the pod's message comes only from this file, so a result not written is a failure.
		return fail(fmt.Sprintf("snapshot %s verified but the result could not be recorded: %v", o.File, err))
	}
	fmt.Fprintln(stdout, string(out))
	return 0
}

// ReportFailure ends a subcommand that runs in a Job's pod (verify, restore-step): it writes msg, made
// one line, to stderr and to the termination log (path; "" skips it), where the pod's termination
// message shows it, and returns code.
func ReportFailure(path string, code int, msg string, stderr io.Writer) int {
	msg = strings.ReplaceAll(msg, "\n", " ")
	fmt.Fprintln(stderr, msg)
	writeTerminationLog(path, msg, stderr)
	return code
}

// armCrashReport prepares the termination log for a crash that no recover catches (the runtime's
// fatal errors, such as running out of memory at the container's limit): the log gets a reason naming
// the file and the runtime appends the error to it, where the pod's termination message shows it. The
// returned func disarms the report; the result overwrites the log.
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
