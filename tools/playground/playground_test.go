package main

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// TestE2EPlayground builds the playground and runs it with -once -restore, as a newcomer would, on its
// own rig: it must exit 0 after a table showing a readyToUse VolumeGroupSnapshot holding the keys it
// wrote, then the restore's table with every sample key back, and leave no process or directory behind.
func TestE2EPlayground(t *testing.T) {
	// A cold build of the upstream binaries takes about 8 minutes on 2 cores, more when shared.
	ctx := rig.CommandTestContext(t, 25*time.Minute)

	bin := rig.BuildCommand(t, ctx)

	// The playground's rig directory goes under tmp, so that leftovers can be found.
	tmp := t.TempDir()
	const keys = 1500 // not the default, so -keys is exercised
	deadline, _ := ctx.Deadline()
	cmd := rig.CommandUnder(ctx, bin, tmp, "-once", "-restore", "-keys", strconv.Itoa(keys),
		"-timeout", (time.Until(deadline) - time.Minute).Round(time.Second).String())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	begin := time.Now()
	err := cmd.Run()
	t.Logf("playground -once -restore took %s", time.Since(begin).Round(time.Second))
	if err != nil {
		t.Fatalf("playground -once -restore: %v\n--- last lines of its output ---\n%s", err, rig.LastLines(out.String(), 60))
	}

	row, err := tableRow(out.String())
	if err != nil {
		t.Fatalf("%v\n--- output ---\n%s", err, out.String())
	}
	if row["VOLUMEGROUPSNAPSHOT"] != "playground" || row["READYTOUSE"] != "true" || !strings.HasPrefix(row["MEMBER"], "main-") {
		t.Errorf("table row = %v, want VolumeGroupSnapshot playground, readyToUse true, a member main-N", row)
	}
	// The snapshot must be at least as new as the last sample write, whose revision the output states.
	written := regexp.MustCompile(`written at revision (\d+)`).FindStringSubmatch(out.String())
	if written == nil {
		t.Errorf("the output does not state the revision of the sample keys (\"written at revision N\")")
	} else if rev, err := strconv.ParseInt(row["REVISION"], 10, 64); err != nil || rev < mustInt(t, written[1]) {
		t.Errorf("revision = %q, want a number >= %s, the revision of the sample keys", row["REVISION"], written[1])
	}
	if n, err := strconv.Atoi(row["KEYS"]); err != nil || n < keys {
		t.Errorf("key count = %q, want at least the %d keys written", row["KEYS"], keys)
	}

	// keys is a multiple of 4: a quarter overwritten, a quarter deleted, half untouched (restore.go).
	for _, want := range []string{
		fmt.Sprintf("untouched             left alone                          %d/%d", keys/2, keys/2),
		fmt.Sprintf("overwritten           set to changed-after-the-snapshot   %d/%d", keys/4, keys/4),
		fmt.Sprintf("deleted               deleted                             %d/%d", keys/4, keys/4),
		fmt.Sprintf("written after the snapshot          gone: %d/%d", laterKeys, laterKeys),
		"OLD DATA KEPT AT", "cluster: healthy (3 of 3 voters",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the restore table lacks %q", want)
		}
	}

	if left := rig.ProcessesMentioning(tmp); len(left) > 0 {
		t.Errorf("processes left running after the playground exited:\n%s", strings.Join(left, "\n"))
	}
	if entries, _ := os.ReadDir(tmp); len(entries) > 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("the playground left %v in its temporary directory %s", names, tmp)
	}
	if t.Failed() {
		t.Logf("--- last lines of the output ---\n%s", rig.LastLines(out.String(), 60))
	}
}

// tableRow finds the playground's table (the header starting with VOLUMEGROUPSNAPSHOT) and maps each
// header to the value under it; SIZE spans two fields ("1.2 MiB").
func tableRow(out string) (map[string]string, error) {
	lines := strings.Split(out, "\n")
	for i, line := range lines {
		header := strings.Fields(line)
		if len(header) == 0 || header[0] != "VOLUMEGROUPSNAPSHOT" || i+1 == len(lines) {
			continue
		}
		values := strings.Fields(lines[i+1])
		if len(values) == len(header)+1 { // "1.2 MiB"
			values = append(values[:5], append([]string{values[5] + " " + values[6]}, values[7:]...)...)
		}
		if len(values) != len(header) {
			return nil, fmt.Errorf("table row %q does not match header %q", lines[i+1], line)
		}
		row := map[string]string{}
		for j, h := range header {
			row[h] = values[j]
		}
		return row, nil
	}
	return nil, fmt.Errorf("no table with a VOLUMEGROUPSNAPSHOT header in the output")
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
