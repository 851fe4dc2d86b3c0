package driver

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestVolumeFullReason checks that a Job failure caused by ENOSPC on the snapshot volume is told as a
// volume too small, naming the PVC, both sizes and the parameter to change, and keeps etcdctl's own
// words; other failures pass unchanged.
func TestVolumeFullReason(t *testing.T) {
	rec := &Record{ID: "etcdgs-0123", Namespace: "etcd-test", PVCSize: "8Mi",
		SourceMember: &SourceMember{Name: "main-1", DBSize: 40 << 20}}
	// What the save container's log tail says when etcdctl cannot write (etcdctl v3.6+).
	enospc := `pod etcd-test/etcdgs-0123-x: container "save" exited with code 1: Error: write /var/lib/etcd-snapshot/snapshot.db.part: no space left on device`
	got := volumeFullReason(rec, enospc)
	for _, want := range []string{"too small", "PVC etcd-test/etcdgs-0123 of 8Mi", "database 40Mi", "main-1", paramSnapshotSize, enospc} {
		if !strings.Contains(got, want) {
			t.Errorf("reason lacks %q:\n%s", want, got)
		}
	}
	other := `pod etcd-test/etcdgs-0123-x: container "save" exited with code 1: Error: context deadline exceeded`
	if got := volumeFullReason(rec, other); got != other {
		t.Errorf("a failure without ENOSPC became %q", got)
	}
	rec.SourceMember = nil
	if got := volumeFullReason(rec, enospc); !strings.Contains(got, "database unknown") {
		t.Errorf("without a source member: %q", got)
	}
}

// TestParseSnapshotSize checks the snapshotSize class parameter: a positive quantity within the sizing
// bound, and not together with snapshotMinSize.
func TestParseSnapshotSize(t *testing.T) {
	p, err := parseParams(map[string]string{paramSnapshotSize: "8Mi"})
	if err != nil || p.Size == nil || p.Size.String() != "8Mi" {
		t.Fatalf("parseParams(snapshotSize=8Mi) = %+v, %v", p, err)
	}
	if p, err := parseParams(nil); err != nil || p.Size != nil {
		t.Fatalf("without snapshotSize: %+v, %v; want no fixed size", p, err)
	}
	cases := []struct {
		name string
		in   map[string]string
		want string
	}{
		{"not a quantity", map[string]string{paramSnapshotSize: "big"}, "not a positive quantity"},
		{"zero", map[string]string{paramSnapshotSize: "0"}, "not a positive quantity"},
		{"negative", map[string]string{paramSnapshotSize: "-1Gi"}, "not a positive quantity"},
		{"beyond the bound", map[string]string{paramSnapshotSize: "1e1111111100"}, "larger than"},
		{"with snapshotMinSize", map[string]string{paramSnapshotSize: "8Mi", paramSnapshotMinSize: "1Gi"}, "exclude each other"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseParams(tc.in)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), paramSnapshotSize) {
				t.Errorf("parseParams(%v) = %v; want InvalidArgument naming %s and saying %q", tc.in, err, paramSnapshotSize, tc.want)
			}
		})
	}
}
