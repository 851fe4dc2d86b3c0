package driver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

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

	code, res, stderr := runRestoreStepCLI(t, stepOptions("prepare", vol, rel, id))
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
	code, res, stderr = runRestoreStepCLI(t, stepOptions("swap", vol, rel, id))
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

// TestRestoreStepFinishesAfterCrash interrupts the pod's steps after every durable change they make,
// then reruns the pod (as the Job's retry or a rerun of the restore command does) and once more after
// success: each run ends in the same state with exactly one kept copy of the old data.
func TestRestoreStepFinishesAfterCrash(t *testing.T) {
	etcdutl := etcdutlBinary(t)
	snap, record := verifiedSnapshotFixture(t)
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

// TestRestoreStepRejectsBadFlags checks each bad flag value is a usage error naming the flag that
// changes nothing; main_test.go's TestRestoreStepFlagErrors checks what the flag parsing rejects.
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
		opts RestoreStepOptions
		want []string
	}{
		{"unknown step", RestoreStepOptions{Step: "restore", Volume: vol, DataDir: "data", RestoreID: "r1"}, []string{"unknown step", `"restore"`}},
		{"no volume", RestoreStepOptions{Step: "prepare", DataDir: "data", RestoreID: "r1"}, []string{"-volume is required"}},
		{"volume missing", stepOptions("swap", filepath.Join(vol, "nope"), "data", "r1"), []string{"-volume", "no such file"}},
		{"volume is a file", stepOptions("prepare", file, "data", "r1"), []string{"-volume", "not a directory"}},
		{"no data dir", RestoreStepOptions{Step: "prepare", Volume: vol, RestoreID: "r1"}, []string{"-data-dir is required"}},
		{"absolute data dir", stepOptions("prepare", vol, "/data", "r1"), []string{"-data-dir", "not absolute"}},
		{"data dir is the volume", stepOptions("swap", vol, ".", "r1"), []string{"-data-dir", "volume itself"}},
		{"data dir outside", stepOptions("prepare", vol, "../data", "r1"), []string{"-data-dir", `no ".."`}},
		{"trailing slash", stepOptions("prepare", vol, "data/", "r1"), []string{"-data-dir", "not a clean path", `"data"`}},
		{"dot dot inside", stepOptions("swap", vol, "x/../data", "r1"), []string{"-data-dir", "not a clean path"}},
		{"parent is a symlink", stepOptions("swap", vol, "link/data", "r1"), []string{"-data-dir", "symlink"}},
		{"parent is a file", stepOptions("prepare", vol, "file/data", "r1"), []string{"-data-dir", "not a directory"}},
		{"no restore id", RestoreStepOptions{Step: "swap", Volume: vol, DataDir: "data"}, []string{"-restore-id is required"}},
		{"upper-case restore id", stepOptions("prepare", vol, "data", "R1"), []string{"-restore-id", "lower case"}},
		{"underscore in restore id", stepOptions("swap", vol, "data", "r_1"), []string{"-restore-id"}},
		{"restore id too long", stepOptions("prepare", vol, "data", strings.Repeat("r", 64)), []string{"-restore-id", "63"}},
		{"restore id starts with a dash", stepOptions("prepare", vol, "data", "-r1"), []string{"-restore-id"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			termLog := filepath.Join(t.TempDir(), "termination-log")
			var stdout, stderr bytes.Buffer
			o := tc.opts
			o.TerminationLog = termLog
			if code := RunRestoreStep(o, &stdout, &stderr); code != 2 {
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
