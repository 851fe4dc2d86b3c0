package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// TestE2ESoakShort runs `soak -cycles 3 -every 1` on its own rig: it exits 0, prints a reading of the
// driver for every cycle and a RESULT line with no failed cycle and no leak, and removes its
// directory. No timing or memory figure is asserted.
func TestE2ESoakShort(t *testing.T) {
	ctx := rig.CommandTestContext(t, 20*time.Minute)
	out, tmp := rig.RunCommand(t, ctx, "-cycles", "3", "-every", "1")
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
	rig.CheckRemoved(t, tmp, "soak-*")
}

// TestE2ESoakInterrupted sends SIGINT to a long soak once its first cycle is reported: it exits with
// 130 (128+SIGINT), having stopped every process of its rig and removed the rig's directory.
func TestE2ESoakInterrupted(t *testing.T) {
	ctx := rig.CommandTestContext(t, 20*time.Minute)
	bin := rig.BuildCommand(t, ctx)
	tmp := t.TempDir()
	cmd := rig.CommandUnder(ctx, bin, tmp, "-cycles", "1000", "-every", "1")
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
		t.Fatalf("soak ended before its first cycle\n--- stdout ---\n%s\n--- stderr (end) ---\n%s", strings.Join(seen, "\n"), rig.LastLines(stderr.String(), 40))
	}
	// The next cycle is under way now: its snapshot goes with the rig.
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pipe)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 128+int(syscall.SIGINT) {
		t.Fatalf("soak after SIGINT: %v; want exit status %d\n--- stderr (end) ---\n%s", err, 128+int(syscall.SIGINT), rig.LastLines(stderr.String(), 40))
	}
	if !strings.Contains(stderr.String(), "interrupted; the rig is stopped") {
		t.Errorf("stderr does not say the rig was stopped:\n%s", rig.LastLines(stderr.String(), 20))
	}
	rig.CheckRemoved(t, tmp, "soak-*")
	if procs := rig.ProcessesMentioning(tmp); len(procs) > 0 {
		t.Errorf("processes of the interrupted rig still running: %s", strings.Join(procs, "; "))
	}
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
