package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildSoak builds this command into a temporary directory.
func buildSoak(t *testing.T, ctx context.Context) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "soak")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build ./tools/soak: %v\n%s", err, out)
	}
	return bin
}

// soakCommand runs bin with args, its rig's directory under tmp.
func soakCommand(ctx context.Context, bin, tmp string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) } // let it stop its rig
	cmd.WaitDelay = time.Minute
	return cmd
}

// TestE2ESoakShort runs `soak -cycles 3 -every 1` on its own rig: it exits 0, prints a reading of the
// driver for every cycle and a RESULT line with no failed cycle and no leak, and removes its
// directory. No timing or memory figure is asserted.
func TestE2ESoakShort(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: end-to-end test skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	bin := buildSoak(t, ctx)
	tmp := t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd := soakCommand(ctx, bin, tmp, "-cycles", "3", "-every", "1")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("soak -cycles 3: %v\n--- stdout ---\n%s\n--- stderr (end) ---\n%s", err, stdout.String(), lastLines(stderr.String(), 40))
	}
	out := stdout.String()
	for i := range 4 {
		if want := "cycle " + strconv.Itoa(i) + "/3 after "; !strings.Contains(out, want) || !strings.Contains(out, " fds ") {
			t.Errorf("output lacks a driver reading %q...fds N\n%s", want, out)
		}
	}
	f, err := parseResult(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if f["cycles"] != 3 || f["failed"] != 0 || f["leaked"] != 0 {
		t.Errorf("RESULT %v; want cycles=3 failed=0 leaked=0", f)
	}
	for _, k := range []string{"rss_first_mib", "rss_last_mib", "anon_first_mib", "anon_last_mib", "fds_first", "fds_last"} {
		if f[k] <= 0 {
			t.Errorf("RESULT %s=%v; want a reading of the running driver", k, f[k])
		}
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "soak-*")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}

// TestE2ESoakInterrupted sends SIGINT to a long soak once its first cycle is reported: it exits with
// 130 (128+SIGINT), having stopped every process of its rig and removed the rig's directory.
func TestE2ESoakInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: end-to-end test skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	bin := buildSoak(t, ctx)
	tmp := t.TempDir()
	cmd := soakCommand(ctx, bin, tmp, "-cycles", "1000", "-every", "1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var seen []string
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		seen = append(seen, sc.Text())
		if strings.HasPrefix(sc.Text(), "cycle 1/1000 ") {
			break
		}
	}
	if len(seen) == 0 || !strings.HasPrefix(seen[len(seen)-1], "cycle 1/1000 ") {
		cmd.Wait()
		t.Fatalf("soak ended before its first cycle\n--- stdout ---\n%s\n--- stderr (end) ---\n%s", strings.Join(seen, "\n"), lastLines(stderr.String(), 40))
	}
	// The next cycle is under way now: its snapshot goes with the rig.
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pipe)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 128+int(syscall.SIGINT) {
		t.Fatalf("soak after SIGINT: %v; want exit status %d\n--- stderr (end) ---\n%s", err, 128+int(syscall.SIGINT), lastLines(stderr.String(), 40))
	}
	if !strings.Contains(stderr.String(), "interrupted; the rig is stopped") {
		t.Errorf("stderr does not say the rig was stopped:\n%s", lastLines(stderr.String(), 20))
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "soak-*")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if procs := processesUnder(tmp); len(procs) > 0 {
		t.Errorf("processes of the interrupted rig still running: %s", strings.Join(procs, "; "))
	}
}

// processesUnder lists the processes whose command line names a path under dir.
func processesUnder(dir string) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(dir)) {
			continue
		}
		out = append(out, e.Name()+": "+strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " "))
	}
	return out
}

// parseResult reads the fields of the RESULT line of the output.
func parseResult(out string) (map[string]float64, error) {
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(line, "RESULT ")
		if !ok {
			continue
		}
		f := map[string]float64{}
		for _, kv := range strings.Fields(rest) {
			k, v, ok := strings.Cut(kv, "=")
			x, err := strconv.ParseFloat(v, 64)
			if !ok || err != nil {
				return nil, errors.New("RESULT field " + strconv.Quote(kv) + " is not name=number")
			}
			f[k] = x
		}
		return f, nil
	}
	return nil, errors.New("no RESULT line in the output")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
