package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// rawRestoreBump is the restore command's default --bump-revision, used for the raw restores too so
// that both do the same work.
const rawRestoreBump = "1000000000"

// compareRestore restores the snapshot of pair p in place with the restore command of README.md
// (-scale) and compares it with raw `etcdutl snapshot restore` of the same file for every member at
// once, as the command's Jobs run.
func (b *bench) compareRestore(ctx context.Context, p *pairResult) (*restoreResult, error) {
	res := &restoreResult{size: b.o.size, memberCount: b.s.Members()}

	say("restore: raw etcdutl snapshot restore of %s for %d members at once", p.drv.file, b.s.Members())
	rawDir := filepath.Join(b.dir, "raw-restore")
	b.scratch = append(b.scratch, rawDir)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		times []float64
		errs  []error
	)
	begin := time.Now()
	for i := range b.s.Members() {
		wg.Go(func() {
			t, err := runTool(ctx, filepath.Join(b.r.BinDir, "etcdutl"), "snapshot", "restore", p.drv.file,
				"--data-dir="+filepath.Join(rawDir, b.s.MemberName(i)),
				"--name="+b.s.MemberName(i),
				"--initial-cluster="+b.s.InitialCluster(),
				"--initial-cluster-token=bench-raw-restore",
				"--initial-advertise-peer-urls="+b.s.PeerURLs()[i],
				"--bump-revision="+rawRestoreBump, "--mark-compacted")
			mu.Lock()
			defer mu.Unlock()
			times = append(times, t.took.Seconds())
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	res.rawS = time.Since(begin).Seconds()
	res.rawMemberS = median(times)
	os.RemoveAll(rawDir)
	if len(errs) > 0 {
		return nil, errs[0]
	}

	args := []string{"restore", "-kubeconfig=" + b.r.Kubeconfig, "-group-snapshot=" + b.s.Namespace() + "/" + p.drv.name, "-scale",
		"-etcd-image=" + b.r.EtcdImage, "-driver-image=" + b.r.DriverImage}
	say("restore: etcd-snapshot-driver %s", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, filepath.Join(b.r.DriverBinDir, rig.DriverBinary), args...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	begin = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		fmt.Fprintf(os.Stderr, "bench: | %s\n", sc.Text())
	}
	err = cmd.Wait()
	res.driverS = time.Since(begin).Seconds()
	fmt.Print("\n" + stdout.String())
	b.removeKeptData(ctx)
	if err != nil {
		return nil, fmt.Errorf("the restore command failed: %w", err)
	}
	perMember, err := memberTimes(stdout.String())
	if err != nil {
		return nil, err
	}
	if len(perMember) != b.s.Members() {
		return nil, fmt.Errorf("the restore table has %d member rows, want %d:\n%s", len(perMember), b.s.Members(), stdout.String())
	}
	res.perMemberS = median(perMember)
	fmt.Printf("raw etcdutl snapshot restore, %d members at once: %.2fs (per member median %.2fs); restore command: %.2fs (per-member Job median %.2fs)\n",
		res.memberCount, res.rawS, res.rawMemberS, res.driverS, res.perMemberS)
	return res, nil
}

// memberTimes reads the TIME column of the restore command's table (MEMBER PVC REVISION KEYS OLD DATA
// KEPT AT TIME), in seconds.
func memberTimes(table string) ([]float64, error) {
	var out []float64
	inTable := false
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) > 0 && f[0] == "MEMBER":
			inTable = true
		case !inTable:
		case len(f) < 6 || strings.HasSuffix(f[0], ":") || f[0] == "restore":
			inTable = false // the check's and the total's lines follow the rows
		default:
			d, err := time.ParseDuration(f[len(f)-1])
			if err != nil {
				return nil, fmt.Errorf("restore table row %q: TIME: %w", line, err)
			}
			out = append(out, d.Seconds())
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no member rows in the restore command's output:\n%s", table)
	}
	return out, nil
}

// removeKeptData deletes the old data dirs the restore keeps beside each member's data dir.
func (b *bench) removeKeptData(ctx context.Context) {
	for i := range b.s.Members() {
		dir, err := b.s.HostVolumeDir(ctx, i)
		if err != nil {
			say("restore clean-up: %v", err)
			continue
		}
		kept, _ := filepath.Glob(filepath.Join(dir, b.s.DataDirInVolume()+".before-restore-*"))
		for _, k := range kept {
			if err := os.RemoveAll(k); err != nil {
				say("restore clean-up: %v", err)
			}
		}
	}
}
