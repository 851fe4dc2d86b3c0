package driver

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestSnapshotIDs(t *testing.T) {
	long := strings.Repeat("x", 4096)
	for _, name := range []string{"a", "groupsnapshot-0d3f1c9e-8a55-4f6b-b7a1-2b3c4d5e6f70", long} {
		g, s := snapshotID(name, true), snapshotID(name, false)
		if g != snapshotID(name, true) || g == s {
			t.Errorf("ids of %q not deterministic or not distinct: %s %s", name, g, s)
		}
		m := memberSnapshotID(g, "/var/lib/csi-hostpath/member-0")
		for _, id := range []string{g, s, m} {
			if len(id) > 63 || len(validation.IsDNS1123Label(id)) > 0 {
				t.Errorf("id %q is not a DNS-1123 label of <= 63 characters", id)
			}
		}
		if !isRecordID(g) || !isRecordID(s) || isRecordID(m) || !IsMemberSnapshotID(m) || IsMemberSnapshotID(g) || GroupIDOfMember(m) != g || GroupIDOfMember(s) != "" {
			t.Errorf("classification of %s / %s / %s is wrong", g, s, m)
		}
		if len(tlsSecretName(g)) > 253 {
			t.Errorf("secret name too long")
		}
	}
	if memberSnapshotID("etcdgs-x", "a") == memberSnapshotID("etcdgs-x", "b") {
		t.Error("member ids of two volumes collide")
	}
}

func TestParseParams(t *testing.T) {
	p, err := parseParams(map[string]string{
		paramEndpoints: "https://a:1,https://b:2", paramSnapshotStorageClass: "fast", paramSnapshotMinSize: "2Gi", paramAllowPlaintext: "true",
		"csi.storage.k8s.io/volumegroupsnapshot/name": "ignored",
	})
	if err != nil || len(p.Endpoints) != 2 || p.StorageClass != "fast" || p.MinSize.String() != "2Gi" || !p.AllowPlaintext {
		t.Fatalf("parseParams = %+v, %v", p, err)
	}
	if p, err := parseParams(nil); err != nil || p.MinSize.Cmp(defaultSnapshotMinSize) != 0 || p.AllowPlaintext {
		t.Fatalf("defaults = %+v, %v", p, err)
	}
	for _, bad := range []map[string]string{
		{"snapshotStorageclass": "typo"},
		{paramSnapshotMinSize: "lots"},
		{paramSnapshotMinSize: "-1Gi"},
		{paramSnapshotMinSize: "1e1111111100"}, // parses, but sizing with it never returned (FuzzParams)
		{paramSnapshotMinSize: "2Pi"},
		{paramAllowPlaintext: "yes"},
		{paramEndpoints: " , "},
	} {
		if _, err := parseParams(bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("parseParams(%v) = %v; want InvalidArgument", bad, err)
		}
	}
}

func TestParamsHash(t *testing.T) {
	a := map[string]string{"snapshotMinSize": "1Gi", "snapshotStorageClass": "x"}
	b := map[string]string{"snapshotStorageClass": "x", "snapshotMinSize": "1Gi", "csi.storage.k8s.io/volumesnapshot/name": "n"}
	if paramsHash(a) != paramsHash(b) {
		t.Error("hash depends on order or sidecar-added keys")
	}
	if paramsHash(a) == paramsHash(map[string]string{"snapshotMinSize": "2Gi", "snapshotStorageClass": "x"}) {
		t.Error("hash ignores a value")
	}
	if paramsHash(map[string]string{"a": "b=c"}) == paramsHash(map[string]string{"a": "b", "=c": ""}) {
		t.Error("hash is ambiguous")
	}
}

func TestRecordErr(t *testing.T) {
	r := &Record{ID: "etcds-x", Name: "n", Phase: PhaseFailed, Error: "disk full", ErrorCode: "FailedPrecondition"}
	if err := r.Err(); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Err() = %v", err)
	}
	for _, code := range []string{"", "OK", "bogus"} {
		r.ErrorCode = code
		if status.Code(r.Err()) != codes.Internal {
			t.Errorf("code %q read as %v; want Internal", code, status.Code(r.Err()))
		}
	}
	r.Phase = PhaseReady
	if r.Err() != nil || !r.ReadyToUse() {
		t.Error("a Ready record reports an error or is not ready")
	}
}
