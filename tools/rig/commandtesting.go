package rig

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"
)

// CommandTestContext starts the end-to-end test of a command: it skips t under -short (the command
// starts a rig) and returns a context that ends after timeout or with t.
func CommandTestContext(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test of a command skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// BuildCommand builds the command whose test calls it (go test runs in the package's directory) into
// t's temporary directory and returns the binary.
func BuildCommand(t testing.TB, ctx context.Context) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), filepath.Base(wd))
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build ./tools/%s: %v\n%s", filepath.Base(wd), err, out)
	}
	return bin
}

// CommandUnder is bin run with args and TMPDIR=tmp, so that the directory of the rig it starts is found
// under tmp. The end of ctx sends SIGTERM, which lets it stop its rig, and kills it a minute later.
func CommandUnder(ctx context.Context, bin, tmp string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = time.Minute
	return cmd
}

// ProcessesMentioning lists the running processes whose command line contains s ("pid: command line"):
// every rig component names the rig's directory in its arguments.
func ProcessesMentioning(s string) []string {
	var found []string
	procs, _ := procfs.AllProcs()
	for _, p := range procs {
		args, err := p.CmdLine()
		if err != nil || !strings.Contains(strings.Join(args, "\x00"), s) {
			continue
		}
		found = append(found, strconv.Itoa(p.PID)+": "+strings.Join(args, " "))
	}
	return found
}

// RunCommand builds the command whose test calls it, runs it with args (CommandUnder, TMPDIR a new
// temporary directory) and returns its standard output and that directory. It fails t, showing the
// output and the end of the standard error, unless the command exits 0.
func RunCommand(t testing.TB, ctx context.Context, args ...string) (stdout, tmp string) {
	t.Helper()
	bin := BuildCommand(t, ctx)
	tmp = t.TempDir()
	cmd := CommandUnder(ctx, bin, tmp, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n--- stdout ---\n%s\n--- stderr (end) ---\n%s", filepath.Base(bin), strings.Join(args, " "), err, out.String(), LastLines(errOut.String(), 40))
	}
	return out.String(), tmp
}

// CheckRemoved fails t when tmp still holds an entry matching pattern (a rig directory such as
// "soak-*"): the command must remove what it wrote.
func CheckRemoved(t testing.TB, tmp, pattern string) {
	t.Helper()
	if left, _ := filepath.Glob(filepath.Join(tmp, pattern)); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}
