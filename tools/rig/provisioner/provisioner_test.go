package provisioner

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

func claim(name string, size string) *v1.PersistentVolumeClaim {
	return &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "etcd-test", UID: "uid-" + "claim-" + "x"},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes:      []v1.PersistentVolumeAccessMode{v1.ReadWriteOnce},
			StorageClassName: ptr.To(StorageClassName),
			VolumeMode:       ptr.To(v1.PersistentVolumeFilesystem),
			Resources:        v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse(size)}},
		},
	}
}

func class() *storagev1.StorageClass {
	return &storagev1.StorageClass{
		ObjectMeta:    metav1.ObjectMeta{Name: StorageClassName},
		Provisioner:   DriverName,
		ReclaimPolicy: ptr.To(v1.PersistentVolumeReclaimDelete),
	}
}

func TestProvisionDelete(t *testing.T) {
	root := t.TempDir()
	p, err := newHostPath(Config{Kube: fake.NewClientset(), Root: root})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pv, state, err := p.Provision(ctx, controller.ProvisionOptions{StorageClass: class(), PVName: "pvc-1", PVC: claim("snap", "2Gi")})
	if err != nil || state != controller.ProvisioningFinished {
		t.Fatalf("Provision: %v, %s", err, state)
	}
	dir := filepath.Join(root, "pvc-1")
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o777 {
		t.Fatalf("volume directory: %v %v", fi, err)
	}
	if pv.Name != "pvc-1" || pv.Spec.CSI == nil || pv.Spec.CSI.Driver != DriverName || pv.Spec.CSI.VolumeHandle != dir {
		t.Errorf("PV source = %+v, want CSI %s with handle %s", pv.Spec.PersistentVolumeSource, DriverName, dir)
	}
	if got := pv.Spec.Capacity[v1.ResourceStorage]; got.Cmp(resource.MustParse("2Gi")) != 0 {
		t.Errorf("capacity = %s, want 2Gi", got.String())
	}
	if len(pv.Spec.AccessModes) != 1 || pv.Spec.AccessModes[0] != v1.ReadWriteOnce || pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimDelete {
		t.Errorf("access modes %v, reclaim policy %s", pv.Spec.AccessModes, pv.Spec.PersistentVolumeReclaimPolicy)
	}
	if err := os.WriteFile(filepath.Join(dir, "snapshot.db"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Volumes the provisioner did not make are left alone, even of the same driver.
	member := t.TempDir()
	foreign := []*v1.PersistentVolume{
		{Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{Driver: DriverName, VolumeHandle: member}}}},
		{Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{Driver: DriverName, VolumeHandle: root}}}},
		{Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{Driver: DriverName, VolumeHandle: filepath.Join(root, "pvc-1", "..", "..")}}}},
		{Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{Driver: "other.csi.io", VolumeHandle: dir}}}},
		{Spec: v1.PersistentVolumeSpec{PersistentVolumeSource: v1.PersistentVolumeSource{HostPath: &v1.HostPathVolumeSource{Path: dir}}}},
	}
	for i, f := range foreign {
		var ignored *controller.IgnoredError
		if err := p.Delete(ctx, f); !errors.As(err, &ignored) {
			t.Errorf("Delete of foreign volume %d = %v, want IgnoredError", i, err)
		}
	}
	if _, err := os.Stat(member); err != nil {
		t.Errorf("a foreign volume's directory was removed: %v", err)
	}

	if err := p.Delete(ctx, pv); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("volume directory still there after Delete: %v", err)
	}
	if err := p.Delete(ctx, pv); err != nil {
		t.Errorf("second Delete = %v, want nil (already gone)", err)
	}
}

// TestProvisionTmpfs provisions a volume of a class asking for tmpfs: writing past the claim's size
// fails with ENOSPC, Delete unmounts and removes it, and unmountAll leaves no mount behind.
func TestProvisionTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	root := t.TempDir()
	p, err := newHostPath(Config{Kube: fake.NewClientset(), Root: root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.unmountAll)
	sc := class()
	sc.Parameters = map[string]string{FilesystemParameter: FilesystemTmpfs}
	ctx := context.Background()
	pv, _, err := p.Provision(ctx, controller.ProvisionOptions{StorageClass: sc, PVName: "pvc-tmpfs", PVC: claim("snap", "1Mi")})
	if err != nil {
		t.Fatal(err)
	}
	dir := pv.Spec.CSI.VolumeHandle
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if got := int64(st.Blocks) * st.Bsize; got != 1<<20 {
		t.Errorf("volume of 1Mi has %d bytes", got)
	}
	err = os.WriteFile(filepath.Join(dir, "big"), make([]byte, 2<<20), 0o644)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("writing 2 MiB into a 1Mi volume: %v, want ENOSPC", err)
	}
	// A retried Provision of the same PV keeps the mount.
	if _, _, err := p.Provision(ctx, controller.ProvisionOptions{StorageClass: sc, PVName: "pvc-tmpfs", PVC: claim("snap", "1Mi")}); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(ctx, pv); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Errorf("volume directory after Delete: %v", err)
	}

	pv, _, err = p.Provision(ctx, controller.ProvisionOptions{StorageClass: sc, PVName: "pvc-left", PVC: claim("snap", "1Mi")})
	if err != nil {
		t.Fatal(err)
	}
	p.unmountAll()
	if err := syscall.Statfs(pv.Spec.CSI.VolumeHandle, &st); err != nil || int64(st.Blocks)*st.Bsize == 1<<20 {
		t.Errorf("after unmountAll the volume is still a 1Mi filesystem (%v)", err)
	}

	sc.Parameters[FilesystemParameter] = "ext4"
	if _, _, err := p.Provision(ctx, controller.ProvisionOptions{StorageClass: sc, PVName: "pvc-ext4", PVC: claim("snap", "1Mi")}); err == nil {
		t.Error("a class asking for ext4 was provisioned")
	}
}

func TestProvisionRefusals(t *testing.T) {
	p, err := newHostPath(Config{Kube: fake.NewClientset(), Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	withSelector := claim("a", "1Gi")
	withSelector.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"x": "y"}}
	noSize := claim("b", "1Gi")
	noSize.Spec.Resources.Requests = nil
	for name, c := range map[string]*v1.PersistentVolumeClaim{"selector": withSelector, "no size": noSize} {
		if _, _, err := p.Provision(context.Background(), controller.ProvisionOptions{StorageClass: class(), PVName: "pvc-" + name, PVC: c}); err == nil {
			t.Errorf("%s: Provision succeeded, want an error", name)
		}
	}
}

func TestEnsureStorageClass(t *testing.T) {
	ctx := context.Background()
	kube := fake.NewClientset()
	if err := EnsureStorageClass(ctx, kube); err != nil {
		t.Fatal(err)
	}
	sc, err := kube.StorageV1().StorageClasses().Get(ctx, StorageClassName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sc.Provisioner != DriverName || sc.Annotations[defaultClassAnnotation] != "true" ||
		*sc.VolumeBindingMode != storagev1.VolumeBindingImmediate || *sc.ReclaimPolicy != v1.PersistentVolumeReclaimDelete {
		t.Errorf("StorageClass = %+v", sc)
	}
	if err := EnsureStorageClass(ctx, kube); err != nil {
		t.Errorf("second EnsureStorageClass: %v", err)
	}
	other := fake.NewClientset(&storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: StorageClassName}, Provisioner: "x.io"})
	if err := EnsureStorageClass(ctx, other); err == nil {
		t.Error("a class of another provisioner was accepted")
	}
}

// TestRun drives the library's controller against the fake clientset: a claim annotated for this
// provisioner (as the PV controller annotates it) gets a PV and a directory; once the PV is released,
// both go.
func TestRun(t *testing.T) {
	root := t.TempDir()
	kube := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Config{Kube: kube, Root: root}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	c := claim("snap", "1Gi")
	c.UID = "1234"
	c.Annotations = map[string]string{"volume.kubernetes.io/storage-provisioner": DriverName}
	if _, err := kube.CoreV1().PersistentVolumeClaims(c.Namespace).Create(ctx, c, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pv *v1.PersistentVolume
	waitFor(t, "PV pvc-1234", func() bool {
		var err error
		pv, err = kube.CoreV1().PersistentVolumes().Get(ctx, "pvc-1234", metav1.GetOptions{})
		return err == nil
	})
	dir := filepath.Join(root, "pvc-1234")
	if pv.Spec.CSI == nil || pv.Spec.CSI.VolumeHandle != dir || pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.Name != "snap" || pv.Spec.StorageClassName != StorageClassName {
		t.Fatalf("PV = %+v", pv.Spec)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("volume directory: %v", err)
	}

	pv.Status.Phase = v1.VolumeReleased
	if _, err := kube.CoreV1().PersistentVolumes().UpdateStatus(ctx, pv, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "PV and directory deleted", func() bool {
		_, err := kube.CoreV1().PersistentVolumes().Get(ctx, pv.Name, metav1.GetOptions{})
		_, statErr := os.Stat(dir)
		return apierrors.IsNotFound(err) && os.IsNotExist(statErr)
	})
}

// waitFor fails t unless ok holds within 30s.
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return ok(), nil
	})
	if err != nil {
		t.Fatalf("timed out waiting for %s: %v", what, err)
	}
}
