package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// readyResult is a result that passes verify: a readyToUse VolumeGroupSnapshot and a Ready record
// whose size and sha256 are those of a real file.
func readyResult(t *testing.T) *result {
	t.Helper()
	file := filepath.Join(t.TempDir(), "snapshot.db")
	data := bytes.Repeat([]byte("etcd"), 1000)
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return &result{
		name: "playground", wrote: 1000, wroteRevision: 11, file: file, took: 4321 * time.Millisecond,
		vgs: &groupsnapshotv1.VolumeGroupSnapshot{Status: &groupsnapshotv1.VolumeGroupSnapshotStatus{ReadyToUse: ptr.To(true)}},
		rec: &driver.Record{
			ID: "etcdgs-0123", Phase: driver.PhaseReady, Namespace: "etcd-test",
			SourceMember: &driver.SourceMember{Name: "main-1", Leader: true, Endpoint: "https://127.0.0.1:2379"},
			Revision:     12, Keys: 1001, SizeBytes: int64(len(data)), SHA256: hex.EncodeToString(sum[:]),
		},
	}
}

func TestVerify(t *testing.T) {
	cases := []struct {
		name   string
		change func(res *result)
		want   string // "" = verified
	}{
		{"ready and verified", func(*result) {}, ""},
		{"not readyToUse", func(res *result) { res.vgs.Status.ReadyToUse = ptr.To(false) }, "is not readyToUse"},
		{"no status", func(res *result) { res.vgs.Status = nil }, "is not readyToUse"},
		{"no record", func(res *result) { res.rec = nil }, "no driver record"},
		{"failed record", func(res *result) {
			res.rec.Phase, res.rec.Error, res.rec.ErrorCode = driver.PhaseFailed, "member main-0 unreachable", "FailedPrecondition"
		}, "phase Failed, want Ready (FailedPrecondition: member main-0 unreachable)"},
		{"no sha256", func(res *result) { res.rec.SHA256 = "" }, "has no sha256"},
		{"no key count", func(res *result) { res.rec.Keys = 0 }, "has no key count"},
		{"fewer keys", func(res *result) { res.rec.Keys = 999 }, "999 keys, fewer than the 1000 written"},
		{"older revision", func(res *result) { res.rec.Revision = 10 }, "revision 10 is older than revision 11"},
		{"no source member", func(res *result) { res.rec.SourceMember = nil }, "names no source member"},
		{"file differs", func(res *result) { res.rec.SHA256 = strings.Repeat("0", 64) }, "the record says 4000 bytes with sha256 0000"},
		{"file missing", func(res *result) { res.file = filepath.Join(filepath.Dir(res.file), "gone.db") }, "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := readyResult(t)
			tc.change(res)
			err := res.verify()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("verify() = %v, want nil", err)
			case tc.want != "" && err == nil:
				t.Fatalf("verify() = nil, want an error containing %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("verify() = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestPrintTable(t *testing.T) {
	var b bytes.Buffer
	printTable(&b, readyResult(t))
	row, err := tableRow(b.String())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"VOLUMEGROUPSNAPSHOT": "playground", "READYTOUSE": "true", "MEMBER": "main-1",
		"REVISION": "12", "KEYS": "1001", "SIZE": "3.9 KiB", "TIME": "4.3s"}
	for k, v := range want {
		if row[k] != v {
			t.Errorf("%s = %q, want %q\n%s", k, row[k], v, b.String())
		}
	}

	// Before the driver's record is known, the row still prints, with dashes.
	b.Reset()
	res := readyResult(t)
	res.rec, res.vgs = nil, nil
	printTable(&b, res)
	if row, err = tableRow(b.String()); err != nil {
		t.Fatal(err)
	}
	if row["READYTOUSE"] != "false" || row["KEYS"] != "-" || row["SIZE"] != "-" {
		t.Errorf("row without a record = %v\n%s", row, b.String())
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1258291: "1.2 MiB", 8 << 30: "8.0 GiB", 3 << 40: "3.0 TiB",
	} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestFailedGroupRecord checks the early end of the wait: a group record in phase Failed is found
// (also when it turns Failed after the watch started), other records are not.
func TestFailedGroupRecord(t *testing.T) {
	recordMap := func(rec driver.Record) *corev1.ConfigMap {
		data, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		return &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: rec.ID, Namespace: rig.DriverNamespace, Labels: map[string]string{rig.ManagedByLabel: rig.ManagedByValue}},
			Data:       map[string]string{rig.RecordKey: string(data)},
		}
	}
	ready := driver.Record{ID: "etcdgs-ready", Group: true, Phase: driver.PhaseReady}
	single := driver.Record{ID: "etcds-failed", Phase: driver.PhaseFailed, Error: "not a group", ErrorCode: "Internal"}
	running := driver.Record{ID: "etcdgs-running", Group: true, Phase: driver.PhaseRunning}

	kube := fake.NewSimpleClientset(recordMap(ready), recordMap(single), recordMap(running))
	r := &rig.Rig{Kube: kube}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if f := failedGroupRecord(ctx, r); f != nil {
		t.Fatalf("failedGroupRecord = %v with no failed group record", f)
	}

	// The record turns Failed while the watch runs. The fake clientset replays nothing to a watch
	// started late, so the update is repeated until the watch has seen it.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		failed := running
		failed.Phase, failed.Error, failed.ErrorCode = driver.PhaseFailed, "verify: sha256 mismatch", "DataLoss"
		for i := 0; ; i++ {
			cm := recordMap(failed)
			cm.Annotations = map[string]string{"attempt": fmt.Sprint(i)}
			if _, err := kube.CoreV1().ConfigMaps(rig.DriverNamespace).Update(context.Background(), cm, metav1.UpdateOptions{}); err != nil {
				t.Error(err)
				return
			}
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	f := failedGroupRecord(ctx, r)
	close(done)
	if f == nil {
		t.Fatal("failedGroupRecord = nil, want the record that turned Failed")
	}
	if msg := f.Error(); !strings.Contains(msg, "etcdgs-running") || !strings.Contains(msg, "sha256 mismatch") {
		t.Errorf("failure = %q, want the record id and its error", msg)
	}
}

// TestExampleSchedule checks the schedule the playground prints is a valid object of the CRD's kind
// with the fields the driver reads.
func TestExampleSchedule(t *testing.T) {
	var u unstructured.Unstructured
	if err := yaml.UnmarshalStrict([]byte(exampleSchedule("etcd-test", "main", "etcd-snapshot")), &u.Object); err != nil {
		t.Fatal(err)
	}
	if u.GroupVersionKind() != driver.ScheduleGVR.GroupVersion().WithKind("EtcdSnapshotSchedule") || u.GetNamespace() != "etcd-test" {
		t.Errorf("example schedule is a %s in %q", u.GroupVersionKind(), u.GetNamespace())
	}
	cluster, _, _ := unstructured.NestedString(u.Object, "spec", "source", "cluster")
	class, _, _ := unstructured.NestedString(u.Object, "spec", "volumeGroupSnapshotClassName")
	schedule, _, _ := unstructured.NestedString(u.Object, "spec", "schedule")
	if cluster != "main" || class != "etcd-snapshot" || schedule != "@every 1m" {
		t.Errorf("example schedule spec %v", u.Object["spec"])
	}
}
