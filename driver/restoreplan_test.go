package driver

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func restoreTestRecord(pvcs ...string) *Record {
	rec := &Record{ID: "etcdgs-" + strings.Repeat("a", 32), Name: "nightly", Group: true, Phase: PhaseReady, Namespace: "etcd", Cluster: "main",
		SHA256: strings.Repeat("b", 64), HashChecked: true, Revision: 120, Keys: 80, SizeBytes: 1 << 20}
	for i := 0; i < 3; i++ {
		name := "main-" + string(rune('0'+i))
		rec.Members = append(rec.Members, MemberRecord{ID: "1" + string(rune('0'+i)), Name: name,
			PeerURLs: []string{"https://" + name + ".main.etcd.svc:2380"}, ClientURLs: []string{"https://" + name + ".main.etcd.svc:2379"}})
	}
	for _, p := range pvcs {
		rec.Sources = append(rec.Sources, SourceRecord{VolumeID: "etcd/" + p, PVC: p})
	}
	return rec
}

func TestPlanInPlace(t *testing.T) {
	withLearner := restoreTestRecord("data-main-0")
	withLearner.Members = append(withLearner.Members, MemberRecord{Name: "main-3", PeerURLs: []string{"https://x:2380"}, IsLearner: true})
	odd := restoreTestRecord("etcd-storage-a")
	cases := []struct {
		name     string
		rec      *Record
		explicit map[string]string
		want     []string // member=pvc
		wantErr  string
	}{
		{name: "group of three", rec: restoreTestRecord("data-main-0", "data-main-1", "data-main-2"), want: []string{"main-0=data-main-0", "main-1=data-main-1", "main-2=data-main-2"}},
		{name: "single snapshot names one PVC, all members follow", rec: restoreTestRecord("data-main-1"), want: []string{"main-0=data-main-0", "main-1=data-main-1", "main-2=data-main-2"}},
		{name: "learner left out", rec: withLearner, want: []string{"main-0=data-main-0", "main-1=data-main-1", "main-2=data-main-2"}},
		{name: "unconventional names need the flag", rec: odd, wantErr: "-member-pvc main-0=<pvc>,main-1=<pvc>,main-2=<pvc>"},
		{name: "explicit mapping", rec: odd, explicit: map[string]string{"main-0": "a", "main-1": "b", "main-2": "c"}, want: []string{"main-0=a", "main-1=b", "main-2=c"}},
		{name: "explicit mapping of an unknown member", rec: odd, explicit: map[string]string{"main-9": "a"}, wantErr: `member "main-9", which is not a voting member`},
		{name: "two members on one PVC", rec: restoreTestRecord("data-main-0"), explicit: map[string]string{"main-1": "data-main-0"}, wantErr: "map to the same PVC"},
		{name: "templates disagree", rec: restoreTestRecord("data-main-0", "wal-main-1"), wantErr: "different claim templates"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := planInPlace(tc.rec, tc.explicit)
			if checkErr(t, err, tc.wantErr) {
				return
			}
			var got []string
			for _, m := range ms {
				got = append(got, m.Name+"="+m.PVC)
				if m.PeerURL != "https://"+m.Name+".main.etcd.svc:2380" {
					t.Errorf("member %s peer URL %q, want the recorded one", m.Name, m.PeerURL)
				}
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("mapping %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPlanNewCluster(t *testing.T) {
	cases := []struct {
		name    string
		spec    newClusterSpec
		want    []string // name pvc url
		wantErr string
	}{
		{name: "default template", spec: newClusterSpec{Namespace: "copy", StatefulSet: "main", Service: "main", ClaimTemplate: "data", Members: 2, PeerURLTemplate: DefaultPeerURLTemplate},
			want: []string{"main-0 data-main-0 https://main-0.main.copy.svc:2380", "main-1 data-main-1 https://main-1.main.copy.svc:2380"}},
		{name: "ordinal in a port", spec: newClusterSpec{Namespace: "n", StatefulSet: "e", ClaimTemplate: "d", Members: 1, PeerURLTemplate: "http://10.0.0.{ordinal}:2380"},
			want: []string{"e-0 d-e-0 http://10.0.0.0:2380"}},
		{name: "explicit URL wins", spec: newClusterSpec{Namespace: "n", StatefulSet: "e", ClaimTemplate: "d", Members: 1, PeerURLTemplate: DefaultPeerURLTemplate, Service: "s", PeerURLs: map[string]string{"e-0": "https://127.0.0.1:4000"}},
			want: []string{"e-0 d-e-0 https://127.0.0.1:4000"}},
		{name: "unknown placeholder", spec: newClusterSpec{Namespace: "n", StatefulSet: "e", ClaimTemplate: "d", Members: 1, PeerURLTemplate: "https://{pod}:2380"}, wantErr: "unknown placeholder {pod}"},
		{name: "empty placeholder", spec: newClusterSpec{Namespace: "n", StatefulSet: "e", ClaimTemplate: "d", Members: 1, PeerURLTemplate: "https://{name}.{service}:2380"}, wantErr: "placeholder {service} has no value"},
		{name: "no port", spec: newClusterSpec{Namespace: "n", StatefulSet: "e", ClaimTemplate: "d", Members: 1, PeerURLTemplate: "https://{name}"}, wantErr: "is not scheme://host:port"},
		{name: "explicit URL of a member that does not exist", spec: newClusterSpec{Namespace: "n", StatefulSet: "e", ClaimTemplate: "d", Members: 1, PeerURLTemplate: DefaultPeerURLTemplate, Service: "s", PeerURLs: map[string]string{"e-5": "https://h:1"}}, wantErr: `member "e-5", which the new cluster does not have`},
		{name: "zero members", spec: newClusterSpec{Namespace: "n", StatefulSet: "e", ClaimTemplate: "d"}, wantErr: "-members must be at least 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := planNewCluster(tc.spec)
			if checkErr(t, err, tc.wantErr) {
				return
			}
			var got []string
			for _, m := range ms {
				got = append(got, m.Name+" "+m.PVC+" "+m.PeerURL)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func etcdStatefulSet(c corev1.Container, psc *corev1.PodSecurityContext) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "main", Namespace: "etcd"},
		Spec: appsv1.StatefulSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			SecurityContext: psc,
			Containers:      []corev1.Container{{Name: "sidecar", Image: "busybox"}, c},
		}}},
	}
}

func TestRestoreJobLayout(t *testing.T) {
	rec := restoreTestRecord("data-main-0", "data-main-1", "data-main-2")
	ms, err := planInPlace(rec, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &restorePlan{ID: "20261201t000000-abcd", Record: rec, Namespace: "etcd", Members: ms, InitialCluster: initialCluster(ms),
		Token: "etcd-restore-20261201t000000-abcd", Layout: memberLayout{DataDir: "data", UID: 1001, GID: 1001}, BumpRevision: DefaultBumpRevision,
		SnapshotClaim: rec.ID, EtcdImage: "etcd:v3.7.3", DriverImage: "driver:dev"}
	job := p.newRestoreJob(1, ms[1])
	if job.Name != "etcd-restore-20261201t000000-abcd-1" || len(job.Name) > 63 {
		t.Errorf("Job name %q", job.Name)
	}
	spec := job.Spec.Template.Spec
	if ptr.Deref(spec.AutomountServiceAccountToken, true) || spec.ServiceAccountName != "" {
		t.Error("the restore pod must not get a service account token")
	}
	if sc := spec.SecurityContext; !ptr.Deref(sc.RunAsNonRoot, false) || ptr.Deref(sc.RunAsUser, 0) != 1001 || ptr.Deref(sc.FSGroup, 0) != 1001 {
		t.Errorf("pod security context %+v: want non-root uid 1001 with fsGroup 1001", sc)
	}
	var names []string
	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		names = append(names, c.Name)
		sc := c.SecurityContext
		if !ptr.Deref(sc.ReadOnlyRootFilesystem, false) || ptr.Deref(sc.AllowPrivilegeEscalation, true) || len(sc.Capabilities.Drop) == 0 {
			t.Errorf("container %s is not hardened: %+v", c.Name, sc)
		}
		if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
			t.Errorf("container %s has no requests and limits", c.Name)
		}
	}
	if strings.Join(names, ",") != "verify,prepare,restore,swap" {
		t.Fatalf("containers %v, want verify, prepare, restore, swap in that order", names)
	}
	restore := strings.Join(spec.InitContainers[2].Args, " ")
	for _, want := range []string{
		"snapshot restore /var/lib/etcd-snapshot/snapshot.db",
		"--data-dir=/var/lib/etcd-member/data.restore-20261201t000000-abcd",
		"--name=main-1",
		"--initial-cluster=main-0=https://main-0.main.etcd.svc:2380,main-1=https://main-1.main.etcd.svc:2380,main-2=https://main-2.main.etcd.svc:2380",
		"--initial-cluster-token=etcd-restore-20261201t000000-abcd",
		"--initial-advertise-peer-urls=https://main-1.main.etcd.svc:2380",
		"--bump-revision=1000000000 --mark-compacted",
	} {
		if !strings.Contains(restore, want) {
			t.Errorf("etcdutl args %q lack %q", restore, want)
		}
	}
	if v := strings.Join(spec.InitContainers[0].Args, " "); !strings.Contains(v, "-sha256="+rec.SHA256) {
		t.Errorf("verify args %q do not check the recorded sha256", v)
	}
	for _, v := range spec.Volumes {
		if v.Name == snapshotVolume && (v.PersistentVolumeClaim.ClaimName != rec.ID || !v.PersistentVolumeClaim.ReadOnly) {
			t.Errorf("snapshot volume %+v: want the snapshot PVC, read-only", v.PersistentVolumeClaim)
		}
		if v.Name == memberVolume && v.PersistentVolumeClaim.ClaimName != "data-main-1" {
			t.Errorf("member volume %+v: want data-main-1", v.PersistentVolumeClaim)
		}
	}
	if job.Spec.ActiveDeadlineSeconds == nil || *job.Spec.ActiveDeadlineSeconds != jobDeadline(rec.SizeBytes) {
		t.Errorf("deadline %v, want the size-scaled %d", job.Spec.ActiveDeadlineSeconds, jobDeadline(rec.SizeBytes))
	}

	// verify reads the same file as in the snapshot Job, so it gets the same memory: 256Mi plus a
	// sixteenth of the file (verifyMemoryLimit, job.go).
	big := *rec
	big.SizeBytes = 8 << 30
	bp := *p
	bp.Record = &big
	if got := bp.newRestoreJob(0, ms[0]).Spec.Template.Spec.InitContainers[0].Resources.Limits.Memory(); got.Cmp(resource.MustParse("768Mi")) != 0 {
		t.Errorf("verify memory limit for an 8 GiB snapshot = %s, want 768Mi", got)
	}

	p.BumpRevision = 0
	if a := strings.Join(p.newRestoreJob(0, ms[0]).Spec.Template.Spec.InitContainers[2].Args, " "); strings.Contains(a, "bump") || strings.Contains(a, "compacted") {
		t.Errorf("-bump-revision 0 must drop both flags: %q", a)
	}
}
