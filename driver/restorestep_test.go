package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
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
