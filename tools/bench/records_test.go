package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

func TestParseCounts(t *testing.T) {
	cases := []struct {
		name, in string
		want     []int
	}{
		{"one", "10", []int{10}},
		{"ascending", "10,100, 1000,10000", []int{10, 100, 1000, 10000}},
		{"empty", "", nil},
		{"zero", "0,10", nil},
		{"descending", "100,10", nil},
		{"repeated", "10,10", nil},
		{"not a number", "10,1k", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCounts(tc.in)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("parseCounts(%q) = %v, want an error", tc.in, got)
				}
				if !strings.Contains(err.Error(), "-records") {
					t.Errorf("error %q does not name -records", err)
				}
				return
			}
			if err != nil || len(got) != len(tc.want) {
				t.Fatalf("parseCounts(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("parseCounts(%q) = %v; want %v", tc.in, got, tc.want)
				}
			}
		})
	}
}

// The records mode through the driver's store on a fake clientset: every count is reached with
// records the driver can read back, every Put lands, and the RESULT line parses.
func TestRecordBenchGrowsAndMeasures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kube := fake.NewClientset()
	store, err := driver.NewRecordStore(ctx, kube, "kube-system")
	if err != nil {
		t.Fatal(err)
	}
	rssCalls := 0
	b := &recordBench{store: store, rand: rand.New(rand.NewPCG(1, 2)), say: t.Logf,
		rss: func() int64 { rssCalls++; return 50 << 20 }}
	rows, err := b.run(ctx, []int{3, 12})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].count != 3 || rows[1].count != 12 || rssCalls != 2 {
		t.Fatalf("rows %+v, %d RSS reads; want counts 3 and 12, two reads", rows, rssCalls)
	}
	for _, row := range rows {
		if row.getMedian <= 0 || row.getP99 < row.getMedian || row.putMedian <= 0 || row.putP99 < row.putMedian {
			t.Errorf("row %+v: want positive medians no larger than the p99s", row)
		}
	}
	cms, err := kube.CoreV1().ConfigMaps("kube-system").List(ctx, metav1.ListOptions{})
	if err != nil || len(cms.Items) != 12 {
		t.Fatalf("%d ConfigMaps (%v); want 12", len(cms.Items), err)
	}
	// Each record is one the driver reads back, and each Put raised the revision it was made with.
	// min(recordPuts, n) Puts per count: all 3 first, then all 12.
	for _, cm := range cms.Items {
		var rec driver.Record
		if err := json.Unmarshal([]byte(cm.Data["record.json"]), &rec); err != nil || rec.ID != cm.Name || rec.Phase != driver.PhaseReady || len(rec.Members) != 3 {
			t.Fatalf("ConfigMap %s holds %+v (%v)", cm.Name, rec, err)
		}
		got, err := store.Get(ctx, rec.ID)
		if err != nil || got == nil || got.SHA256 != rec.SHA256 {
			t.Fatalf("Get(%s) = %+v, %v", rec.ID, got, err)
		}
		i := 0
		for ; i < 12 && benchRecord(i, time.Time{}).ID != rec.ID; i++ {
		}
		puts := int64(1)
		if i < 3 {
			puts = 2
		}
		if want := int64(1000+i) + puts; rec.Revision != want {
			t.Errorf("record %d (%s): revision %d, want %d after %d Puts", i, rec.ID, rec.Revision, want, puts)
		}
	}
	var out bytes.Buffer
	printRecords(&out, 40<<20, rows)
	last := strings.TrimSpace(out.String())
	last = last[strings.LastIndex(last, "\n")+1:]
	kind, f, err := parseResult(last)
	if err != nil || kind != "records" || f["n_min"] != 3 || f["n_max"] != 12 || f["get_ratio"] <= 0 || f["put_ratio"] <= 0 {
		t.Fatalf("RESULT line %q: %q %v %v", last, kind, f, err)
	}
	if _, ok := f["driver_rss_mib_1000"]; ok {
		t.Errorf("RESULT line %q reports RSS at 1000 records, which were not measured", last)
	}
	if !strings.Contains(out.String(), "driver RSS before any record: 40.0 MiB") {
		t.Errorf("output lacks the RSS before any record:\n%s", out.String())
	}
}

func TestQuantile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3}
	if got := quantile(ds, 0.5); got != 3 {
		t.Errorf("median = %v, want 3", got)
	}
	if got := quantile(ds, 0.99); got != 5 {
		t.Errorf("p99 = %v, want 5", got)
	}
	if got := quantile(nil, 0.5); got != 0 {
		t.Errorf("quantile of none = %v, want 0", got)
	}
}

// TestE2EBenchRecords runs `bench -records 5,20` on its own rig: it must exit 0, print a row per
// count with the driver's RSS and a RESULT records line a script can read, and remove its directory.
// No timing is asserted.
func TestE2EBenchRecords(t *testing.T) {
	ctx := rig.CommandTestContext(t, 15*time.Minute)
	stdout, tmp := rig.RunCommand(t, ctx, "-records", "5,20")
	var result map[string]float64
	rows := 0
	for _, line := range strings.Split(stdout, "\n") {
		f := strings.Fields(line)
		if len(f) == 6 && (f[0] == "5" || f[0] == "20") {
			rows++
			if rss, err := strconv.ParseFloat(f[5], 64); err != nil || rss <= 0 {
				t.Errorf("row %q: driver RSS %q is not a positive number", line, f[5])
			}
		}
		if strings.HasPrefix(line, "RESULT") {
			kind, fields, err := parseResult(line)
			if err != nil || kind != "records" {
				t.Fatalf("RESULT line %q: %q, %v", line, kind, err)
			}
			result = fields
		}
	}
	if rows != 2 || result == nil || result["n_min"] != 5 || result["n_max"] != 20 || result["put_median_ms_max"] <= 0 {
		t.Fatalf("%d rows, RESULT %v; want 2 rows, n_min=5 n_max=20 and a positive Put median\n%s", rows, result, stdout)
	}
	rig.CheckRemoved(t, tmp, "bench-*")
}
