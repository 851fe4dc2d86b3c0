package rig

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
)

// TestCheckSnapshotFile accepts a file of the record's size and sha256 and names what differs otherwise.
func TestCheckSnapshotFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), SnapshotFile)
	data := []byte("not really a bolt database")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	good := &driver.Record{SizeBytes: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
	cases := []struct {
		name string
		path string
		rec  *driver.Record
		want string // in the error; "" for none
	}{
		{"matches", path, good, ""},
		{"other sha256", path, &driver.Record{SizeBytes: good.SizeBytes, SHA256: "00"}, "the record says"},
		{"other size", path, &driver.Record{SizeBytes: 1, SHA256: good.SHA256}, "the record says 1 bytes"},
		{"missing", path + ".gone", good, "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CheckSnapshotFile(tc.path, tc.rec)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("CheckSnapshotFile = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestParseSnapshotStatus reads etcdutl's JSON line after whatever it logged first.
func TestParseSnapshotStatus(t *testing.T) {
	out := "{\"level\":\"info\",\"msg\":\"x\"}\nsome warning\n{\"hash\":7,\"revision\":42,\"totalKey\":5,\"totalSize\":4096}\n"
	st, err := ParseSnapshotStatus("f", []byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if *st != (SnapshotStatus{Hash: 7, Revision: 42, TotalKey: 5, TotalSize: 4096}) {
		t.Errorf("ParseSnapshotStatus = %+v", *st)
	}
	if _, err := ParseSnapshotStatus("f", []byte("Error: no such file\n")); err == nil {
		t.Error("output without JSON parsed without an error")
	}
}
