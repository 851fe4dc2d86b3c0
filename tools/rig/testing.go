package rig

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// startTimeout bounds a rig start from a test, cold build of the upstream binaries included.
const startTimeout = 30 * time.Minute

// shared is the rig of a test binary whose TestMain calls Main; it starts with the first ForTest.
var shared struct {
	sync.Mutex
	inMain  bool
	started bool
	rig     *Rig
	err     error
	errLogs string
	logDir  string
}

// Main runs the tests of a package that uses ForTest, sharing one rig among them (started by the first
// test that needs it, so `go test -run` of unit tests alone starts nothing) and stopping it at the end:
//
//	func TestMain(m *testing.M) { rig.Main(m) }
//
// Tests sharing a rig must leave it as they found it: delete what they create (or use their own
// namespaces), restart etcd members they stop, and not rely on object counts they did not make.
// ForTest restarts the driver if a test left it stopped.
func Main(m *testing.M) {
	shared.Lock()
	shared.inMain = true
	shared.Unlock()
	code := m.Run()
	shared.Lock()
	r, logDir := shared.rig, shared.logDir
	shared.Unlock()
	if r != nil {
		r.Stop()
	}
	if logDir != "" {
		os.RemoveAll(logDir)
	}
	os.Exit(code)
}

// ForTest returns a running rig for t: the shared one under Main, else a new one stopped when t ends.
// When t fails, the component logs (the part written during t, plus complete copies under full/, and
// the pods' output under pods/) are copied to <repo>/.cache/e2e-logs/<test name>/ and the path is
// logged. The rig is skipped with -short.
func ForTest(t testing.TB) *Rig {
	t.Helper()
	if testing.Short() {
		t.Skip("rig: end-to-end test skipped with -short")
	}
	var r *Rig
	shared.Lock()
	inMain := shared.inMain
	shared.Unlock()
	if inMain {
		r = sharedRig(t)
	} else {
		r = ownRig(t, Options{})
	}
	watchLogs(t, r)
	return r
}

// ForTestWithOptions starts a rig of its own for t with opts (LogDir and Progress are set by it),
// stopped when t ends, with ForTest's saving of logs on failure. Use it for a rig unlike the shared
// one, such as Options.EtcdStatefulSet.
func ForTestWithOptions(t testing.TB, opts Options) *Rig {
	t.Helper()
	if testing.Short() {
		t.Skip("rig: end-to-end test skipped with -short")
	}
	r := ownRig(t, opts)
	watchLogs(t, r)
	return r
}

// watchLogs saves the logs written during t when t fails.
func watchLogs(t testing.TB, r *Rig) {
	marks := r.logMarks()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dir, err := r.saveLogs(t.Name(), marks)
		if err != nil {
			t.Logf("rig: saving component logs: %v", err)
			return
		}
		t.Logf("rig: component logs of %s saved in %s", t.Name(), dir)
	})
}

func sharedRig(t testing.TB) *Rig {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if !shared.started {
		shared.started = true
		dir, err := os.MkdirTemp("", "rig-logs-")
		if err != nil {
			t.Fatalf("rig: %v", err)
		}
		shared.logDir = dir
		ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
		defer cancel()
		shared.rig, shared.err = Start(ctx, Options{LogDir: dir, Progress: os.Stderr})
		if shared.err != nil {
			shared.errLogs = saveStartLogs(t.Name(), dir)
		}
	}
	if shared.err != nil {
		t.Fatalf("rig: start failed: %v\nrig: component logs saved in %s", shared.err, shared.errLogs)
	}
	r := shared.rig
	if r.driver != nil && !r.DriverRunning() {
		t.Logf("rig: a previous test left the driver stopped; starting it")
		if err := r.StartDriver(); err != nil {
			t.Fatalf("rig: %v", err)
		}
	}
	return r
}

func ownRig(t testing.TB, opts Options) *Rig {
	t.Helper()
	dir, err := os.MkdirTemp("", "rig-logs-")
	if err != nil {
		t.Fatalf("rig: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	opts.LogDir, opts.Progress = dir, os.Stderr
	r, err := Start(ctx, opts)
	if err != nil {
		saved := saveStartLogs(t.Name(), dir)
		os.RemoveAll(dir)
		t.Fatalf("rig: start failed: %v\nrig: component logs saved in %s", err, saved)
	}
	t.Cleanup(func() {
		r.Stop()
		os.RemoveAll(dir)
	})
	return r
}

// e2eLogDir is <repo>/.cache/e2e-logs/<test name>, emptied.
func e2eLogDir(testName string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, ".cache", "e2e-logs", filepath.FromSlash(testName))
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	return dir, os.MkdirAll(dir, 0o755)
}

func saveStartLogs(testName, logDir string) string {
	dir, err := e2eLogDir(testName)
	if err != nil {
		return fmt.Sprintf("(not saved: %v)", err)
	}
	if err := copyTree(logDir, dir, nil); err != nil {
		return fmt.Sprintf("(not saved: %v)", err)
	}
	return dir
}

// logMarks records the size of every log file, so that saveLogs can cut out what one test wrote.
func (r *Rig) logMarks() map[string]int64 {
	marks := map[string]int64{}
	entries, _ := os.ReadDir(r.logDir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			marks[e.Name()] = info.Size()
		}
	}
	return marks
}

// saveLogs copies the logs into <repo>/.cache/e2e-logs/<test name>/: <component>.log holds what was
// written since marks, full/ the complete files, pods/ the output of every pod the pod runner ran.
func (r *Rig) saveLogs(testName string, marks map[string]int64) (string, error) {
	dir, err := e2eLogDir(testName)
	if err != nil {
		return "", err
	}
	entries, err := os.ReadDir(r.logDir)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyFrom(filepath.Join(r.logDir, e.Name()), filepath.Join(dir, e.Name()), marks[e.Name()]); err != nil {
			return "", err
		}
	}
	if err := copyTree(r.logDir, filepath.Join(dir, "full"), nil); err != nil {
		return "", err
	}
	pods := filepath.Join(r.Root, "pods")
	if _, err := os.Stat(pods); err == nil {
		isLog := func(path string) bool { return strings.HasSuffix(path, ".log") }
		if err := copyTree(pods, filepath.Join(dir, "pods"), isLog); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// CopyFile copies the file src to dst.
func CopyFile(src, dst string) error { return copyFrom(src, dst, 0) }

// copyFrom copies src from byte offset to dst.
func copyFrom(src, dst string, offset int64) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if st, err := in.Stat(); err == nil && st.Size() < offset {
		offset = 0 // truncated or replaced since the mark
	}
	if _, err := in.Seek(offset, io.SeekStart); err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// copyTree copies the regular files under src (those keep accepts, or all) to dst.
func copyTree(src, dst string, keep func(path string) bool) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // pods come and go while we copy
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() || !d.Type().IsRegular() || (keep != nil && !keep(path)) {
			return nil
		}
		target := filepath.Join(dst, rel)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		return CopyFile(path, target)
	})
}
