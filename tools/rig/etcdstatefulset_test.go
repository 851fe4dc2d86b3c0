package rig_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig/provisioner"
)

// TestE2EEtcdStatefulSet runs an etcd cluster as a real StatefulSet: the StatefulSet controller
// creates the pods and the PVCs (provisioned as CSI PVs of the other driver name), each pod's process
// is etcd itself, scaling to 0 really stops the members and scaling back brings the same members
// back with their data, and the driver snapshots the cluster through the upstream controllers.
func TestE2EEtcdStatefulSet(t *testing.T) {
	r, ctx := startRig(t, 10*time.Minute, rig.ForTest)

	// In a namespace of its own, which StartEtcdStatefulSet creates, so that the snapshot below also
	// proves the credentials RoleBinding that InstallSnapshotClasses copies there.
	const name, namespace = "sts", "etcd-sts"
	begin := time.Now()
	s, err := r.StartEtcdStatefulSet(ctx, name, namespace, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("3-member StatefulSet up in %s", time.Since(begin).Round(100*time.Millisecond))
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer dcancel()
		if err := s.Delete(dctx); err != nil {
			t.Errorf("delete: %v", err)
		}
	})

	cli, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	const n = 50
	for i := range n {
		k, v := rig.SampleKV("/sts/", i)
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	before := memberNames(ctx, t, cli)
	for i := range s.Members() {
		if want := fmt.Sprintf("=%s [%s]", s.MemberName(i), s.PeerURLs()[i]); !strings.Contains(before, want) {
			t.Errorf("member list %s lacks member %d as %q", before, i, want)
		}
	}

	set, err := r.Kube.AppsV1().StatefulSets(s.Namespace()).Get(ctx, s.StatefulSetName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("PodTemplateAsRestoreReadsIt", func(t *testing.T) {
		checkTemplate(t, set)
	})
	t.Run("ClaimsFromTheController", func(t *testing.T) {
		checkClaims(ctx, t, r, s, set)
	})
	pids := memberPIDs(ctx, t, r, s)
	t.Run("PodProcessIsEtcd", func(t *testing.T) {
		for i, pid := range pids {
			exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			if err != nil {
				t.Fatalf("pod %s: process %d: %v", s.MemberName(i), pid, err)
			}
			if filepath.Base(exe) != "etcd" {
				t.Errorf("pod %s runs %s, want etcd itself (the launcher must exec it)", s.MemberName(i), exe)
			}
			args := rig.ProcessArgs(pid)
			dir, err := s.HostVolumeDir(ctx, i)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"--name=" + s.MemberName(i), "--data-dir=" + filepath.Join(dir, s.DataDirInVolume())} {
				if !slices.Contains(args, want) {
					t.Errorf("pod %s: etcd runs with %q, want %s", s.MemberName(i), args, want)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, s.DataDirInVolume(), "member", "snap", "db")); err != nil {
				t.Errorf("member %s has no database in its volume: %v", s.MemberName(i), err)
			}
		}
	})

	// Scale to 0: every pod gone, every etcd process exited, the claims kept.
	begin = time.Now()
	if err := s.ScaleAndWait(ctx, 0); err != nil {
		t.Fatal(err)
	}
	t.Logf("scaled to 0 in %s", time.Since(begin).Round(100*time.Millisecond))
	for i, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("etcd of %s (pid %d) still exists after scaling to 0: %v", s.MemberName(i), pid, err)
		}
	}
	for i := range s.Members() {
		pvc, err := r.Kube.CoreV1().PersistentVolumeClaims(s.Namespace()).Get(ctx, s.ClaimName(i), metav1.GetOptions{})
		if err != nil || pvc.Status.Phase != v1.ClaimBound {
			t.Errorf("PVC %s after scaling to 0: %v %v; want it kept and Bound", s.ClaimName(i), err, pvc.Status.Phase)
		}
	}
	gctx, gcancel := context.WithTimeout(ctx, 3*time.Second)
	if _, err := cli.Get(gctx, "/sts/", clientv3.WithPrefix()); err == nil {
		t.Error("the cluster answers a read with every pod gone")
	}
	gcancel()

	// Scale back: the same members, their data, new processes.
	begin = time.Now()
	if err := s.ScaleAndWait(ctx, 3); err != nil {
		t.Fatal(err)
	}
	t.Logf("scaled back to 3 in %s", time.Since(begin).Round(100*time.Millisecond))
	checkSampleKeys(ctx, t, cli, "/sts/", n, "after the restart")
	if after := memberNames(ctx, t, cli); after != before {
		t.Errorf("members after the restart %s, before %s", after, before)
	}
	for i, pid := range memberPIDs(ctx, t, r, s) {
		if pid == pids[i] {
			t.Errorf("pod %s runs the same process %d as before scaling to 0", s.MemberName(i), pid)
		}
	}

	t.Run("GroupSnapshot", func(t *testing.T) {
		groupSnapshotOf(ctx, t, r, s, n)
	})

	var snapshotFile string
	snapshotDir := t.TempDir() // outlives the subtest that saves the snapshot
	t.Run("RestoreByHand", func(t *testing.T) {
		snapshotFile = restoreByHand(ctx, t, r, s, cli, n, snapshotDir)
	})
	t.Run("RestoreIntoNewCluster", func(t *testing.T) {
		if snapshotFile == "" {
			t.Skip("no snapshot: RestoreByHand failed")
		}
		restoreIntoNewCluster(ctx, t, r, snapshotFile, n)
	})

	t.Run("SameNameRefusedUntouched", func(t *testing.T) {
		_, err := r.StartEtcdStatefulSet(ctx, name, namespace, 3)
		if err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("second StartEtcdStatefulSet of %s/%s: %v; want an already-exists refusal", namespace, name, err)
		}
		// The failed start deleted nothing of the running cluster.
		for _, get := range []func() error{
			func() error {
				_, err := r.Kube.CoreV1().ConfigMaps(namespace).Get(ctx, name+"-members", metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := r.Kube.CoreV1().Secrets(namespace).Get(ctx, s.SecretName(), metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := r.Kube.CoreV1().Services(namespace).Get(ctx, s.ServiceName(), metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := r.Kube.AppsV1().StatefulSets(namespace).Get(ctx, name, metav1.GetOptions{})
				return err
			},
		} {
			if err := get(); err != nil {
				t.Errorf("after the refused start: %v", err)
			}
		}
		if _, err := cli.Put(ctx, "/sts-after-refusal", "x"); err != nil {
			t.Errorf("the running cluster after the refused start: %v", err)
		}
	})

	t.Run("FailedStartCleansUp", func(t *testing.T) {
		// No such class: the PVCs stay Pending and Start gives up when its context ends. A claim that
		// existed before (as a restore into a new cluster makes them) must survive the clean-up.
		bad, err := r.PrepareEtcdStatefulSet(ctx, "sts-bad", namespace, rig.EtcdStatefulSetOptions{Members: 2, StorageClass: "no-such-class"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			dctx, dcancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer dcancel()
			if err := bad.Delete(dctx); err != nil {
				t.Errorf("delete: %v", err)
			}
		})
		kept := &v1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: bad.ClaimName(1), Namespace: namespace},
			Spec: v1.PersistentVolumeClaimSpec{
				AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
				StorageClassName: ptr.To("no-such-class"),
				Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
			},
		}
		if _, err := r.Kube.CoreV1().PersistentVolumeClaims(namespace).Create(ctx, kept, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
		err = bad.Start(sctx)
		scancel()
		if err == nil {
			t.Fatal("Start on claims that never bind: no error")
		}
		t.Logf("Start failed as expected: %.200s", err)
		if _, err := r.Kube.AppsV1().StatefulSets(namespace).Get(ctx, bad.Name(), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("StatefulSet after the failed Start: %v, want NotFound", err)
		}
		if _, err := r.Kube.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, bad.ClaimName(0), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("PVC %s made by the controller after the failed Start: %v, want NotFound", bad.ClaimName(0), err)
		}
		if got, err := r.Kube.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, bad.ClaimName(1), metav1.GetOptions{}); err != nil || got.DeletionTimestamp != nil {
			t.Errorf("PVC %s that existed before Start: %v (deleting %v), want it kept", bad.ClaimName(1), err, got.DeletionTimestamp)
		}
		if _, err := r.Kube.CoreV1().Secrets(namespace).Get(ctx, bad.SecretName(), metav1.GetOptions{}); err != nil {
			t.Errorf("Prepare's Secret after the failed Start: %v, want it kept for the caller's Delete", err)
		}
	})

	t.Run("DataDirFromEnv", func(t *testing.T) {
		one, err := r.PrepareEtcdStatefulSet(ctx, "sts-env", r.Namespace, rig.EtcdStatefulSetOptions{
			Members:        1,
			DataDirFromEnv: true,
			ClaimRetention: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
				WhenDeleted: appsv1.DeletePersistentVolumeClaimRetentionPolicyType,
				WhenScaled:  appsv1.RetainPersistentVolumeClaimRetentionPolicyType,
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			dctx, dcancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer dcancel()
			if err := one.Delete(dctx); err != nil {
				t.Errorf("delete: %v", err)
			}
		})
		if err := one.Start(ctx); err != nil {
			t.Fatal(err)
		}
		set, err := r.Kube.AppsV1().StatefulSets(one.Namespace()).Get(ctx, one.StatefulSetName(), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c := set.Spec.Template.Spec.Containers[0]
		if env := envValue(c.Env, "ETCD_DATA_DIR"); env != rig.EtcdDataDir || hasPrefixArg(c.Args, "--data-dir") {
			t.Errorf("container env ETCD_DATA_DIR=%q args %q: want the data dir only in the environment", env, c.Args)
		}
		dir, err := one.HostVolumeDir(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, one.DataDirInVolume(), "member", "snap", "db")); err != nil {
			t.Errorf("etcd did not use ETCD_DATA_DIR in its volume: %v", err)
		}
		// WhenDeleted=Delete: the StatefulSet owns its claim (set by the controller, perhaps after the
		// pod started).
		var owners []metav1.OwnerReference
		err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			pvc, err := r.Kube.CoreV1().PersistentVolumeClaims(one.Namespace()).Get(ctx, one.ClaimName(0), metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			owners = pvc.OwnerReferences
			return len(owners) == 1 && owners[0].Kind == "StatefulSet" && owners[0].UID == set.UID, nil
		})
		if err != nil {
			t.Errorf("PVC %s owners %+v, want the StatefulSet %s (WhenDeleted=Delete)", one.ClaimName(0), owners, set.Name)
		}

		// Delete leaves nothing: no pod, no claim, no volume directory.
		if err := one.Delete(ctx); err != nil {
			t.Fatal(err)
		}
		err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := os.Stat(dir)
			return errors.Is(err, os.ErrNotExist), nil
		})
		if err != nil {
			t.Errorf("volume directory %s still exists a minute after Delete", dir)
		}
		for _, what := range []func() error{
			func() error {
				_, err := r.Kube.AppsV1().StatefulSets(one.Namespace()).Get(ctx, one.Name(), metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := r.Kube.CoreV1().Services(one.Namespace()).Get(ctx, one.ServiceName(), metav1.GetOptions{})
				return err
			},
			func() error {
				_, err := r.Kube.CoreV1().Secrets(one.Namespace()).Get(ctx, one.SecretName(), metav1.GetOptions{})
				return err
			},
		} {
			if err := what(); !apierrors.IsNotFound(err) {
				t.Errorf("after Delete: %v, want NotFound", err)
			}
		}
	})
}

// restoreByHand does on the host what restore's Jobs will do, following etcd's disaster-recovery
// procedure: save a snapshot, scale to 0, `etcdutl snapshot restore` each member (its name and peer
// URL, the shared initial cluster, a new token, a revision bump) beside its data dir, swap, scale back.
// The restored cluster must hold exactly the snapshot's keys with its members' names and peer URLs:
// the launcher's initial-cluster flags are ignored for a data dir that holds a member.
func restoreByHand(ctx context.Context, t *testing.T, r *rig.Rig, s *rig.EtcdStatefulSet, cli *clientv3.Client, keys int, dir string) (snapshotFile string) {
	t.Helper()
	file := filepath.Join(dir, "snapshot.db")
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(file)
	if err == nil {
		_, err = io.Copy(out, rc)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	status, err := cli.Status(ctx, s.ClientURLs()[0])
	if err != nil {
		t.Fatal(err)
	}
	before := memberNames(ctx, t, cli)
	if _, err := cli.Put(ctx, "/sts/after-snapshot", "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, "/sts/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}

	if err := s.ScaleAndWait(ctx, 0); err != nil {
		t.Fatal(err)
	}
	const bump = 1000000000
	for i := range s.Members() {
		vol, err := s.HostVolumeDir(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		restoreMember(ctx, t, r, s, i, file, bump, vol)
	}
	if err := s.ScaleAndWait(ctx, s.Members()); err != nil {
		t.Fatal(err)
	}

	resp := checkSampleKeys(ctx, t, cli, "/sts/", keys, "after the restore")
	if resp.Header.Revision < status.Header.Revision+bump {
		t.Errorf("revision %d after the restore, want at least the snapshot's %d + %d", resp.Header.Revision, status.Header.Revision, bump)
	}
	// Member ids change with the new token; names and peer URLs must not.
	stripIDs := func(list string) []string {
		var out []string
		for _, m := range strings.Split(list, "; ") {
			_, rest, _ := strings.Cut(m, "=")
			out = append(out, rest)
		}
		slices.Sort(out)
		return out
	}
	if after := memberNames(ctx, t, cli); !slices.Equal(stripIDs(after), stripIDs(before)) || after == before {
		t.Errorf("members after the restore %s, before %s: want the same names and peer URLs under new ids", after, before)
	}
	return file
}

// restoreMember restores file as member i of s into <vol>/<data dir>, moving an existing data dir
// aside, as etcd's recovery guide does per member.
func restoreMember(ctx context.Context, t *testing.T, r *rig.Rig, s *rig.EtcdStatefulSet, i int, file string, bump int, vol string) {
	t.Helper()
	restored := filepath.Join(vol, s.DataDirInVolume()+".restored")
	cmd := exec.CommandContext(ctx, filepath.Join(r.BinDir, "etcdutl"), "snapshot", "restore", file,
		"--name="+s.MemberName(i),
		"--initial-cluster="+s.InitialCluster(),
		"--initial-cluster-token=restored-"+s.Name(),
		"--initial-advertise-peer-urls="+s.PeerURLs()[i],
		"--data-dir="+restored,
		"--bump-revision="+strconv.Itoa(bump), "--mark-compacted")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("etcdutl snapshot restore for %s: %v\n%s", s.MemberName(i), err, out)
	}
	data := filepath.Join(vol, s.DataDirInVolume())
	if _, err := os.Stat(data); err == nil {
		if err := os.Rename(data, data+".before-restore"); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(restored, data); err != nil {
		t.Fatal(err)
	}
}

// restoreIntoNewCluster restores file into PVCs made before the StatefulSet, in another namespace,
// as restore's new-cluster target makes them: Prepare fixes the new members' names and URLs, the
// claims are created and filled, and Start's StatefulSet adopts them.
func restoreIntoNewCluster(ctx context.Context, t *testing.T, r *rig.Rig, file string, keys int) {
	t.Helper()
	s, err := r.PrepareEtcdStatefulSet(ctx, "sts-new", "etcd-sts-new", rig.EtcdStatefulSetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer dcancel()
		if err := s.Delete(dctx); err != nil {
			t.Errorf("delete: %v", err)
		}
	})
	pvcs := r.Kube.CoreV1().PersistentVolumeClaims(s.Namespace())
	for i := range s.Members() {
		pvc := &v1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: s.ClaimName(i), Labels: map[string]string{rig.ClusterLabel: s.Name()}},
			Spec: v1.PersistentVolumeClaimSpec{
				AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
				StorageClassName: ptr.To(r.StorageClass),
				Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("1Gi")}},
			},
		}
		if _, err := pvcs.Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var uids []string
	for i := range s.Members() {
		var pvc *v1.PersistentVolumeClaim
		err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			pvc, err = pvcs.Get(ctx, s.ClaimName(i), metav1.GetOptions{})
			return err == nil && pvc.Status.Phase == v1.ClaimBound, nil
		})
		if err != nil {
			t.Fatalf("PVC %s not Bound: %v", s.ClaimName(i), err)
		}
		uids = append(uids, string(pvc.UID))
		vol, err := s.HostVolumeDir(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		restoreMember(ctx, t, r, s, i, file, 1000, vol)
	}
	begin := time.Now()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("StatefulSet on restored claims up in %s", time.Since(begin).Round(100*time.Millisecond))
	for i := range s.Members() {
		pvc, err := pvcs.Get(ctx, s.ClaimName(i), metav1.GetOptions{})
		if err != nil || string(pvc.UID) != uids[i] {
			t.Errorf("PVC %s after Start: %v, uid %s; want the claim made before (uid %s) adopted", s.ClaimName(i), err, pvc.UID, uids[i])
		}
	}
	cli, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, "/sts/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != keys {
		t.Errorf("%d keys in the new cluster, want the snapshot's %d", len(resp.Kvs), keys)
	}
	names := memberNames(ctx, t, cli)
	for i := range s.Members() {
		if want := fmt.Sprintf("=%s [%s]", s.MemberName(i), s.PeerURLs()[i]); !strings.Contains(names, want) {
			t.Errorf("new cluster's members %s lack %q", names, want)
		}
	}
}

// checkTemplate checks the pod template shows what restore reads: the container "etcd" with
// --data-dir inside the mount of the claim template "data", and the user etcd runs as.
func checkTemplate(t *testing.T, set *appsv1.StatefulSet) {
	t.Helper()
	spec := set.Spec.Template.Spec
	if len(spec.Containers) != 1 || spec.Containers[0].Name != rig.EtcdContainerName {
		t.Fatalf("containers %v, want one named %s", spec.Containers, rig.EtcdContainerName)
	}
	c := spec.Containers[0]
	if !slices.Contains(c.Args, "--data-dir="+rig.EtcdDataDir) {
		t.Errorf("etcd container args %q lack --data-dir=%s", c.Args, rig.EtcdDataDir)
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		if m.Name == rig.EtcdClaimTemplate && m.MountPath == rig.EtcdDataMountPath {
			mounted = true
		}
	}
	if !mounted || !strings.HasPrefix(rig.EtcdDataDir, rig.EtcdDataMountPath+"/") {
		t.Errorf("volume mounts %v: want %s at %s, holding the data dir %s", c.VolumeMounts, rig.EtcdClaimTemplate, rig.EtcdDataMountPath, rig.EtcdDataDir)
	}
	sc := spec.SecurityContext
	if sc == nil || ptr.Deref(sc.RunAsUser, 0) != rig.EtcdUID || ptr.Deref(sc.RunAsGroup, 0) != rig.EtcdUID || ptr.Deref(sc.FSGroup, 0) != rig.EtcdUID {
		t.Errorf("pod security context %+v, want runAsUser, runAsGroup and fsGroup %d", sc, rig.EtcdUID)
	}
	if set.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy %s, want Parallel", set.Spec.PodManagementPolicy)
	}
	if len(set.Spec.VolumeClaimTemplates) != 1 || set.Spec.VolumeClaimTemplates[0].Labels[rig.ClusterLabel] != set.Name {
		t.Errorf("volumeClaimTemplates %v, want one labelled %s=%s", set.Spec.VolumeClaimTemplates, rig.ClusterLabel, set.Name)
	}
}

// checkClaims checks that the StatefulSet controller made the cluster's PVCs and pods and that the
// provisioner bound the claims to CSI PVs of the rig's storage driver, not this driver.
func checkClaims(ctx context.Context, t *testing.T, r *rig.Rig, s *rig.EtcdStatefulSet, set *appsv1.StatefulSet) {
	t.Helper()
	pvcs, err := r.Kube.CoreV1().PersistentVolumeClaims(s.Namespace()).List(ctx, metav1.ListOptions{LabelSelector: s.Selector()})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, pvc := range pvcs.Items {
		names[pvc.Name] = true
		if m := pvc.ManagedFields; len(m) == 0 || m[0].Manager != "kube-controller-manager" || m[0].Operation != metav1.ManagedFieldsOperationUpdate {
			t.Errorf("PVC %s was first written by %v, want the kube-controller-manager", pvc.Name, managers(m))
		}
		// Under the default retention policy (Retain, Retain) nothing owns a StatefulSet's PVCs: restore
		// must find the StatefulSet by the claim's name, not by an owner reference.
		if len(pvc.OwnerReferences) != 0 {
			t.Errorf("PVC %s has owners %v under the default claim retention policy", pvc.Name, pvc.OwnerReferences)
		}
		if pvc.Status.Phase != v1.ClaimBound {
			t.Errorf("PVC %s is %s", pvc.Name, pvc.Status.Phase)
			continue
		}
		pv, err := r.Kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != provisioner.DriverName || pv.Spec.CSI.Driver == r.DriverName {
			t.Errorf("PV %s of %s: source %+v, want a CSI volume of %s", pv.Name, pvc.Name, pv.Spec.PersistentVolumeSource, provisioner.DriverName)
		}
		if by := pv.Annotations["pv.kubernetes.io/provisioned-by"]; by != provisioner.DriverName {
			t.Errorf("PV %s provisioned by %q, want the rig's provisioner %s", pv.Name, by, provisioner.DriverName)
		}
	}
	for i := range s.Members() {
		if !names[s.ClaimName(i)] {
			t.Errorf("no PVC %s labelled %s; have %v", s.ClaimName(i), s.Selector(), names)
		}
	}
	if len(names) != s.Members() {
		t.Errorf("PVCs %v, want exactly %d", names, s.Members())
	}

	// The controller says so in its events: "Create Claim data-sts-0 Pod sts-0 in StatefulSet sts
	// success". Events are written asynchronously, hence the wait.
	var want []string
	for i := range s.Members() {
		want = append(want, fmt.Sprintf("Create Claim %s Pod %s in StatefulSet %s success", s.ClaimName(i), s.MemberName(i), set.Name))
	}
	var seen []string
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		events, err := r.Kube.CoreV1().Events(s.Namespace()).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		seen = seen[:0]
		for _, e := range events.Items {
			if e.InvolvedObject.Kind == "StatefulSet" && e.InvolvedObject.Name == set.Name {
				seen = append(seen, e.Reason+": "+e.Message)
			}
		}
		for _, w := range want {
			if !slices.Contains(seen, "SuccessfulCreate: "+w) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Errorf("StatefulSet events %q, want SuccessfulCreate %q", seen, want)
	}

	for i := range s.Members() {
		pod, err := r.Kube.CoreV1().Pods(s.Namespace()).Get(ctx, s.MemberName(i), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		owner := metav1.GetControllerOf(pod)
		if owner == nil || owner.Kind != "StatefulSet" || owner.UID != set.UID {
			t.Errorf("pod %s controlled by %+v, want StatefulSet %s", pod.Name, owner, set.Name)
		}
		claim := ""
		for _, vol := range pod.Spec.Volumes {
			if vol.Name == rig.EtcdClaimTemplate && vol.PersistentVolumeClaim != nil {
				claim = vol.PersistentVolumeClaim.ClaimName
			}
		}
		if claim != s.ClaimName(i) {
			t.Errorf("pod %s mounts claim %q as %s, want %s", pod.Name, claim, rig.EtcdClaimTemplate, s.ClaimName(i))
		}
	}
}

func managers(m []metav1.ManagedFieldsEntry) []string {
	var out []string
	for _, e := range m {
		out = append(out, e.Manager+"/"+string(e.Operation))
	}
	return out
}

// memberPIDs reads each member pod's process id from its container id (rig://<pid>).
func memberPIDs(ctx context.Context, t *testing.T, r *rig.Rig, s *rig.EtcdStatefulSet) []int {
	t.Helper()
	var pids []int
	for i := range s.Members() {
		pod, err := r.Kube.CoreV1().Pods(s.Namespace()).Get(ctx, s.MemberName(i), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var id string
		for _, cs := range pod.Status.ContainerStatuses {
			if cs.Name == rig.EtcdContainerName && cs.State.Running != nil {
				id = cs.ContainerID
			}
		}
		pid, err := strconv.Atoi(strings.TrimPrefix(id, "rig://"))
		if err != nil {
			t.Fatalf("pod %s: container id %q is not rig://<pid>", pod.Name, id)
		}
		pids = append(pids, pid)
	}
	return pids
}

// memberNames is the cluster's member list as "id=name peerURLs" lines, sorted by id.
func memberNames(ctx context.Context, t *testing.T, cli *clientv3.Client) string {
	t.Helper()
	resp, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, m := range resp.Members {
		lines = append(lines, fmt.Sprintf("%x=%s %v", m.ID, m.Name, m.PeerURLs))
	}
	if len(lines) != 3 {
		t.Fatalf("member list %v, want 3 members", lines)
	}
	slices.Sort(lines)
	return strings.Join(lines, "; ")
}

// groupSnapshotOf takes a dynamic VolumeGroupSnapshot of the StatefulSet's PVCs with the classes
// InstallSnapshotClasses makes for it, and checks the driver's record.
func groupSnapshotOf(ctx context.Context, t *testing.T, r *rig.Rig, s *rig.EtcdStatefulSet, keys int) {
	t.Helper()
	if err := s.InstallSnapshotClasses(ctx); err != nil {
		t.Fatal(err)
	}
	class, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotClasses().Get(ctx, s.SnapshotClassName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if class.Driver != r.DriverName || class.Parameters["csi.storage.k8s.io/group-snapshotter-secret-name"] != s.SecretName() ||
		class.Parameters["csi.storage.k8s.io/group-snapshotter-secret-namespace"] != s.Namespace() {
		t.Errorf("class %s: driver %s parameters %v, want %s with the Secret %s/%s", class.Name, class.Driver, class.Parameters, r.DriverName, s.Namespace(), s.SecretName())
	}
	const name = "sts-group"
	begin := time.Now()
	if _, err := s.CreateGroupSnapshot(ctx, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer dcancel()
		if err := r.DeleteGroupSnapshotIn(dctx, s.Namespace(), name); err != nil {
			t.Errorf("delete VolumeGroupSnapshot: %v", err)
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer wcancel()
	ready, err := r.WaitGroupSnapshotReadyIn(wctx, s.Namespace(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("group snapshot of the StatefulSet ready in %s", time.Since(begin).Round(100*time.Millisecond))
	rec, err := r.GroupSnapshotRecord(ctx, ready)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Cluster != s.Name() || rec.Namespace != s.Namespace() || len(rec.Sources) != s.Members() {
		t.Errorf("record of cluster %s/%s with %d sources, want %s/%s with %d", rec.Namespace, rec.Cluster, len(rec.Sources), s.Namespace(), s.Name(), s.Members())
	}
	var names []string
	for _, m := range rec.Members {
		names = append(names, m.Name)
	}
	slices.Sort(names)
	if want := []string{s.MemberName(0), s.MemberName(1), s.MemberName(2)}; !slices.Equal(names, want) {
		t.Errorf("record members %v, want %v", names, want)
	}
	if rec.Keys < int64(keys) {
		t.Errorf("record counts %d keys, want at least the %d written", rec.Keys, keys)
	}
}

func hasPrefixArg(args []string, flag string) bool {
	for _, a := range args {
		if a == flag || strings.HasPrefix(a, flag+"=") {
			return true
		}
	}
	return false
}

func envValue(env []v1.EnvVar, name string) string {
	for _, e := range env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// checkSampleKeys fails t unless the keys under prefix are the first n sample keys (rig.SampleKV) in
// order, and returns what the read answered; when names the moment, for the messages.
func checkSampleKeys(ctx context.Context, t *testing.T, cli *clientv3.Client, prefix string, n int, when string) *clientv3.GetResponse {
	t.Helper()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != n {
		t.Errorf("%d keys under %s %s, want %d", len(resp.Kvs), prefix, when, n)
	}
	for i, kv := range resp.Kvs {
		if k, v := rig.SampleKV(prefix, i); string(kv.Key) != k || string(kv.Value) != v {
			t.Errorf("%s: key %d = %s=%s, want %s=%s", when, i, kv.Key, kv.Value, k, v)
			break
		}
	}
	return resp
}
