package rig

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Finish ends a command (tools/soak, tools/bench) that ran r, started under root with
// Options.NoSignalHandler and an InterruptContext ctx, and returns its exit status. It stops r (nil when
// Start failed), then: 0 after success and 128+signal after an interrupt, root removed either way;
// 1 after a failure, reported through say with ctx's cause (a -timeout) when err does not carry it,
// root removed but for the component logs (in logDir, the Options.LogDir, or else root/logs).
func Finish(ctx context.Context, r *Rig, root, logDir string, err error, say func(format string, args ...any)) int {
	sig, interrupted := InterruptedBy(ctx)
	if err != nil && !interrupted {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w (%v)", err, cause)
		}
		say("FAILED: %v", err)
	}
	if r != nil {
		r.Stop()
	}
	switch {
	case interrupted:
		os.RemoveAll(root)
		say("interrupted; the rig is stopped and its directory removed")
		return sig.ExitCode()
	case err != nil:
		if logDir == "" {
			keepOnly(root, "logs")
			logDir = filepath.Join(root, "logs")
		} else {
			os.RemoveAll(root)
		}
		say("component logs kept in %s", logDir)
		return 1
	}
	os.RemoveAll(root)
	return 0
}

// keepOnly removes everything in dir but the entry keep.
func keepOnly(dir, keep string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() != keep {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// LastLines is the end of a command's output for a failure message: its last n lines.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// CommandContext is the context of a command that runs a rig with Options.NoSignalHandler: canceled on
// the first SIGINT or SIGTERM as by InterruptContext (notify tells the user), and after timeout with
// the cause "-timeout D reached", which Finish adds to the failure. stop releases both.
func CommandContext(timeout time.Duration, notify func(os.Signal)) (ctx context.Context, stop func()) {
	ctx, stopSignals := InterruptContext(context.Background(), notify)
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("-timeout %s reached", timeout))
	return ctx, func() {
		cancel()
		stopSignals()
	}
}

// PrintMachine prints the CPUs Go sees and the load average at the start of a measurement, with
// note on how to read the figures: the machine may be shared.
func PrintMachine(w io.Writer, note string) {
	load, _ := os.ReadFile("/proc/loadavg")
	fields := strings.Fields(string(load))
	fmt.Fprintf(w, "machine: %d CPUs seen by Go, load average at start %s (a shared machine: %s)\n",
		runtime.NumCPU(), strings.Join(fields[:min(3, len(fields))], " "), note)
}
