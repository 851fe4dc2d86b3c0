package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// tlsFiles are the client credentials of the cluster under test, written for etcdctl.
type tlsFiles struct{ ca, cert, key string }

func writeTLSFiles(dir string, ca, cert, key []byte) (tlsFiles, error) {
	f := tlsFiles{ca: filepath.Join(dir, "ca.crt"), cert: filepath.Join(dir, "tls.crt"), key: filepath.Join(dir, "tls.key")}
	for path, data := range map[string][]byte{f.ca: ca, f.cert: cert, f.key: key} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return f, err
		}
	}
	return f, nil
}

// timed is one run of a tool: its wall time and peak resident memory.
type timed struct {
	took    time.Duration
	maxRSS  int64 // bytes, VmHWM sampled every toolRSSPoll (0 if it ended before the first sample); counts mmapped file pages
	maxAnon int64 // bytes, the highest RssAnon sampled: the memory that is not the mmapped snapshot file
	stdout  []byte
}

// toolRSSPoll is how often a tool's VmHWM is read. The kernel's rusage cannot serve: a child forked
// with CLONE_VM reports the parent's high-water mark until it execs.
const toolRSSPoll = 10 * time.Millisecond

// runTool runs binary with args and returns its time, peak RSS and stdout; a failure quotes stderr.
func runTool(ctx context.Context, binary string, args ...string) (timed, error) {
	cmd := exec.CommandContext(ctx, binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		return timed{}, err
	}
	exited := make(chan struct{})
	peak := make(chan [2]int64, 1)
	go func() {
		var hwm, anon int64
		t := time.NewTicker(toolRSSPoll)
		defer t.Stop()
		for {
			hwm = max(hwm, int64(rig.ProcessPeakRSS(cmd.Process.Pid)))
			anon = max(anon, int64(rig.ProcessRSSAnon(cmd.Process.Pid)))
			select {
			case <-exited:
				peak <- [2]int64{hwm, anon}
				return
			case <-t.C:
			}
		}
	}()
	err := cmd.Wait()
	took := time.Since(begin)
	close(exited)
	p := <-peak
	t := timed{took: took, maxRSS: p[0], maxAnon: p[1], stdout: stdout.Bytes()}
	if err != nil {
		return t, fmt.Errorf("%s %v: %w\n%s", filepath.Base(binary), args, err, rig.LastLines(stderr.String(), 10))
	}
	return t, nil
}

// rawResult is one raw pair half: etcdctl snapshot save, then etcdutl snapshot status of that file.
type rawResult struct {
	save, status timed
	size         int64
	revision     int64
	totalKeys    int64
}

// rawSnapshot is what a user does by hand: save from endpoint into file, then check it.
func rawSnapshot(ctx context.Context, binDir, endpoint string, tls tlsFiles, file string) (*rawResult, error) {
	os.Remove(file)
	save, err := runTool(ctx, filepath.Join(binDir, "etcdctl"), "--endpoints="+endpoint,
		"--cacert="+tls.ca, "--cert="+tls.cert, "--key="+tls.key, "--command-timeout=30m", "snapshot", "save", file)
	if err != nil {
		return nil, err
	}
	status, st, err := snapshotStatus(ctx, binDir, file)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	return &rawResult{save: save, status: status, size: fi.Size(), revision: st.Revision, totalKeys: st.TotalKey}, nil
}

// snapshotStatus runs `etcdutl snapshot status -w json` on file.
func snapshotStatus(ctx context.Context, binDir, file string) (timed, *rig.SnapshotStatus, error) {
	t, err := runTool(ctx, filepath.Join(binDir, "etcdutl"), "snapshot", "status", file, "-w", "json")
	if err != nil {
		return t, nil, err
	}
	st, err := rig.ParseSnapshotStatus(file, t.stdout)
	return t, st, err
}
