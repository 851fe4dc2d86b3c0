package driver

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunPrepareSaveClearsFailedAttempt leaves on a volume what failed attempts leave (a complete
// snapshot whose verify failed, etcdctl's partial file of a killed save) and checks prepare-save
// removes them, passes over an empty volume, and refuses what it must not remove.
func TestRunPrepareSaveClearsFailedAttempt(t *testing.T) {
	cases := []struct {
		name     string
		leftover map[string]string // file name -> content before the run
		dirs     []string          // directories before the run
		wantCode int
		wantLeft []string // names still there afterwards
		wantOut  []string // substrings of stdout (code 0) or stderr (otherwise)
	}{
		{name: "first attempt: empty volume", wantCode: 0},
		{name: "verify failed after a complete save", leftover: map[string]string{"snapshot.db": "full"}, wantCode: 0,
			wantOut: []string{"removed " + "VOL/snapshot.db (4 bytes)"}},
		{name: "save killed midway", leftover: map[string]string{"snapshot.db.part": "par"}, wantCode: 0,
			wantOut: []string{"removed VOL/snapshot.db.part (3 bytes)"}},
		{name: "both, and unrelated files stay", leftover: map[string]string{"snapshot.db": "a", "snapshot.db.part": "b", "lost+found.txt": "c"},
			wantCode: 0, wantLeft: []string{"lost+found.txt"}},
		{name: "a directory in the way", dirs: []string{"snapshot.db"}, wantCode: 1, wantLeft: []string{"snapshot.db"},
			wantOut: []string{"cannot remove VOL/snapshot.db", "is a directory"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vol := t.TempDir()
			for name, content := range tc.leftover {
				if err := os.WriteFile(filepath.Join(vol, name), []byte(content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			for _, d := range tc.dirs {
				if err := os.Mkdir(filepath.Join(vol, d), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			var stdout, stderr bytes.Buffer
			code := RunPrepareSave(filepath.Join(vol, "snapshot.db"), &stdout, &stderr)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d (stdout %q, stderr %q)", code, tc.wantCode, stdout.String(), stderr.String())
			}
			out := stdout.String()
			if code != 0 {
				out = stderr.String()
			}
			for _, w := range tc.wantOut {
				if w = strings.ReplaceAll(w, "VOL", vol); !strings.Contains(out, w) {
					t.Errorf("output %q does not contain %q", out, w)
				}
			}
			entries, err := os.ReadDir(vol)
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, e := range entries {
				left = append(left, e.Name())
			}
			if strings.Join(left, ",") != strings.Join(tc.wantLeft, ",") {
				t.Errorf("left on the volume: %v, want %v", left, tc.wantLeft)
			}
		})
	}
}
