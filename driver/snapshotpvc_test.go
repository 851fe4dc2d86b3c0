package driver

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
)

func TestSnapshotPVCSize(t *testing.T) {
	gi := resource.MustParse("1Gi")
	cases := []struct {
		name   string
		dbSize int64
		min    resource.Quantity
		want   string
	}{
		{"small db gets the minimum", 20 * mi, gi, "1Gi"},
		{"no size reported", 0, gi, "1Gi"},
		{"twice the db plus headroom", 600 * mi, gi, "1264Mi"},
		{"rounded up to MiB", 600*mi + 1, gi, "1265Mi"},
		{"8 GiB db", 8 << 30, gi, "16448Mi"},
		{"larger minimum wins", 600 * mi, resource.MustParse("5Gi"), "5Gi"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := snapshotPVCSize(tc.dbSize, tc.min)
			if got.Cmp(resource.MustParse(tc.want)) != 0 {
				t.Errorf("snapshotPVCSize(%d, %s) = %s; want %s", tc.dbSize, tc.min.String(), got.String(), tc.want)
			}
		})
	}
}

func TestNewSnapshotPVCClass(t *testing.T) {
	rec := &Record{ID: "etcdgs-x", Namespace: fxNS, Cluster: fxCluster}
	if pvc := newSnapshotPVC(rec, resource.MustParse("1Gi"), ""); pvc.Spec.StorageClassName != nil {
		t.Errorf("empty class set storageClassName %q; want nil (cluster default)", *pvc.Spec.StorageClassName)
	}
	pvc := newSnapshotPVC(rec, resource.MustParse("1Gi"), "fast")
	if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "fast" || pvc.Name != rec.ID || pvc.Labels[labelSnapshotID] != rec.ID {
		t.Errorf("pvc %+v", pvc)
	}
}
