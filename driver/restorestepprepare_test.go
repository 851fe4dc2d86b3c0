package driver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRestoreStepPrepare checks prepare removes only this restore's scratch dir (and its own probe),
// never the data dir or a kept copy, and refuses while another restore is halfway.
func TestRestoreStepPrepare(t *testing.T) {
	const id = "r1"
	cases := []struct {
		name string
		rel  string
		// setup fills the volume; data is vol/rel.
		setup    func(t *testing.T, vol, data string)
		wantCode int
		want     RestoreStepResult
		// removed are the paths below vol prepare must remove; everything else stays byte for byte.
		removed []string
		wantErr []string
	}{
		{
			name: "partial restore beside the data dir and kept copies", rel: "data",
			setup: func(t *testing.T, vol, data string) {
				writeOldMember(t, data, 1)
				writeOldMember(t, data+".before-restore-r0", 2)
				writePartialRestore(t, data+".restore-r1")
			},
			want: RestoreStepResult{RestoreID: id, DataDir: "data"}, removed: []string{"data.restore-r1"},
		},
		{
			name: "swap halfway: this restore's kept copy and no data dir", rel: "data",
			setup: func(t *testing.T, vol, data string) {
				writeOldMember(t, data+".before-restore-r1", 1)
				writePartialRestore(t, data+".restore-r1")
				writeMarkerFile(t, data+".restore-state.json", restoreMarker{RestoreID: id, State: stateMovingRestored, KeptAt: "data.before-restore-r1"})
			},
			want: RestoreStepResult{RestoreID: id, DataDir: "data"}, removed: []string{"data.restore-r1"},
		},
		{
			name: "already done, retried pod", rel: "data",
			setup: func(t *testing.T, vol, data string) {
				writeOldMember(t, data, 1)
				writeOldMember(t, data+".before-restore-r1", 2)
				writeOldMember(t, data+".restore-r1", 3)
				writeMarkerFile(t, data+".restore-state.json", restoreMarker{RestoreID: id, State: stateDone, KeptAt: "data.before-restore-r1", Revision: 7, Keys: 3})
			},
			want:    RestoreStepResult{RestoreID: id, DataDir: "data", KeptAt: "data.before-restore-r1", Revision: 7, Keys: 3, AlreadyDone: true},
			removed: []string{"data.restore-r1"},
		},
		{
			name: "leftover probe of a crashed prepare", rel: "data",
			setup: func(t *testing.T, vol, data string) {
				writeOldMember(t, data, 1)
				if err := os.WriteFile(data+".restore-probe-r1", []byte("x"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			want: RestoreStepResult{RestoreID: id, DataDir: "data"}, removed: []string{"data.restore-probe-r1"},
		},
		{
			name: "empty volume, nested data dir", rel: "var/lib/etcd",
			setup: func(*testing.T, string, string) {},
			want:  RestoreStepResult{RestoreID: id, DataDir: "var/lib/etcd"},
		},
		{
			name: "another restore halfway", rel: "data",
			setup: func(t *testing.T, vol, data string) {
				writeOldMember(t, data+".before-restore-r0", 1)
				writePartialRestore(t, data+".restore-r1")
				writeMarkerFile(t, data+".restore-state.json", restoreMarker{RestoreID: "r0", State: stateMovingRestored, KeptAt: "data.before-restore-r0"})
			},
			wantCode: 1, wantErr: []string{"restore r0 unfinished", "moving-restored", "run that restore again"},
		},
		{
			name: "unreadable marker", rel: "data",
			setup: func(t *testing.T, vol, data string) {
				writeOldMember(t, data, 1)
				writePartialRestore(t, data+".restore-r1")
				if err := os.WriteFile(data+".restore-state.json", []byte("{half"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			wantCode: 1, wantErr: []string{"data.restore-state.json is not a restore marker"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vol := t.TempDir()
			tc.setup(t, vol, filepath.Join(vol, tc.rel))
			want := readTree(t, vol)
			for _, r := range tc.removed {
				for p := range want {
					if p == r || strings.HasPrefix(p, r+"/") {
						delete(want, p)
					}
				}
			}
			code, res, stderr := runRestoreStepCLI(t, stepOptions("prepare", vol, tc.rel, id))
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d (stderr %q)", code, tc.wantCode, stderr)
			}
			if code == 0 && res != tc.want {
				t.Errorf("result %+v, want %+v", res, tc.want)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not contain %q", stderr, w)
				}
			}
			sameTree(t, "volume", vol, want)
		})
	}
}
