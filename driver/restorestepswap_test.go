package driver

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRestoreStepSwapRefuses checks swap changes nothing when the scratch dir holds no restored member
// or the volume is in a state no interrupted swap of this restore leaves.
func TestRestoreStepSwapRefuses(t *testing.T) {
	etcdutl := etcdutlBinary(t)
	snap := snapshotFixture(t)
	const id = "r1"
	restored := func(t *testing.T, data string) {
		t.Helper()
		if err := etcdutlRestore(etcdutl, snap, data+".restore-r1", "m0", testPeerURL); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name    string
		setup   func(t *testing.T, data string)
		wantErr []string
	}{
		{
			name:    "etcdutl did not run",
			setup:   func(t *testing.T, data string) { writeOldMember(t, data, 1) },
			wantErr: []string{"data.restore-r1 holds no restored member", "run etcdutl snapshot restore into it first"},
		},
		{
			name: "etcdutl interrupted",
			setup: func(t *testing.T, data string) {
				writeOldMember(t, data, 1)
				writePartialRestore(t, data+".restore-r1")
			},
			wantErr: []string{"holds no restored member", "no WAL file"},
		},
		{
			name: "restored db unreadable",
			setup: func(t *testing.T, data string) {
				writeOldMember(t, data, 1)
				restored(t, data)
				if err := os.WriteFile(filepath.Join(data+".restore-r1", "member", "snap", "db"), bytes.Repeat([]byte("etcd"), 4096), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantErr: []string{"restored member", "not a readable bbolt database"},
		},
		{
			name: "a kept copy of this restore id the marker does not know",
			setup: func(t *testing.T, data string) {
				writeOldMember(t, data, 1)
				writeOldMember(t, data+".before-restore-r1", 2)
				restored(t, data)
			},
			wantErr: []string{"data.before-restore-r1 already exists", "refusing to touch it", "new restore id"},
		},
		{
			name: "another restore halfway",
			setup: func(t *testing.T, data string) {
				writeOldMember(t, data+".before-restore-r0", 1)
				restored(t, data)
				writeMarkerFile(t, data+".restore-state.json", restoreMarker{RestoreID: "r0", State: stateMovingOld, KeptAt: "data.before-restore-r0"})
			},
			wantErr: []string{"restore r0 unfinished", "run that restore again"},
		},
		{
			name: "both the data dir and the kept copy while moving the old one",
			setup: func(t *testing.T, data string) {
				writeOldMember(t, data, 1)
				writeOldMember(t, data+".before-restore-r1", 2)
				restored(t, data)
				writeMarkerFile(t, data+".restore-state.json", restoreMarker{RestoreID: id, State: stateMovingOld, KeptAt: "data.before-restore-r1"})
			},
			wantErr: []string{"both", "refusing to choose"},
		},
		{
			name: "a data dir appeared on a volume that had none",
			setup: func(t *testing.T, data string) {
				writeOldMember(t, data, 1)
				restored(t, data)
				writeMarkerFile(t, data+".restore-state.json", restoreMarker{RestoreID: id, State: stateMovingOld})
			},
			wantErr: []string{"appeared during restore r1", "refusing to replace it"},
		},
		{
			name: "the old data dir vanished",
			setup: func(t *testing.T, data string) {
				restored(t, data)
				writeMarkerFile(t, data+".restore-state.json", restoreMarker{RestoreID: id, State: stateMovingOld, KeptAt: "data.before-restore-r1"})
			},
			wantErr: []string{"neither at", "nor at"},
		},
		{
			name: "nothing to move in",
			setup: func(t *testing.T, data string) {
				writeOldMember(t, data+".before-restore-r1", 1)
				writeMarkerFile(t, data+".restore-state.json", restoreMarker{RestoreID: id, State: stateMovingRestored, KeptAt: "data.before-restore-r1"})
			},
			wantErr: []string{"holds no restored member"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vol := t.TempDir()
			tc.setup(t, filepath.Join(vol, "data"))
			before := readTree(t, vol)
			code, _, stderr := runRestoreStepCLI(t, stepOptions("swap", vol, "data", id))
			if code != 1 {
				t.Fatalf("exit %d, want 1 (stderr %q)", code, stderr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not contain %q", stderr, w)
				}
			}
			sameTree(t, "volume", vol, before)
		})
	}
}

// TestRestoreStepDeleteOldAfterSwap runs swap again with -delete-old after a swap that kept the old
// data: only this restore's kept copy goes, and the result says so.
func TestRestoreStepDeleteOldAfterSwap(t *testing.T) {
	etcdutl := etcdutlBinary(t)
	snap, record := verifiedSnapshotFixture(t)
	const id = "r1"
	v := newRestoreVolume(t, "data", id, false)
	first, err := runPod(t, etcdutl, snap, v.vol, v.rel, id, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	v.checkRestored(t, etcdutl, id, false, first, record.Keys)
	deleteOld := stepOptions("swap", v.vol, v.rel, id)
	deleteOld.DeleteOld = true
	code, res, stderr := runRestoreStepCLI(t, deleteOld)
	if code != 0 || !res.AlreadyDone {
		t.Fatalf("swap -delete-old after the swap: exit %d result %+v stderr %q, want already done", code, res, stderr)
	}
	if !strings.Contains(stderr, "deleted the old data dir data.before-restore-r1") {
		t.Errorf("stderr %q does not report the deletion", stderr)
	}
	v.checkRestored(t, etcdutl, id, true, &res, record.Keys)
	// Without -delete-old a later run reports the copy as gone, not kept.
	code, res, stderr = runRestoreStepCLI(t, stepOptions("swap", v.vol, v.rel, id))
	if code != 0 || res.KeptAt != "" {
		t.Errorf("swap after the deletion: exit %d result %+v stderr %q, want nothing kept", code, res, stderr)
	}
}
