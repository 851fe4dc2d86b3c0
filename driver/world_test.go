package driver

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Names of the test world: one etcd cluster "main" in "etcd-test", metadata in "kube-system", and
// PVs owned by the rig's hostpath CSI driver (not ours), as tools/rig/etcdstatefulset.go makes them.
const (
	fxMetaNS       = "kube-system"
	fxNS           = "etcd-test"
	fxCluster      = "main"
	fxClusterLabel = "etcd.io/cluster"
	fxOtherDriver  = "hostpath.csi.k8s.io"
	fxEtcdImage    = "gcr.io/etcd-development/etcd:v3.7.3"
	fxDriverImage  = "ghcr.io/etcd-snapshot-driver/etcd-snapshot-driver:test"
)

// etcdPVCs returns, for each client URL of a cluster, a PVC data-<cluster>-<i> in ns labelled with
// the cluster and a PV of another CSI driver bound to it, whose handle is an absolute directory.
func etcdPVCs(ns, cluster string, n int) []runtime.Object {
	var out []runtime.Object
	for i := range n {
		pvcName := fmt.Sprintf("data-%s-%d", cluster, i)
		pvName := fmt.Sprintf("pv-%s-%s-%d", ns, cluster, i)
		out = append(out,
			&corev1.PersistentVolumeClaim{
				ObjectMeta: metav1.ObjectMeta{Name: pvcName, Namespace: ns, Labels: map[string]string{fxClusterLabel: cluster}},
				Spec: corev1.PersistentVolumeClaimSpec{
					VolumeName:  pvName,
					AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			},
			&corev1.PersistentVolume{
				ObjectMeta: metav1.ObjectMeta{Name: pvName},
				Spec: corev1.PersistentVolumeSpec{
					PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
						Driver: fxOtherDriver, VolumeHandle: pvHandle(ns, cluster, i),
					}},
					ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: ns, Name: pvcName},
				},
			})
	}
	return out
}

// pvHandle is the volume handle of member i's PV: an absolute path, slashes and all, like hostpath's.
func pvHandle(ns, cluster string, i int) string {
	return fmt.Sprintf("/var/lib/csi-hostpath/%s/%s/member-%d", ns, cluster, i)
}

// clientService is the cluster's client Service as the rig makes it: ExternalName localhost, port
// "client" = the given client URL's port.
func clientService(t *testing.T, ns, cluster, clientURL string) *corev1.Service {
	t.Helper()
	u, err := url.Parse(clientURL)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: cluster + "-client", Namespace: ns, Labels: map[string]string{fxClusterLabel: cluster}},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeExternalName, ExternalName: "localhost",
			Ports: []corev1.ServicePort{{Name: "client", Port: int32(port)}},
		},
	}
}

// etcdWorld is the fake Kubernetes side of a real test cluster: PVCs, PVs and the client Service.
func etcdWorld(t *testing.T, tc *testCluster) []runtime.Object {
	t.Helper()
	objs := etcdPVCs(fxNS, fxCluster, len(tc.ClientURLs))
	return append(objs, clientService(t, fxNS, fxCluster, tc.ClientURLs[0]))
}

// secretsOf are CSI snapshotter secrets holding the cluster's client credentials.
func secretsOf(tc *testCluster) map[string]string {
	c := tc.Creds()
	return map[string]string{secretKeyCA: string(c.CA), secretKeyCert: string(c.Cert), secretKeyKey: string(c.Key)}
}

// groupRequest asks for a group snapshot of every member PVC of the test cluster, by PV handle as
// the upstream sidecar passes them.
func groupRequest(tc *testCluster, name string) SnapshotRequest {
	ids := make([]string, len(tc.ClientURLs))
	for i := range ids {
		ids[i] = pvHandle(fxNS, fxCluster, i)
	}
	return SnapshotRequest{Name: name, SourceVolumeIDs: ids, Secrets: secretsOf(tc), Group: true}
}

// hasAll reports whether s contains every part.
func hasAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
