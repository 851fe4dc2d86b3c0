package driver

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func TestResolveSources(t *testing.T) {
	objs := etcdPVCs(fxNS, fxCluster, 3)
	objs = append(objs, etcdPVCs("other-ns", fxCluster, 1)...) // same cluster name, other namespace
	objs = append(objs, etcdPVCs(fxNS, "second", 1)...)        // other cluster, same namespace
	objs = append(objs,
		&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "unlabelled", Namespace: fxNS}},
		&corev1.PersistentVolume{ // a PV of another driver that is not bound to any claim
			ObjectMeta: metav1.ObjectMeta{Name: "pv-free"},
			Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{
				CSI: &corev1.CSIPersistentVolumeSource{Driver: "ebs.csi.aws.com", VolumeHandle: "vol-0123456789abcdef0"}}},
		})
	f := newEngineFixture(t, objs...)

	cases := []struct {
		name    string
		ids     []string
		code    codes.Code
		msg     []string // substrings of the error message
		pvcs    []string // resolved PVC names, in request order
		cluster string
	}{
		{name: "namespace/pvc", ids: []string{fxNS + "/data-main-0"}, pvcs: []string{"data-main-0"}, cluster: fxCluster},
		{name: "PV handle of another CSI driver", ids: []string{pvHandle(fxNS, fxCluster, 1)}, pvcs: []string{"data-main-1"}, cluster: fxCluster},
		{name: "mixed forms, one cluster",
			ids:  []string{pvHandle(fxNS, fxCluster, 2), fxNS + "/data-main-0", pvHandle(fxNS, fxCluster, 1)},
			pvcs: []string{"data-main-2", "data-main-0", "data-main-1"}, cluster: fxCluster},
		{name: "unknown PVC", ids: []string{fxNS + "/data-main-9"}, code: codes.NotFound, msg: []string{`"etcd-test/data-main-9"`, "not found"}},
		{name: "unknown handle, malformed", ids: []string{"vol-does-not-exist"}, code: codes.InvalidArgument,
			msg: []string{`"vol-does-not-exist"`, "namespace/pvc-name"}},
		{name: "malformed: three parts", ids: []string{"a/b/c"}, code: codes.InvalidArgument, msg: []string{`"a/b/c"`}},
		{name: "malformed: upper case namespace", ids: []string{"Etcd/data"}, code: codes.InvalidArgument, msg: []string{`"Etcd/data"`}},
		{name: "malformed: empty name", ids: []string{fxNS + "/"}, code: codes.InvalidArgument, msg: []string{`"etcd-test/"`}},
		{name: "two namespaces", ids: []string{fxNS + "/data-main-0", "other-ns/data-main-0"}, code: codes.InvalidArgument,
			msg: []string{`"other-ns/data-main-0"`, "one namespace"}},
		{name: "two clusters", ids: []string{pvHandle(fxNS, fxCluster, 0), pvHandle(fxNS, "second", 0)}, code: codes.InvalidArgument,
			msg: []string{pvHandle(fxNS, "second", 0), `"second"`, "one cluster"}},
		{name: "PVC without cluster label", ids: []string{fxNS + "/unlabelled"}, code: codes.InvalidArgument,
			msg: []string{`"etcd-test/unlabelled"`, fxClusterLabel}},
		{name: "PV not bound", ids: []string{"vol-0123456789abcdef0"}, code: codes.InvalidArgument, msg: []string{"pv-free", "not bound"}},
		{name: "same PVC twice in two forms", ids: []string{fxNS + "/data-main-0", pvHandle(fxNS, fxCluster, 0)}, code: codes.InvalidArgument,
			msg: []string{"same PVC"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.engine.resolveSources(f.ctx, tc.ids)
			if tc.code != codes.OK {
				wantCode(t, err, tc.code, tc.msg...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Namespace != fxNS || got.Cluster != tc.cluster || len(got.Volumes) != len(tc.pvcs) {
				t.Fatalf("got %+v", got)
			}
			for i, v := range got.Volumes {
				if v.VolumeID != tc.ids[i] || v.PVC.Name != tc.pvcs[i] {
					t.Errorf("volume %d = %s -> %s; want %s -> %s", i, v.VolumeID, v.PVC.Name, tc.ids[i], tc.pvcs[i])
				}
			}
		})
	}
}

// A PV whose claimRef points at a PVC bound to another PV (a stale claimRef) must not resolve.
func TestResolveVolumeStaleClaimRef(t *testing.T) {
	objs := etcdPVCs(fxNS, fxCluster, 1)
	objs = append(objs, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pv-stale"},
		Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: fxOtherDriver, VolumeHandle: "/stale"}},
			ClaimRef:               &corev1.ObjectReference{Namespace: fxNS, Name: "data-main-0"},
		},
	})
	f := newEngineFixture(t, objs...)
	_, err := f.engine.resolveVolume(f.ctx, "/stale")
	if status.Code(err) != codes.InvalidArgument || !hasAll(err.Error(), "pv-stale", "data-main-0") {
		t.Fatalf("error = %v; want InvalidArgument naming the PV and PVC", err)
	}
}

func TestPVHandleIndexIgnoresNonCSI(t *testing.T) {
	for _, obj := range []runtime.Object{
		&corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "hostpath"}, Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/x"}}}},
		&corev1.Pod{},
	} {
		if keys, err := pvHandleIndexFunc(obj); err != nil || len(keys) != 0 {
			t.Errorf("pvHandleIndexFunc(%T) = %v, %v; want no keys", obj, keys, err)
		}
	}
}
