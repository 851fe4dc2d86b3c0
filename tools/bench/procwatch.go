package main

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// verifyRSSPoll is how often the pod runner's processes are looked at for a running verify container.
const verifyRSSPoll = 20 * time.Millisecond

// watchVerifyRSS samples, until ctx ends, the peak resident memory (VmHWM) of every process below this
// one that runs the driver binary's verify subcommand: the pod runner runs the Job's verify container
// as such a process. The returned function gives the highest VmHWM and the highest RssAnon seen (0
// if none was caught): VmHWM counts the pages of the mmapped snapshot file, RssAnon does not.
func watchVerifyRSS(ctx context.Context) func() (hwm, anon int64) {
	var (
		mu         sync.Mutex
		peak, anon int64
		done       = make(chan struct{})
	)
	go func() {
		defer close(done)
		t := time.NewTicker(verifyRSSPoll)
		defer t.Stop()
		for {
			for _, pid := range rig.Descendants(os.Getpid()) {
				if !isVerify(pid) {
					continue
				}
				hwm, a := int64(rig.ProcessPeakRSS(pid)), int64(rig.ProcessRSSAnon(pid))
				mu.Lock()
				peak, anon = max(peak, hwm), max(anon, a)
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() (int64, int64) {
		<-done
		mu.Lock()
		defer mu.Unlock()
		return peak, anon
	}
}

func isVerify(pid int) bool {
	argv := rig.ProcessArgs(pid)
	return len(argv) > 1 && filepath.Base(argv[0]) == rig.DriverBinary && argv[1] == "verify"
}
