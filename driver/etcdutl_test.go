package driver

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
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
