package driver

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/sets"
)

// treeEntry is one file, directory or symlink of a tree, as compared byte for byte.
type treeEntry struct {
	Mode fs.FileMode
	Data string
}

// readTree maps every path below dir to its mode and content (a symlink to its target).
func readTree(t *testing.T, dir string) map[string]treeEntry {
	t.Helper()
	tree := map[string]treeEntry{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		e := treeEntry{Mode: info.Mode()}
		switch {
		case info.Mode().Type() == fs.ModeSymlink:
			e.Data, err = os.Readlink(path)
		case info.Mode().IsRegular():
			var b []byte
			b, err = os.ReadFile(path)
			e.Data = string(b)
		}
		tree[rel] = e
		return err
	})
	if err != nil {
		t.Fatalf("read tree %s: %v", dir, err)
	}
	return tree
}

// sameTree fails the test when dir does not hold exactly want.
func sameTree(t *testing.T, what, dir string, want map[string]treeEntry) {
	t.Helper()
	got := readTree(t, dir)
	for p, w := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("%s: %s is missing", what, p)
		} else if g != w {
			t.Errorf("%s: %s differs: mode %v, %d bytes; want mode %v, %d bytes", what, p, g.Mode, len(g.Data), w.Mode, len(w.Data))
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: unexpected %s", what, p)
		}
	}
}

// writeOldMember fills dir with a stand-in for a member's data dir as etcd lays it out (0700 dirs,
// 0600 files, random contents) and returns its tree.
func writeOldMember(t *testing.T, dir string, seed uint64) map[string]treeEntry {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	files := map[string]int{
		"member/snap/db": 64 << 10, "member/snap/0000000000000002-0000000000000c35.snap": 3000,
		"member/wal/0000000000000000-0000000000000000.wal": 32 << 10, "member/wal/0.tmp": 512,
	}
	for name, size := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return readTree(t, dir)
}

// writePartialRestore leaves what an interrupted etcdutl leaves: the scratch dir with a truncated db.
func writePartialRestore(t *testing.T, scratch string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(scratch, "member", "snap"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(scratch, "member", "snap", "db"), []byte("half a db"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// runRestoreStepCLI runs the subcommand and decodes its result; the termination log must hold what
// stdout holds on success and what stderr ends with on failure.
func runRestoreStepCLI(t *testing.T, o RestoreStepOptions) (code int, res RestoreStepResult, stderr string) {
	t.Helper()
	o.TerminationLog = filepath.Join(t.TempDir(), "termination-log")
	var out, errOut bytes.Buffer
	code = RunRestoreStep(o, &out, &errOut)
	logged, _ := os.ReadFile(o.TerminationLog)
	switch code {
	case 0:
		if err := json.Unmarshal(logged, &res); err != nil {
			t.Fatalf("restore-step %+v: termination log %q is not a result: %v", o, logged, err)
		}
		if strings.TrimSpace(out.String()) != string(logged) {
			t.Errorf("restore-step %+v: stdout %q differs from termination log %q", o, out.String(), logged)
		}
	default:
		lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
		if len(logged) == 0 || strings.Contains(string(logged), "\n") || lines[len(lines)-1] != string(logged) {
			t.Errorf("restore-step %+v: exit %d, termination log %q, stderr %q: want the one-line reason in both", o, code, logged, errOut.String())
		}
		if out.Len() != 0 {
			t.Errorf("restore-step %+v: exit %d printed a result %q", o, code, out.String())
		}
	}
	return code, res, errOut.String()
}

// stepOptions are the options both steps take.
func stepOptions(step, vol, rel, id string) RestoreStepOptions {
	return RestoreStepOptions{Step: step, Volume: vol, DataDir: rel, RestoreID: id}
}

// testPeerURL is the peer URL of the member the crash tests restore; nothing listens on it.
const testPeerURL = "https://127.0.0.1:2380"

// errSimulatedCrash stops a step at a crash point, leaving the disk as a crash there would.
var errSimulatedCrash = errors.New("simulated crash")

// crashRecorder records the crash points a run passes and crashes at the one numbered at (0-based;
// -1 never crashes).
type crashRecorder struct {
	at     int
	points []string
}

// hook is the restoreStep crash hook.
func (c *crashRecorder) hook(point string) error {
	c.points = append(c.points, point)
	if len(c.points)-1 == c.at {
		return errSimulatedCrash
	}
	return nil
}

// newTestStep is newRestoreStep for a test, with a crash hook.
func newTestStep(t *testing.T, vol, rel, id string, crash func(string) error) *restoreStep {
	t.Helper()
	s, err := newRestoreStep(vol, rel, id, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s.crashPoint = crash
	return s
}

// runPod runs the restore pod's containers in order (prepare, the real etcdutl, swap), each step a new
// process as in the pod, stopping at the first failure or crash.
func runPod(t *testing.T, etcdutl, snap, vol, rel, id string, deleteOld bool, crash func(string) error) (*RestoreStepResult, error) {
	t.Helper()
	s := newTestStep(t, vol, rel, id, crash)
	if _, err := s.prepare(); err != nil {
		return nil, err
	}
	if err := etcdutlRestore(etcdutl, snap, s.scratch, "m0", testPeerURL); err != nil {
		return nil, err
	}
	return newTestStep(t, vol, rel, id, crash).swap(deleteOld)
}

// restoreVolume is a member volume set up for a restore and what it held before.
type restoreVolume struct {
	vol, rel string
	// old is the data dir's tree, nil for a volume without one.
	old map[string]treeEntry
	// earlier is the tree of an earlier restore's kept copy (restore id r0).
	earlier map[string]treeEntry
}

// newRestoreVolume creates a volume with (unless fresh) an old data dir, an earlier finished restore r0
// with its kept copy and marker, and the partial restore of an interrupted etcdutl for id.
func newRestoreVolume(t *testing.T, rel, id string, fresh bool) *restoreVolume {
	t.Helper()
	v := &restoreVolume{vol: t.TempDir(), rel: rel}
	data := filepath.Join(v.vol, rel)
	if !fresh {
		v.old = writeOldMember(t, data, 1)
	}
	v.earlier = writeOldMember(t, data+".before-restore-r0", 2)
	marker := `{"restoreId":"r0","state":"done","keptAt":"` + rel + `.before-restore-r0"}`
	if err := os.WriteFile(data+".restore-state.json", []byte(marker), 0o600); err != nil {
		t.Fatal(err)
	}
	writePartialRestore(t, data+".restore-"+id)
	return v
}

// checkRestored asserts the final state: the restored member in place (as etcdutl sees it, at the
// revision the result reports), exactly one kept copy byte-identical to the old data dir (none when
// deleted or fresh), the earlier restore's copy untouched, no scratch, probe or temp file, a done marker.
func (v *restoreVolume) checkRestored(t *testing.T, etcdutl, id string, deleted bool, res *RestoreStepResult, wantKeys int64) {
	t.Helper()
	data := filepath.Join(v.vol, v.rel)
	base := filepath.Base(v.rel)
	want := []string{base, base + ".before-restore-r0", base + ".restore-state.json"}
	wantKept := ""
	if v.old != nil && !deleted {
		wantKept = v.rel + ".before-restore-" + id
		want = append(want, base+".before-restore-"+id)
	}
	entries, err := os.ReadDir(filepath.Dir(data))
	if err != nil {
		t.Fatal(err)
	}
	got := sets.New[string]()
	for _, e := range entries {
		got.Insert(e.Name())
	}
	if !got.Equal(sets.New(want...)) {
		t.Errorf("beside the data dir: %q, want %q", sets.List(got), sets.List(sets.New(want...)))
	}
	if wantKept != "" {
		sameTree(t, "kept copy", filepath.Join(v.vol, wantKept), v.old)
	}
	sameTree(t, "earlier restore's kept copy", data+".before-restore-r0", v.earlier)
	st := etcdutlStatusOf(t, etcdutl, data)
	if res.RestoreID != id || res.DataDir != v.rel || res.KeptAt != wantKept || res.Revision != st.Revision || res.Keys != wantKeys {
		t.Errorf("result %+v, want restore %s of %s kept at %q, revision %d (etcdutl snapshot status), %d keys",
			*res, id, v.rel, wantKept, st.Revision, wantKeys)
	}
	var m restoreMarker
	if b, err := os.ReadFile(data + ".restore-state.json"); err != nil || json.Unmarshal(b, &m) != nil {
		t.Fatalf("marker: %v (%s)", err, b)
	}
	if m.RestoreID != id || m.State != stateDone || m.KeptAt != wantKept {
		t.Errorf("marker %+v, want restore %s done, kept at %q", m, id, wantKept)
	}
}

// writeMarkerFile writes a marker as the steps do.
func writeMarkerFile(t *testing.T, path string, m restoreMarker) {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// verifiedSnapshotFixture is snapshotFixture and what VerifySnapshot reads from it.
func verifiedSnapshotFixture(t *testing.T) (string, *VerifyResult) {
	t.Helper()
	snap := snapshotFixture(t)
	record, err := VerifySnapshot(snap)
	if err != nil {
		t.Fatal(err)
	}
	return snap, record
}
