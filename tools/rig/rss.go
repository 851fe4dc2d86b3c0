package rig

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/procfs"
)

// rssSampler records the peak resident memory of this process and all its descendants (control plane,
// snapshot components, driver, etcd members, pods) while the rig runs.
type rssSampler struct {
	mu  sync.Mutex
	max uint64
}

func (s *rssSampler) start(ctx context.Context) {
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

func (s *rssSampler) sample() uint64 {
	n := TreeRSS()
	s.mu.Lock()
	if n > s.max {
		s.max = n
	}
	s.mu.Unlock()
	return n
}

func (s *rssSampler) peak() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.max
}

// PeakRSS is the highest sum of resident memory (bytes) of this process and its descendants seen
// while the rig ran (sampled every second).
func (r *Rig) PeakRSS() uint64 {
	r.rss.sample()
	return r.rss.peak()
}

// TreeRSS returns the resident memory in bytes of this process plus all its descendants, from /proc.
func TreeRSS() uint64 {
	var total uint64
	for _, pid := range append(Descendants(os.Getpid()), os.Getpid()) {
		total += rssOf(pid)
	}
	return total
}

// Descendants lists the processes below pid (children, grandchildren, ...), from /proc.
func Descendants(pid int) []int {
	children := map[int][]int{}
	procs, _ := procfs.AllProcs()
	for _, p := range procs {
		if st, err := p.Stat(); err == nil && st.PPID > 0 {
			children[st.PPID] = append(children[st.PPID], p.PID)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

func rssOf(pid int) uint64 { return processStatus(pid).VmRSS }

// processStatus is /proc/<pid>/status, zero if the process is gone.
func processStatus(pid int) procfs.ProcStatus {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return procfs.ProcStatus{}
	}
	st, err := p.NewStatus()
	if err != nil {
		return procfs.ProcStatus{}
	}
	return st
}

func formatBytes(n uint64) string {
	return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
}

// ProcessRSS is the resident memory (VmRSS) of process pid in bytes, 0 if it is gone.
func ProcessRSS(pid int) uint64 { return rssOf(pid) }

// ProcessRSSAnon is the anonymous part of ProcessRSS (RssAnon): memory the process allocated, as
// opposed to pages of its binary and other files it has touched (RssFile), which grow as new code
// runs and which the kernel can drop.
func ProcessRSSAnon(pid int) uint64 { return processStatus(pid).RssAnon }

// ProcessPeakRSS is the peak resident memory (VmHWM) of process pid in bytes, 0 if it is gone.
func ProcessPeakRSS(pid int) uint64 { return processStatus(pid).VmHWM }

// OpenFDs counts the open file descriptors of process pid (the entries of /proc/<pid>/fd).
func OpenFDs(pid int) (int, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, err
	}
	return p.FileDescriptorsLen()
}

// ProcessArgs is the command line of process pid (argv), nil if it is gone.
func ProcessArgs(pid int) []string {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return nil
	}
	args, err := p.CmdLine()
	if err != nil {
		return nil
	}
	return args
}
