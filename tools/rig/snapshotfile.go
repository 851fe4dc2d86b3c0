package rig

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
)

// CheckSnapshotFile hashes the snapshot file at path (SnapshotFilePath) and returns an error unless
// its size and sha256 are the ones rec states. It returns the size read.
func CheckSnapshotFile(path string, rec *driver.Record) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("snapshot file: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return n, fmt.Errorf("snapshot file %s: %w", path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != rec.SizeBytes || got != rec.SHA256 {
		return n, fmt.Errorf("snapshot file %s is %d bytes with sha256 %s; the record says %d bytes with sha256 %s", path, n, got, rec.SizeBytes, rec.SHA256)
	}
	return n, nil
}

// SnapshotStatus is what `etcdutl snapshot status -w json` reads from a snapshot file.
type SnapshotStatus struct {
	Hash      uint32 `json:"hash"`
	Revision  int64  `json:"revision"`
	TotalKey  int64  `json:"totalKey"`
	TotalSize int64  `json:"totalSize"`
}

// EtcdutlSnapshotStatus runs `etcdutl snapshot status -w json` on file with the etcdutl in binDir
// (the rig's BinDir): the real tool's reading of a snapshot file.
func EtcdutlSnapshotStatus(ctx context.Context, binDir, file string) (*SnapshotStatus, error) {
	out, err := exec.CommandContext(ctx, filepath.Join(binDir, "etcdutl"), "snapshot", "status", file, "-w", "json").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("etcdutl snapshot status %s: %v\n%s", file, err, out)
	}
	return ParseSnapshotStatus(file, out)
}

// ParseSnapshotStatus reads the output of `etcdutl snapshot status -w json` on file: its last line
// that starts a JSON object (etcdutl may log before it).
func ParseSnapshotStatus(file string, out []byte) (*SnapshotStatus, error) {
	line := bytes.TrimSpace(out)
	lines := bytes.Split(line, []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if l := bytes.TrimSpace(lines[i]); bytes.HasPrefix(l, []byte("{")) {
			line = l
			break
		}
	}
	var st SnapshotStatus
	if err := json.Unmarshal(line, &st); err != nil {
		return nil, fmt.Errorf("etcdutl snapshot status %s: %w: %q", file, err, out)
	}
	return &st, nil
}
