package rig

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
