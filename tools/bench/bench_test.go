package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

func TestResultLines(t *testing.T) {
	line := snapshotResult{size: 1 << 30, pairs: 3, ratioMedian: 1.1234, overheadMedian: 0.5, verifyVsStatus: 1.25}.String()
	kind, f, err := parseResult(line)
	if err != nil {
		t.Fatal(err)
	}
	if kind != "" || f["size"] != 1<<30 || f["pairs"] != 3 || f["ratio_median"] != 1.123 || f["overhead_median_s"] != 0.5 || f["verify_vs_status"] != 1.25 {
		t.Errorf("parseResult(%q) = %q, %v", line, kind, f)
	}
	line = restoreResult{size: 10 << 20, memberCount: 3, rawS: 1.5, driverS: 9.25, perMemberS: 2, rawMemberS: 1.4}.String()
	kind, f, err = parseResult(line)
	if err != nil || kind != "restore" || f["raw_s"] != 1.5 || f["driver_s"] != 9.25 || f["per_member_s"] != 2 || f["members"] != 3 {
		t.Errorf("parseResult(%q) = %q, %v, %v", line, kind, f, err)
	}
	for _, bad := range []string{"", "RESULT", "result size=1", "RESULT size=x", "RESULT size", "RESULT size=1 size=2", "RESULT restore size=1 =2"} {
		if _, _, err := parseResult(bad); err == nil {
			t.Errorf("parseResult(%q) accepted", bad)
		}
	}
}

func TestMedian(t *testing.T) {
	cases := []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}}
	for _, tc := range cases {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// The restore command's table as it prints it (driver/restorecmd.go WriteTable), check and total included.
func TestMemberTimes(t *testing.T) {
	out := `MEMBER   PVC           REVISION     KEYS     OLD DATA KEPT AT                           TIME
main-0   data-main-0   1000005261   525893   data.before-restore-20261201t085119-3d28   16s
main-1   data-main-1   1000005261   525893   -                                          1.5s
cluster: healthy (3 of 3 voters, leader main-2), revision 1000005261 (>= 1000005261), 525893 keys (snapshot 525893)
restore 20261201t085119-3d28 of snapshot etcdgs-46 into namespace etcd-test took 30.8s
`
	got, err := memberTimes(out)
	if err != nil || len(got) != 2 || got[0] != 16 || got[1] != 1.5 {
		t.Fatalf("memberTimes = %v, %v; want [16 1.5]", got, err)
	}
	if _, err := memberTimes("restore refused\n"); err == nil {
		t.Error("memberTimes of output without a table: no error")
	}
}

// The fill's objects: unique keys under /registry/, JSON values of varied size that compress, but
// not to nothing.
func TestObjectGen(t *testing.T) {
	g := newObjectGen(1)
	keys := map[string]bool{}
	var total int
	minLen, maxLen := math.MaxInt, 0
	var all strings.Builder
	for i := range int64(2000) {
		k, v := g.next(i)
		if !strings.HasPrefix(k, fillPrefix) || keys[k] {
			t.Fatalf("key %q: not under %s or repeated", k, fillPrefix)
		}
		keys[k] = true
		var obj map[string]any
		if err := json.Unmarshal([]byte(v), &obj); err != nil {
			t.Fatalf("value of %s is not JSON: %v", k, err)
		}
		total += len(v)
		minLen, maxLen = min(minLen, len(v)), max(maxLen, len(v))
		all.WriteString(v)
	}
	if avg := total / 2000; avg < 1000 || avg > 6000 || minLen > 1500 || maxLen < 8000 {
		t.Errorf("value sizes: average %d, min %d, max %d; want about 3 KiB with a tail past 8 KiB", avg, minLen, maxLen)
	}
	var gz bytes.Buffer
	cmd := exec.Command("gzip", "-c")
	cmd.Stdin, cmd.Stdout = strings.NewReader(all.String()), &gz
	if err := cmd.Run(); err != nil {
		t.Skipf("gzip: %v", err)
	}
	if r := float64(gz.Len()) / float64(all.Len()); r < 0.15 || r > 0.7 {
		t.Errorf("gzip ratio %.2f; want objects that compress as Kubernetes objects do (0.15..0.7)", r)
	}
}

func TestEtcdArgs(t *testing.T) {
	if got := etcdArgs(1 << 30); got != nil {
		t.Errorf("etcdArgs(1Gi) = %v, want the defaults", got)
	}
	got := strings.Join(etcdArgs(8<<30), " ")
	if !strings.Contains(got, "--quota-backend-bytes=18253611008") || !strings.Contains(got, "--snapshot-count=") {
		t.Errorf("etcdArgs(8Gi) = %s", got)
	}
}

// TestE2EBenchShort runs `bench -short -restore` on its own rig: it must exit 0, end each part with
// a RESULT line a script can read, and remove its directory. No timing is asserted.
func TestE2EBenchShort(t *testing.T) {
	ctx := rig.CommandTestContext(t, 20*time.Minute)
	stdout, tmp := rig.RunCommand(t, ctx, "-short", "-restore")
	results := map[string]map[string]float64{}
	for _, line := range strings.Split(stdout, "\n") {
		if !strings.HasPrefix(line, "RESULT") {
			continue
		}
		kind, f, err := parseResult(line)
		if err != nil {
			t.Fatal(err)
		}
		results[kind] = f
	}
	snap, restore := results[""], results["restore"]
	if snap == nil || snap["size"] != shortSize || snap["pairs"] != 1 {
		t.Fatalf("snapshot RESULT %v; want size=%d pairs=1\n%s", snap, shortSize, stdout)
	}
	for _, k := range []string{"ratio_median", "verify_vs_status"} {
		if snap[k] <= 0 {
			t.Errorf("RESULT %s=%v; want a positive ratio", k, snap[k])
		}
	}
	if _, ok := snap["overhead_median_s"]; !ok {
		t.Error("RESULT has no overhead_median_s")
	}
	if restore == nil || restore["members"] != 3 || restore["raw_s"] <= 0 || restore["driver_s"] <= 0 || restore["per_member_s"] <= 0 {
		t.Errorf("restore RESULT %v; want 3 members and positive times", restore)
	}
	for _, want := range []string{"VGS readyToUse", "content bound", "verify (the Job's check"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	rig.CheckRemoved(t, tmp, "bench-*")
}
