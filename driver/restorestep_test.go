package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/apimachinery/pkg/util/sets"
)

// etcdutlEnv names an etcdutl binary to run instead of building the pinned one: where tools/upstream
// or the go command are out of reach (a Bazel sandbox: `--test_env=ETCDUTL=/path/to/etcdutl`).
const etcdutlEnv = "ETCDUTL"

// testBumpRevision is the bump the restore command passes by default.
const testBumpRevision = "1000000000"

// etcdutlBinary returns $ETCDUTL, else the etcdutl that tools/upstream pins, built into a temp dir with
// the rig's flags (so the rig's build cache makes it a link). The test fails when neither works: the
// restore steps are only proven against the real tool.
func etcdutlBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(etcdutlEnv); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("$%s=%s: %v", etcdutlEnv, p, err)
		}
		return p
	}
	src, err := filepath.Abs(filepath.Join("..", "tools", "upstream"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(src, "go.mod")); err != nil {
		t.Fatalf("cannot build etcdutl: %v; run the test with `go test` in the repository, or set $%s to an etcdutl binary", err, etcdutlEnv)
	}
	out := filepath.Join(t.TempDir(), "etcdutl")
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w", "-o", out, "go.etcd.io/etcd/etcdutl/v3")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build etcdutl from %s: %v\n%s\n(set $%s to an etcdutl binary instead)", src, err, b, etcdutlEnv)
	}
	return out
}

// etcdutlRestore runs the restore Job's etcdutl command: the snapshot into dataDir as member name with
// peerURL, revision bumped and compacted as the restore command does by default.
func etcdutlRestore(etcdutl, snap, dataDir, name, peerURL string) error {
	cmd := exec.Command(etcdutl, "snapshot", "restore", snap, "--data-dir="+dataDir, "--name="+name,
		"--initial-cluster="+name+"="+peerURL, "--initial-cluster-token=restore-step-test",
		"--initial-advertise-peer-urls="+peerURL, "--bump-revision="+testBumpRevision, "--mark-compacted")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("etcdutl snapshot restore into %s: %v\n%s", dataDir, err, b)
	}
	return nil
}

// etcdutlStatus is what `etcdutl snapshot status -w json` reports about a bbolt file.
type etcdutlStatus struct {
	Revision int64 `json:"revision"`
}

// etcdutlStatusOf runs `etcdutl snapshot status` on a member's db.
func etcdutlStatusOf(t *testing.T, etcdutl, dataDir string) etcdutlStatus {
	t.Helper()
	out, err := exec.Command(etcdutl, "snapshot", "status", filepath.Join(dataDir, "member", "snap", "db"), "-w", "json").Output()
	if err != nil {
		t.Fatalf("etcdutl snapshot status of %s: %v", dataDir, err)
	}
	var st etcdutlStatus
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("etcdutl snapshot status output %q: %v", out, err)
	}
	return st
}

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
func runRestoreStepCLI(t *testing.T, args ...string) (code int, res RestoreStepResult, stderr string) {
	t.Helper()
	termLog := filepath.Join(t.TempDir(), "termination-log")
	var out, errOut bytes.Buffer
	code = RunRestoreStep(append(args, "-termination-log="+termLog), &out, &errOut)
	logged, _ := os.ReadFile(termLog)
	switch code {
	case 0:
		if err := json.Unmarshal(logged, &res); err != nil {
			t.Fatalf("restore-step %v: termination log %q is not a result: %v", args, logged, err)
		}
		if strings.TrimSpace(out.String()) != string(logged) {
			t.Errorf("restore-step %v: stdout %q differs from termination log %q", args, out.String(), logged)
		}
	default:
		lines := strings.Split(strings.TrimSpace(errOut.String()), "\n")
		if len(logged) == 0 || strings.Contains(string(logged), "\n") || lines[len(lines)-1] != string(logged) {
			t.Errorf("restore-step %v: exit %d, termination log %q, stderr %q: want the one-line reason in both", args, code, logged, errOut.String())
		}
		if out.Len() != 0 {
			t.Errorf("restore-step %v: exit %d printed a result %q", args, code, out.String())
		}
	}
	return code, res, errOut.String()
}

// stepArgs are the flags both steps take.
func stepArgs(step, vol, rel, id string, extra ...string) []string {
	return append([]string{step, "-volume=" + vol, "-data-dir=" + rel, "-restore-id=" + id}, extra...)
}

// TestRestoreStepRestoresRealSnapshot runs the restore pod's sequence on a volume with an old data dir,
// a partial restore of an earlier attempt and an earlier restore's kept copy: prepare, the real
// etcdutl, swap. The result matches etcdutl's and a real etcd's view of the restored member.
func TestRestoreStepRestoresRealSnapshot(t *testing.T) {
	etcdutl := etcdutlBinary(t)
	snap := snapshotFixture(t)
	vol := t.TempDir()
	const rel, id = "data", "r1"
	data := filepath.Join(vol, rel)
	oldTree := writeOldMember(t, data, 1)
	earlier := filepath.Join(vol, rel+".before-restore-r0")
	earlierTree := writeOldMember(t, earlier, 2)
	if err := os.WriteFile(filepath.Join(vol, rel+".restore-state.json"), []byte(`{"restoreId":"r0","state":"done","keptAt":"data.before-restore-r0"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	scratch := filepath.Join(vol, rel+".restore-"+id)
	writePartialRestore(t, scratch)

	code, res, stderr := runRestoreStepCLI(t, stepArgs("prepare", vol, rel, id)...)
	if code != 0 || res != (RestoreStepResult{RestoreID: id, DataDir: rel}) {
		t.Fatalf("prepare: exit %d result %+v stderr %q", code, res, stderr)
	}
	if _, err := os.Lstat(scratch); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("prepare left the partial restore %s: %v", scratch, err)
	}
	sameTree(t, "data dir after prepare", data, oldTree)

	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	peer := url.URL{Scheme: "https", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
	if err := etcdutlRestore(etcdutl, snap, scratch, "m0", peer.String()); err != nil {
		t.Fatal(err)
	}
	code, res, stderr = runRestoreStepCLI(t, stepArgs("swap", vol, rel, id)...)
	if code != 0 {
		t.Fatalf("swap: exit %d stderr %q", code, stderr)
	}
	kept := rel + ".before-restore-" + id
	if res.RestoreID != id || res.DataDir != rel || res.KeptAt != kept || res.AlreadyDone {
		t.Errorf("swap result %+v, want restore %s of %s kept at %s, not already done", res, id, rel, kept)
	}
	sameTree(t, "kept copy", filepath.Join(vol, kept), oldTree)
	sameTree(t, "earlier restore's kept copy", earlier, earlierTree)
	if _, err := os.Lstat(scratch); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("swap left %s: %v", scratch, err)
	}

	st := etcdutlStatusOf(t, etcdutl, data)
	if res.Revision != st.Revision {
		t.Errorf("swap reports revision %d, etcdutl snapshot status %d", res.Revision, st.Revision)
	}

	// etcd itself on the swapped data dir: the keys clients see and the revision they see it at.
	c := startTestClusterWith(t, 1, func(cfg *embed.Config) {
		cfg.Dir = data
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		cfg.InitialCluster = "m0=" + peer.String()
	})
	count, rev := c.liveKeys(t)
	if res.Keys != count || res.Revision != rev {
		t.Errorf("swap reports %d keys at revision %d; etcd on the restored dir serves %d at %d", res.Keys, res.Revision, count, rev)
	}
	got, err := c.cli.Get(context.Background(), "fixture/000007")
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "value-7" {
		t.Errorf("restored key fixture/000007: %v %v, want value-7", got, err)
	}
	if _, err := c.cli.Get(context.Background(), "fixture/", clientv3.WithPrefix(), clientv3.WithRev(rev-1)); err == nil {
		t.Error("a read below the bumped revision succeeded; etcdutl --mark-compacted should have compacted it")
	}
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

// TestRestoreStepFinishesAfterCrash interrupts the pod's steps after every durable change they make,
// then reruns the pod (as the Job's retry or a rerun of the restore command does) and once more after
// success: each run ends in the same state with exactly one kept copy of the old data.
func TestRestoreStepFinishesAfterCrash(t *testing.T) {
	etcdutl := etcdutlBinary(t)
	snap := snapshotFixture(t)
	record, err := VerifySnapshot(snap)
	if err != nil {
		t.Fatal(err)
	}
	const id = "r1"
	cases := []struct {
		name      string
		rel       string
		fresh     bool
		deleteOld bool
		// mustPass are crash points the uninterrupted run has to pass, so the test covers them.
		mustPass []string
	}{
		{name: "in place", rel: "data", mustPass: []string{"scratch removed", "probe created", "marker moving-old written", "old moved aside", "marker moving-restored written", "restored moved in", "marker done written"}},
		{name: "in place, delete old", rel: "data", deleteOld: true, mustPass: []string{"old moved aside", "restored moved in", "kept deleted"}},
		{name: "fresh volume, nested data dir", rel: "var/lib/etcd", fresh: true, mustPass: []string{"marker moving-old written", "restored moved in", "marker done written"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			all := &crashRecorder{at: -1}
			v := newRestoreVolume(t, tc.rel, id, tc.fresh)
			res, err := runPod(t, etcdutl, snap, v.vol, tc.rel, id, tc.deleteOld, all.hook)
			if err != nil {
				t.Fatalf("uninterrupted run: %v", err)
			}
			v.checkRestored(t, etcdutl, id, tc.deleteOld, res, record.Keys)
			for _, p := range tc.mustPass {
				if !slices.Contains(all.points, p) {
					t.Errorf("the run passed crash points %q, not %q", all.points, p)
				}
			}
			for i, point := range all.points {
				t.Run(fmt.Sprintf("%02d %s", i, point), func(t *testing.T) {
					v := newRestoreVolume(t, tc.rel, id, tc.fresh)
					if _, err := runPod(t, etcdutl, snap, v.vol, tc.rel, id, tc.deleteOld, (&crashRecorder{at: i}).hook); !errors.Is(err, errSimulatedCrash) {
						t.Fatalf("run crashing at %q: %v, want the simulated crash", point, err)
					}
					res, err := runPod(t, etcdutl, snap, v.vol, tc.rel, id, tc.deleteOld, nil)
					if err != nil {
						t.Fatalf("rerun after a crash at %q: %v", point, err)
					}
					v.checkRestored(t, etcdutl, id, tc.deleteOld, res, record.Keys)
					again, err := runPod(t, etcdutl, snap, v.vol, tc.rel, id, tc.deleteOld, nil)
					if err != nil || !again.AlreadyDone {
						t.Fatalf("run after success: %+v %v, want already done", again, err)
					}
					v.checkRestored(t, etcdutl, id, tc.deleteOld, again, record.Keys)
				})
			}
			// Reruns crash too: run k crashes at its own k-th point, so each starts from a state an
			// interrupted rerun left, until one gets through.
			t.Run("every rerun crashes one step later", func(t *testing.T) {
				v := newRestoreVolume(t, tc.rel, id, tc.fresh)
				for k := 0; ; k++ {
					res, err := runPod(t, etcdutl, snap, v.vol, tc.rel, id, tc.deleteOld, (&crashRecorder{at: k}).hook)
					if errors.Is(err, errSimulatedCrash) {
						continue
					}
					if err != nil {
						t.Fatalf("run %d: %v", k, err)
					}
					v.checkRestored(t, etcdutl, id, tc.deleteOld, res, record.Keys)
					t.Logf("%d runs crashed before one got through", k)
					if k < 3 {
						t.Errorf("only %d runs crashed", k)
					}
					return
				}
			})
		})
	}
}

// TestRestoreStepRejectsBadFlags checks each bad flag is a usage error naming it that changes nothing.
func TestRestoreStepRejectsBadFlags(t *testing.T) {
	vol := t.TempDir()
	writeOldMember(t, filepath.Join(vol, "data"), 1)
	writePartialRestore(t, filepath.Join(vol, "data.restore-r1"))
	file := filepath.Join(vol, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(t.TempDir(), filepath.Join(vol, "link")); err != nil {
		t.Fatal(err)
	}
	before := readTree(t, vol)
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"no step", nil, []string{"usage", "prepare|swap"}},
		{"unknown step", []string{"restore", "-volume=" + vol}, []string{"usage", "prepare|swap"}},
		{"no volume", []string{"prepare", "-data-dir=data", "-restore-id=r1"}, []string{"-volume is required"}},
		{"volume missing", stepArgs("swap", filepath.Join(vol, "nope"), "data", "r1"), []string{"-volume", "no such file"}},
		{"volume is a file", stepArgs("prepare", file, "data", "r1"), []string{"-volume", "not a directory"}},
		{"no data dir", []string{"prepare", "-volume=" + vol, "-restore-id=r1"}, []string{"-data-dir is required"}},
		{"absolute data dir", stepArgs("prepare", vol, "/data", "r1"), []string{"-data-dir", "not absolute"}},
		{"data dir is the volume", stepArgs("swap", vol, ".", "r1"), []string{"-data-dir", "volume itself"}},
		{"data dir outside", stepArgs("prepare", vol, "../data", "r1"), []string{"-data-dir", `no ".."`}},
		{"trailing slash", stepArgs("prepare", vol, "data/", "r1"), []string{"-data-dir", "not a clean path", `"data"`}},
		{"dot dot inside", stepArgs("swap", vol, "x/../data", "r1"), []string{"-data-dir", "not a clean path"}},
		{"parent is a symlink", stepArgs("swap", vol, "link/data", "r1"), []string{"-data-dir", "symlink"}},
		{"parent is a file", stepArgs("prepare", vol, "file/data", "r1"), []string{"-data-dir", "not a directory"}},
		{"no restore id", []string{"swap", "-volume=" + vol, "-data-dir=data"}, []string{"-restore-id is required"}},
		{"upper-case restore id", stepArgs("prepare", vol, "data", "R1"), []string{"-restore-id", "lower case"}},
		{"underscore in restore id", stepArgs("swap", vol, "data", "r_1"), []string{"-restore-id"}},
		{"restore id too long", stepArgs("prepare", vol, "data", strings.Repeat("r", 64)), []string{"-restore-id", "63"}},
		{"restore id starts with a dash", stepArgs("prepare", vol, "data", "-r1"), []string{"-restore-id"}},
		{"extra argument", append(stepArgs("swap", vol, "data", "r1"), "more"), []string{"unexpected argument", `"more"`}},
		{"-delete-old on prepare", stepArgs("prepare", vol, "data", "r1", "-delete-old"), []string{"-delete-old"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			termLog := filepath.Join(t.TempDir(), "termination-log")
			var stdout, stderr bytes.Buffer
			args := tc.args
			if len(args) > 0 {
				args = append([]string{args[0], "-termination-log=" + termLog}, args[1:]...)
			}
			if code := RunRestoreStep(args, &stdout, &stderr); code != 2 {
				t.Errorf("exit %d, want 2 (stderr %q)", code, stderr.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr %q does not contain %q", stderr.String(), w)
				}
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
			sameTree(t, "volume", vol, before)
		})
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
			code, res, stderr := runRestoreStepCLI(t, stepArgs("prepare", vol, tc.rel, id)...)
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
			code, _, stderr := runRestoreStepCLI(t, stepArgs("swap", vol, "data", id)...)
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
	snap := snapshotFixture(t)
	record, err := VerifySnapshot(snap)
	if err != nil {
		t.Fatal(err)
	}
	const id = "r1"
	v := newRestoreVolume(t, "data", id, false)
	first, err := runPod(t, etcdutl, snap, v.vol, v.rel, id, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	v.checkRestored(t, etcdutl, id, false, first, record.Keys)
	code, res, stderr := runRestoreStepCLI(t, stepArgs("swap", v.vol, v.rel, id, "-delete-old")...)
	if code != 0 || !res.AlreadyDone {
		t.Fatalf("swap -delete-old after the swap: exit %d result %+v stderr %q, want already done", code, res, stderr)
	}
	if !strings.Contains(stderr, "deleted the old data dir data.before-restore-r1") {
		t.Errorf("stderr %q does not report the deletion", stderr)
	}
	v.checkRestored(t, etcdutl, id, true, &res, record.Keys)
	// Without -delete-old a later run reports the copy as gone, not kept.
	code, res, stderr = runRestoreStepCLI(t, stepArgs("swap", v.vol, v.rel, id)...)
	if code != 0 || res.KeptAt != "" {
		t.Errorf("swap after the deletion: exit %d result %+v stderr %q, want nothing kept", code, res, stderr)
	}
}
