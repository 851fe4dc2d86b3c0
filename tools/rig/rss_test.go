package rig

import (
	"os"
	"os/exec"
	"runtime"
	"testing"
)

// TestProcessMemory reads this process's memory after it touched 64 MiB: the anonymous part holds
// them, the peak read last is at least the resident memory read before, and a process that is gone
// reads 0.
func TestProcessMemory(t *testing.T) {
	const size = 64 << 20
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = 1
	}
	pid := os.Getpid()
	anon := ProcessRSSAnon(pid)
	rss := ProcessRSS(pid)
	peak := ProcessPeakRSS(pid) // VmHWM only grows: at least any RSS read before
	runtime.KeepAlive(buf)
	if peak < size {
		t.Errorf("ProcessPeakRSS = %d after touching %d bytes", peak, size)
	}
	if anon < size || rss < size || peak < rss {
		t.Errorf("anonymous %d, RSS %d, peak %d: want anonymous and RSS at least %d, peak at least RSS", anon, rss, peak, size)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatalf("true: %v", err)
	}
	if got := ProcessPeakRSS(cmd.Process.Pid); got != 0 {
		t.Errorf("ProcessPeakRSS of exited process %d = %d, want 0", cmd.Process.Pid, got)
	}
}
