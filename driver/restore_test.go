package driver

import (
	"bytes"
	"context"
	"strings"
	"testing"

	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// restoreCluster is a Ready snapshot of a 3-member StatefulSet cluster as the API would show it.
func restoreCluster(t *testing.T, rec *Record, extra ...runtime.Object) *fake.Clientset {
	t.Helper()
	cm, err := encodeRecord("kube-system", rec)
	if err != nil {
		t.Fatal(err)
	}
	objs := []runtime.Object{cm,
		&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: rec.ID, Namespace: rec.Namespace}, Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound}},
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "main", Namespace: rec.Namespace}, Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](3),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "etcd", Args: []string{"--data-dir=/var/lib/etcd/data"},
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/var/lib/etcd"}}}}}}}},
	}
	for _, m := range rec.Members {
		objs = append(objs, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data-" + m.Name, Namespace: rec.Namespace}, Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound}})
	}
	return fake.NewClientset(append(objs, extra...)...)
}

func memberPod(name, claim string, phase corev1.PodPhase) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "etcd", OwnerReferences: []metav1.OwnerReference{{Kind: "StatefulSet", Name: "main", Controller: ptr.To(true)}}},
		Spec:       corev1.PodSpec{Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}}},
		Status:     corev1.PodStatus{Phase: phase},
	}
}

// TestRestoreRefusalsChangeNothing runs the whole command against a fake API and checks that every
// refusal names its cause and that no object was created, changed or deleted.
func TestRestoreRefusalsChangeNothing(t *testing.T) {
	ready := restoreTestRecord("data-main-0", "data-main-1", "data-main-2")
	pending := restoreTestRecord("data-main-0")
	pending.Phase, pending.SHA256 = PhaseRunning, ""
	unverified := restoreTestRecord("data-main-0")
	unverified.HashChecked = false
	cases := []struct {
		name    string
		rec     *Record
		extra   []runtime.Object
		cfg     func(*RestoreConfig)
		wantErr []string
	}{
		{name: "snapshot not ready", rec: pending, wantErr: []string{"is Running, not Ready"}},
		{name: "snapshot without verified sha256", rec: unverified, wantErr: []string{"records no verified sha256"}},
		{name: "unknown snapshot id", rec: ready, cfg: func(c *RestoreConfig) { c.SnapshotID = "etcdgs-" + strings.Repeat("c", 32) }, wantErr: []string{"has no record"}},
		{name: "not an id of this driver", rec: ready, cfg: func(c *RestoreConfig) { c.SnapshotID = "snap-123" }, wantErr: []string{"is not an id of this driver"}},
		{name: "running pods mount the PVCs", rec: ready,
			extra:   []runtime.Object{memberPod("main-0", "data-main-0", corev1.PodRunning), memberPod("main-1", "data-main-1", corev1.PodPending), memberPod("old", "data-main-2", corev1.PodSucceeded)},
			wantErr: []string{"pod main-0 (owned by StatefulSet main, Running) mounts PVC data-main-0", "pod main-1 (owned by StatefulSet main, Pending)", "kubectl scale statefulset main -n etcd --replicas=0", "nothing was changed"}},
		{name: "missing member PVC and snapshot PVC", rec: ready,
			cfg:     func(c *RestoreConfig) { c.MemberPVCs = map[string]string{"main-2": "gone"} },
			wantErr: []string{"PVC etcd/gone of member main-2 does not exist"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kube := restoreCluster(t, tc.rec, tc.extra...)
			before := len(kube.Actions())
			var progress bytes.Buffer
			cfg := RestoreConfig{Kube: kube, Snap: snapfake.NewSimpleClientset(), DriverName: "etcd-snapshot.csi.io", MetadataNamespace: "kube-system",
				ClusterLabel: "etcd.io/cluster", SnapshotID: tc.rec.ID, BumpRevision: DefaultBumpRevision, Progress: &progress}
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			_, err := Restore(context.Background(), cfg)
			if err == nil {
				t.Fatal("restore succeeded, want a refusal")
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			for _, a := range kube.Actions()[before:] {
				if v := a.GetVerb(); v != "get" && v != "list" && v != "watch" {
					t.Errorf("a refused restore changed the cluster: %s %s", v, a.GetResource().Resource)
				}
			}
		})
	}
}

func TestCheckRestoreConfig(t *testing.T) {
	cases := []struct {
		name    string
		cfg     RestoreConfig
		wantErr string
	}{
		{name: "no source", cfg: RestoreConfig{}, wantErr: "exactly one of -group-snapshot"},
		{name: "two sources", cfg: RestoreConfig{GroupSnapshot: "a", SnapshotID: "b"}, wantErr: "exactly one of"},
		{name: "negative bump", cfg: RestoreConfig{GroupSnapshot: "a", BumpRevision: -1}, wantErr: "-bump-revision"},
		{name: "scale with a new cluster", cfg: RestoreConfig{GroupSnapshot: "a", Scale: true, TargetNamespace: "x"}, wantErr: "-scale restarts the snapshot's own StatefulSet"},
		{name: "new-cluster flag in place", cfg: RestoreConfig{GroupSnapshot: "a", Size: "1Gi"}, wantErr: "need -target-namespace"},
		{name: "member-pvc for a new cluster", cfg: RestoreConfig{GroupSnapshot: "a", TargetNamespace: "x", MemberPVCs: map[string]string{"a": "b"}}, wantErr: "-member-pvc maps an existing cluster's PVCs"},
		{name: "bad restore id", cfg: RestoreConfig{GroupSnapshot: "a", RestoreID: "Bad_ID"}, wantErr: "-restore-id"},
		{name: "bad data dir", cfg: RestoreConfig{GroupSnapshot: "a", DataDirInVolume: "../x"}, wantErr: "-data-dir-in-volume"},
		{name: "bad size", cfg: RestoreConfig{GroupSnapshot: "a", TargetNamespace: "x", Size: "lots"}, wantErr: "-size"},
		{name: "fine", cfg: RestoreConfig{GroupSnapshot: "a", TargetNamespace: "x", Size: "2Gi", DataDirInVolume: "data", RestoreID: "r1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkRestoreConfig(tc.cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
	if id := newRestoreID(); !restoreIDPattern.MatchString(id) {
		t.Errorf("newRestoreID() = %q does not match its own pattern", id)
	}
}
