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
		factor float64 // the class's snapshotSizeFactor, 0 when not set
	}{
		{"small db gets the minimum", 20 * mi, gi, "1Gi", 0},
		{"no size reported", 0, gi, "1Gi", 0},
		// 1.2 times the database plus 64 MiB: one copy of the file with room to spare, not two.
		{"1.2 times the db plus headroom", 1000 * mi, gi, "1264Mi", 0},
		{"rounded up to MiB", 1000*mi + 1, gi, "1265Mi", 0},
		{"8 GiB db", 8 << 30, gi, "9895Mi", 0},
		{"larger minimum wins", 600 * mi, resource.MustParse("5Gi"), "5Gi", 0},
		{"class factor", 8 << 30, gi, "16448Mi", 2},
		{"class factor below one", 8 << 30, gi, "4160Mi", 0.5},
		{"1 PiB reported", 1 << 50, gi, "1288490253Mi", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := snapshotPVCSize(tc.dbSize, snapshotParams{MinSize: tc.min, SizeFactor: tc.factor})
			if got.Cmp(resource.MustParse(tc.want)) != 0 {
				t.Errorf("snapshotPVCSize(%d, min %s, factor %g) = %s; want %s", tc.dbSize, tc.min.String(), tc.factor, got.String(), tc.want)
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
