//go:build unix

package driver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// unwritableChildEnv holds the JSON options when the test binary runs as the restore-step child.
const unwritableChildEnv = "ETCD_SNAPSHOT_DRIVER_RESTORE_STEP_ARGS"

// unprivilegedID is the uid and gid (nobody) the child runs as when the test runs as root.
const unprivilegedID = 65534

// TestRestoreStepPrepareReportsUnwritableVolume runs prepare as a user who cannot write the volume, as a
// restore pod whose runAsUser does not own the PVC would: it must fail before etcdutl runs, saying so.
// As root, a child process runs as nobody; otherwise the volume is made read-only.
func TestRestoreStepPrepareReportsUnwritableVolume(t *testing.T) {
	if args := os.Getenv(unwritableChildEnv); args != "" {
		var o RestoreStepOptions
		if err := json.Unmarshal([]byte(args), &o); err != nil {
			os.Exit(3)
		}
		os.Exit(RunRestoreStep(o, io.Discard, io.Discard))
	}
	// Not t.TempDir: the child's user must reach the volume and the test binary through it.
	dir, err := os.MkdirTemp("", "restore-step-unwritable-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(dir, "vol"), 0o755); os.RemoveAll(dir) })
	vol, logDir := filepath.Join(dir, "vol"), filepath.Join(dir, "log")
	for _, d := range []string{vol, logDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(logDir, 0o777); err != nil {
		t.Fatal(err)
	}
	writeOldMember(t, filepath.Join(vol, "data"), 1)
	before := readTree(t, vol)
	termLog := filepath.Join(logDir, "termination-log")
	opts := stepOptions("prepare", vol, "data", "r1")
	opts.TerminationLog = termLog

	uid, code := os.Getuid(), 0
	if uid == 0 {
		uid = unprivilegedID
		bin := filepath.Join(dir, "driver.test")
		if err := os.Link(os.Args[0], bin); err != nil {
			copyFile(t, os.Args[0], bin)
		}
		enc, _ := json.Marshal(opts)
		cmd := exec.Command(bin, "-test.run=^TestRestoreStepPrepareReportsUnwritableVolume$", "-test.count=1")
		cmd.Env = append(os.Environ(), unwritableChildEnv+"="+string(enc))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: unprivilegedID, Gid: unprivilegedID}}
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("restore-step child as uid %d: %v, want an exit code; output:\n%s", unprivilegedID, err, out)
		}
		code = exit.ExitCode()
	} else {
		if err := os.Chmod(vol, 0o555); err != nil {
			t.Fatal(err)
		}
		code = RunRestoreStep(opts, io.Discard, io.Discard)
		os.Chmod(vol, 0o755)
	}
	logged, _ := os.ReadFile(termLog)
	t.Logf("prepare as uid %d: exit %d: %s", uid, code, logged)
	want := fmt.Sprintf("volume not writable by uid %d", uid)
	if code != 1 || !strings.Contains(string(logged), want) || !strings.Contains(string(logged), "permission denied") {
		t.Errorf("exit %d, termination log %q; want 1 and %q with the OS error", code, logged, want)
	}
	sameTree(t, "volume", vol, before)
}

// copyFile copies an executable for a user who cannot read where it is.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}
