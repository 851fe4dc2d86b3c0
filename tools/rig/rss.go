package rig

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
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
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp := parentOf(p); pp > 0 {
			children[pp] = append(children[pp], p)
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

func parentOf(pid int) int {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// The command name may hold spaces and parentheses; fields resume after the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 2 {
		return 0
	}
	pp, _ := strconv.Atoi(fields[1])
	return pp
}

func rssOf(pid int) uint64 { return statusBytes(pid, "VmRSS:") }

// statusBytes reads a "Field:  N kB" line of /proc/<pid>/status in bytes, 0 if there is none.
func statusBytes(pid int, field string) uint64 {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), field); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func formatBytes(n uint64) string {
	return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
}

// ProcessRSS is the resident memory (VmRSS) of process pid in bytes, 0 if it is gone.
func ProcessRSS(pid int) uint64 { return rssOf(pid) }

// ProcessRSSAnon is the anonymous part of ProcessRSS (RssAnon): memory the process allocated, as
// opposed to pages of its binary and other files it has touched (RssFile), which grow as new code
// runs and which the kernel can drop.
func ProcessRSSAnon(pid int) uint64 { return statusBytes(pid, "RssAnon:") }

// ProcessPeakRSS is the peak resident memory (VmHWM) of process pid in bytes, 0 if it is gone.
func ProcessPeakRSS(pid int) uint64 { return statusBytes(pid, "VmHWM:") }

// OpenFDs counts the open file descriptors of process pid (the entries of /proc/<pid>/fd).
func OpenFDs(pid int) (int, error) {
	entries, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
	if err != nil {
		return 0, err
	}
	return len(entries), nil
}
