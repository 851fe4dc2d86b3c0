package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// The playground's changes after the snapshot, which the restore must undo: every fourth sample key
// overwritten, every fourth (offset by two) deleted, and new keys written.
const (
	overwrittenValue = "changed-after-the-snapshot"
	laterKeyPrefix   = "/playground-later/"
	laterKeys        = 50
)

// keyClass is what the playground did to a sample key after the snapshot.
type keyClass int

const (
	untouched keyClass = iota
	overwritten
	deleted
)

func classOf(i int) keyClass {
	switch i % 4 {
	case 0:
		return overwritten
	case 2:
		return deleted
	}
	return untouched
}

// restoreResult is what the playground's restore showed.
type restoreResult struct {
	table   string // the restore command's stdout
	took    time.Duration
	counts  map[keyClass][2]int // class -> {back at the snapshot value, total}
	later   [2]int              // keys written after the snapshot: {gone, total}
	samples map[keyClass]string // one example row per class
}

// changeAndRestore changes the cluster after the snapshot, restores the snapshot in place with the one
// command of README.md (the rig's build of this driver, with -scale) and reads every sample key back.
func changeAndRestore(ctx context.Context, r *rig.Rig, res *result, o options) (*restoreResult, error) {
	cli, err := r.EtcdClient()
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	changed, removed := 0, 0
	for i := 0; i < o.keys; i++ {
		k, _ := rig.SampleKV(sampleKeyPrefix, i)
		switch classOf(i) {
		case overwritten:
			_, err = cli.Put(ctx, k, overwrittenValue)
			changed++
		case deleted:
			_, err = cli.Delete(ctx, k)
			removed++
		}
		if err != nil {
			return nil, fmt.Errorf("changing sample key %s: %w", k, err)
		}
	}
	for i := 0; i < laterKeys; i++ {
		if _, err := cli.Put(ctx, fmt.Sprintf("%s%03d", laterKeyPrefix, i), "written after the snapshot"); err != nil {
			return nil, err
		}
	}
	cli.Close()
	say("after the snapshot: overwrote %d sample keys, deleted %d, wrote %d new keys under %s", changed, removed, laterKeys, laterKeyPrefix)

	args := []string{"restore", "-kubeconfig=" + r.Kubeconfig, "-group-snapshot=" + r.Namespace + "/" + res.name, "-scale",
		"-etcd-image=" + r.EtcdImage, "-driver-image=" + r.DriverImage}
	say("restoring: etcd-snapshot-driver %s", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, filepath.Join(r.DriverBinDir, rig.DriverBinary), args...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		fmt.Fprintf(os.Stderr, "playground: | %s\n", sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		return &restoreResult{table: stdout.String()}, fmt.Errorf("the restore command failed: %w", err)
	}
	out := &restoreResult{table: stdout.String(), took: time.Since(begin), counts: map[keyClass][2]int{}, samples: map[keyClass]string{}}

	cli, err = r.EtcdClient()
	if err != nil {
		return out, err
	}
	defer cli.Close()
	got, err := cli.Get(ctx, sampleKeyPrefix, clientv3.WithPrefix())
	if err != nil {
		return out, err
	}
	values := map[string]string{}
	for _, kv := range got.Kvs {
		values[string(kv.Key)] = string(kv.Value)
	}
	for i := 0; i < o.keys; i++ {
		k, want := rig.SampleKV(sampleKeyPrefix, i)
		c := classOf(i)
		n := out.counts[c]
		n[1]++
		if values[k] == want {
			n[0]++
		}
		out.counts[c] = n
		if _, ok := out.samples[c]; !ok {
			out.samples[c] = fmt.Sprintf("%s = %q", k, values[k])
		}
	}
	later, err := cli.Get(ctx, laterKeyPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return out, err
	}
	out.later = [2]int{laterKeys - int(later.Count), laterKeys}
	return out, nil
}

// verify says whether every sample key is back at its snapshot value and the later keys are gone.
func (rr *restoreResult) verify() error {
	var problems []string
	for _, c := range []keyClass{untouched, overwritten, deleted} {
		if n := rr.counts[c]; n[0] != n[1] {
			problems = append(problems, fmt.Sprintf("%d of %d %s keys are not back at their snapshot value", n[1]-n[0], n[1], c))
		}
	}
	if rr.later[0] != rr.later[1] {
		problems = append(problems, fmt.Sprintf("%d of %d keys written after the snapshot are still there", rr.later[1]-rr.later[0], rr.later[1]))
	}
	if len(problems) > 0 {
		return fmt.Errorf("restore not verified: %s", strings.Join(problems, "; "))
	}
	return nil
}

func (c keyClass) String() string {
	switch c {
	case overwritten:
		return "overwritten"
	case deleted:
		return "deleted"
	}
	return "untouched"
}

// printRestore prints the restore command's table and the key-by-key comparison.
func printRestore(w io.Writer, rr *restoreResult) {
	fmt.Fprintln(w)
	fmt.Fprint(w, rr.table)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "SAMPLE KEYS\tAFTER THE SNAPSHOT\tBACK AT SNAPSHOT VALUE\tEXAMPLE AFTER RESTORE")
	for _, c := range []keyClass{untouched, overwritten, deleted} {
		n := rr.counts[c]
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%s\n", c, describeChange(c), n[0], n[1], rr.samples[c])
	}
	fmt.Fprintf(tw, "%s*\twritten after the snapshot\tgone: %d/%d\t\n", laterKeyPrefix, rr.later[0], rr.later[1])
	tw.Flush()
	fmt.Fprintf(w, "\nrestored in %s\n", rr.took.Round(100*time.Millisecond))
}

func describeChange(c keyClass) string {
	switch c {
	case overwritten:
		return "set to " + overwrittenValue
	case deleted:
		return "deleted"
	}
	return "left alone"
}
