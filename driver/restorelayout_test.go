package driver

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

func TestLayoutFromStatefulSet(t *testing.T) {
	mount := []corev1.VolumeMount{{Name: "data", MountPath: "/var/lib/etcd"}}
	cases := []struct {
		name    string
		c       corev1.Container
		psc     *corev1.PodSecurityContext
		want    memberLayout
		wantErr string
	}{
		{name: "flag with =", c: corev1.Container{Name: "etcd", Args: []string{"--name=$(POD)", "--data-dir=/var/lib/etcd/data"}, VolumeMounts: mount},
			want: memberLayout{DataDir: "data", UID: nonRootUID, GID: nonRootUID}},
		{name: "flag and value in command", c: corev1.Container{Name: "etcd", Command: []string{"etcd", "--data-dir", "/var/lib/etcd/default.etcd/"}, VolumeMounts: mount},
			want: memberLayout{DataDir: "default.etcd", UID: nonRootUID, GID: nonRootUID}},
		{name: "ETCD_DATA_DIR with a variable", c: corev1.Container{Name: "etcd", Env: []corev1.EnvVar{{Name: "BASE", Value: "/var/lib/etcd"}, {Name: "ETCD_DATA_DIR", Value: "$(BASE)/member-data"}}, VolumeMounts: mount},
			want: memberLayout{DataDir: "member-data", UID: nonRootUID, GID: nonRootUID}},
		{name: "subPath and user from the pod, container overrides uid", c: corev1.Container{Name: "server", Args: []string{"--data-dir=/bitnami/etcd/data"},
			VolumeMounts:    []corev1.VolumeMount{{Name: "data", MountPath: "/bitnami/etcd", SubPath: "etcd"}},
			SecurityContext: &corev1.SecurityContext{RunAsUser: ptr.To[int64](1001)}},
			psc:  &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](7), RunAsGroup: ptr.To[int64](8), FSGroup: ptr.To[int64](9)},
			want: memberLayout{DataDir: "etcd/data", UID: 1001, GID: 8, FSGroup: ptr.To[int64](9)}},
		{name: "data dir is the volume root", c: corev1.Container{Name: "etcd", Args: []string{"--data-dir=/var/lib/etcd"}, VolumeMounts: mount}, wantErr: "is the root of the volume"},
		{name: "data dir on another volume", c: corev1.Container{Name: "etcd", Args: []string{"--data-dir=/tmp/etcd"}, VolumeMounts: mount}, wantErr: "not on the volume of claim template"},
		{name: "no data dir", c: corev1.Container{Name: "etcd", VolumeMounts: mount}, wantErr: "set -data-dir-in-volume"},
		{name: "unresolved variable", c: corev1.Container{Name: "etcd", Args: []string{"--data-dir=$(DIR)/x"}, VolumeMounts: mount}, wantErr: "not an absolute path"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, err := layoutFromStatefulSet(etcdStatefulSet(tc.c, tc.psc), "data")
			if checkErr(t, err, tc.wantErr) {
				return
			}
			if l.DataDir != tc.want.DataDir || l.UID != tc.want.UID || l.GID != tc.want.GID || ptr.Deref(l.FSGroup, -1) != ptr.Deref(tc.want.FSGroup, -1) {
				t.Fatalf("layout %+v (fsGroup %v), want %+v", l, ptr.Deref(l.FSGroup, -1), tc.want)
			}
		})
	}
}
