// Package provisioner stands in for the rig's storage backend: a dynamic provisioner, built on
// sig-storage-lib-external-provisioner as real provisioners are, whose volumes are host directories
// exposed as CSI PersistentVolumes of the driver hostpath.csi.k8s.io.
package provisioner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

const (
	// DriverName is the CSI driver name of the rig's storage, and the provisioner name of its class.
	DriverName = "hostpath.csi.k8s.io"
	// StorageClassName is the rig's default StorageClass.
	StorageClassName = "rig-hostpath"

	// FilesystemParameter is a StorageClass parameter of this provisioner. With FilesystemTmpfs each
	// volume is a tmpfs of exactly the claim's size mounted on its directory, so that writing past the
	// size fails with ENOSPC as on a real volume; without it a volume is a plain directory on the host's
	// filesystem, bounded by nothing (benchmarks write GiB files there). Mounting needs root.
	FilesystemParameter = "rig.local/filesystem"
	// FilesystemTmpfs is the value of FilesystemParameter for size-limited volumes.
	FilesystemTmpfs = "tmpfs"

	defaultClassAnnotation = "storageclass.kubernetes.io/is-default-class"
)

// Config says which cluster to serve and where volumes live.
type Config struct {
	Kube kubernetes.Interface
	Root string    // volumes are directories <Root>/<pv name>
	Log  io.Writer // provisioning events; nil discards them (the library itself logs through klog)
}

// Provisioner is a provision controller built by New and not yet running.
type Provisioner struct {
	p    *hostPath
	kube kubernetes.Interface
	pc   *controller.ProvisionController
}

// New builds the provisioner without contacting the API server. The library's
// NewProvisionController registers core/v1 in client-go's global scheme.Scheme
// (controller/controller.go, v1.AddToScheme(scheme.Scheme)): map writes that race with any typed
// client decoding a response in this process. Call New before other goroutines use typed clients.
func New(ctx context.Context, cfg Config) (*Provisioner, error) {
	p, err := newHostPath(cfg)
	if err != nil {
		return nil, err
	}
	pc := controller.NewProvisionController(ctx, cfg.Kube, DriverName, p,
		// One process serves the rig; leader election would only add a Lease and a delay.
		controller.LeaderElection(false),
		// The library's default first retry after a failure is 15s; a rig test should not wait that long.
		controller.RateLimiter(workqueue.NewTypedItemExponentialFailureRateLimiter[string](500*time.Millisecond, 30*time.Second)),
		controller.FailedProvisionThreshold(0),
		controller.FailedDeleteThreshold(0),
		// Keep the PV object until its directory is gone, as CSI's external-provisioner does.
		controller.AddFinalizer(true),
		controller.ResyncPeriod(5*time.Minute),
	)
	return &Provisioner{p: p, kube: cfg.Kube, pc: pc}, nil
}

// Run ensures the StorageClass exists and provisions and deletes volumes until ctx ends.
func (v *Provisioner) Run(ctx context.Context) error {
	if err := EnsureStorageClass(ctx, v.kube); err != nil {
		return err
	}
	v.p.logf("provisioning %s volumes under %s", DriverName, v.p.root)
	// Volumes still mounted when the rig stops are unmounted, so that its directory can be removed.
	defer v.p.unmountAll()
	v.pc.Run(ctx)
	return nil
}

// Run builds a provisioner (see New) and runs it until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	v, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	return v.Run(ctx)
}

// EnsureStorageClass creates the rig's default StorageClass unless one of that name exists; an
// existing class of another provisioner is an error.
func EnsureStorageClass(ctx context.Context, kube kubernetes.Interface) error {
	sc := &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: StorageClassName, Annotations: map[string]string{defaultClassAnnotation: "true"}},
		Provisioner:       DriverName,
		ReclaimPolicy:     ptr.To(v1.PersistentVolumeReclaimDelete),
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}
	_, err := kube.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("provisioner: create StorageClass %s: %w", StorageClassName, err)
	}
	existing, err := kube.StorageV1().StorageClasses().Get(ctx, StorageClassName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("provisioner: get StorageClass %s: %w", StorageClassName, err)
	}
	if existing.Provisioner != DriverName {
		return fmt.Errorf("provisioner: StorageClass %s exists with provisioner %q, not %q", StorageClassName, existing.Provisioner, DriverName)
	}
	return nil
}

// hostPath is the controller.Provisioner of the rig.
type hostPath struct {
	root string
	log  io.Writer

	mu     sync.Mutex
	mounts map[string]bool // volume directories with a tmpfs mounted by this provisioner
}

var _ controller.Provisioner = (*hostPath)(nil)

func newHostPath(cfg Config) (*hostPath, error) {
	if cfg.Kube == nil {
		return nil, errors.New("provisioner: Config.Kube is required")
	}
	if cfg.Root == "" {
		return nil, errors.New("provisioner: Config.Root is required")
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("provisioner: root: %w", err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("provisioner: root: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = io.Discard
	}
	return &hostPath{root: root, log: log, mounts: map[string]bool{}}, nil
}

func (p *hostPath) logf(format string, args ...any) {
	fmt.Fprintf(p.log, time.Now().Format("15:04:05.000")+" provisioner: "+format+"\n", args...)
}

// Provision creates <root>/<pv name> and returns a CSI PV for it with the claim's size and access modes.
func (p *hostPath) Provision(_ context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	claim := opts.PVC
	if claim.Spec.Selector != nil {
		return nil, controller.ProvisioningFinished, fmt.Errorf("claim %s/%s: a selector is not supported by %s", claim.Namespace, claim.Name, DriverName)
	}
	size, ok := claim.Spec.Resources.Requests[v1.ResourceStorage]
	if !ok {
		return nil, controller.ProvisioningFinished, fmt.Errorf("claim %s/%s requests no storage size", claim.Namespace, claim.Name)
	}
	fs := ""
	if opts.StorageClass != nil {
		fs = opts.StorageClass.Parameters[FilesystemParameter]
	}
	if fs != "" && fs != FilesystemTmpfs {
		return nil, controller.ProvisioningFinished, fmt.Errorf("StorageClass %s: parameter %s=%q: only %q is supported", opts.StorageClass.Name, FilesystemParameter, fs, FilesystemTmpfs)
	}
	dir := filepath.Join(p.root, opts.PVName)
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return nil, controller.ProvisioningFinished, fmt.Errorf("create volume directory: %w", err)
	}
	// MkdirAll honours the umask; pods run as any user and must be able to write.
	if err := os.Chmod(dir, 0o777); err != nil {
		return nil, controller.ProvisioningFinished, fmt.Errorf("volume directory mode: %w", err)
	}
	if fs == FilesystemTmpfs {
		if err := p.mountTmpfs(dir, size.Value()); err != nil {
			return nil, controller.ProvisioningFinished, err
		}
	}
	reclaim := v1.PersistentVolumeReclaimDelete
	if rp := opts.StorageClass.ReclaimPolicy; rp != nil {
		reclaim = *rp
	}
	backing := "directory"
	if fs == FilesystemTmpfs {
		backing = "tmpfs"
	}
	p.logf("provisioned %s for claim %s/%s (%s, %s) at %s", opts.PVName, claim.Namespace, claim.Name, size.String(), backing, dir)
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: opts.PVName},
		Spec: v1.PersistentVolumeSpec{
			Capacity:                      v1.ResourceList{v1.ResourceStorage: size},
			AccessModes:                   claim.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			MountOptions:                  opts.StorageClass.MountOptions,
			VolumeMode:                    claim.Spec.VolumeMode,
			PersistentVolumeSource: v1.PersistentVolumeSource{
				CSI: &v1.CSIPersistentVolumeSource{Driver: DriverName, VolumeHandle: dir},
			},
		},
	}, controller.ProvisioningFinished, nil
}

// Delete removes the directory of a volume this provisioner made. A PV of the same driver whose
// directory lies outside the root (the etcd members' static PVs) is never touched.
func (p *hostPath) Delete(_ context.Context, pv *v1.PersistentVolume) error {
	csi := pv.Spec.CSI
	if csi == nil || csi.Driver != DriverName {
		return &controller.IgnoredError{Reason: "not a " + DriverName + " volume"}
	}
	dir := filepath.Clean(csi.VolumeHandle)
	if rel, err := filepath.Rel(p.root, dir); err != nil || rel == "." || strings.HasPrefix(rel, "..") || strings.Contains(rel, "/") {
		return &controller.IgnoredError{Reason: fmt.Sprintf("volume handle %s is not a directory this provisioner made under %s", csi.VolumeHandle, p.root)}
	}
	if _, err := os.Lstat(dir); os.IsNotExist(err) {
		return nil // deleted already; the library may call again before it sees the PV go
	}
	if err := p.unmount(dir); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove volume directory: %w", err)
	}
	p.logf("deleted %s (%s)", pv.Name, dir)
	return nil
}

// mountTmpfs mounts a tmpfs of size bytes (rounded up to whole pages by the kernel) on dir, writable
// by every user as the directory volumes are. A directory this provisioner mounted already (a retried
// Provision) is kept as it is.
func (p *hostPath) mountTmpfs(dir string, size int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mounts[dir] {
		return nil
	}
	if size <= 0 {
		return fmt.Errorf("a tmpfs volume needs a positive size, got %d bytes", size)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0777", size)); err != nil {
		return fmt.Errorf("mount a tmpfs of %d bytes on %s (needs root): %w", size, dir, err)
	}
	p.mounts[dir] = true
	return nil
}

// unmount unmounts the tmpfs this provisioner mounted on dir, if any.
func (p *hostPath) unmount(dir string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.mounts[dir] {
		return nil
	}
	if err := syscall.Unmount(dir, 0); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("unmount the tmpfs on %s: %w", dir, err)
	}
	delete(p.mounts, dir)
	return nil
}

// unmountAll unmounts every tmpfs this provisioner mounted; a busy one is detached lazily, so the
// directory can be removed and the memory is freed once its last user is gone.
func (p *hostPath) unmountAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for dir := range p.mounts {
		if err := syscall.Unmount(dir, 0); err != nil && !errors.Is(err, syscall.EINVAL) {
			if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
				p.logf("unmount the tmpfs on %s: %v", dir, err)
				continue
			}
		}
		delete(p.mounts, dir)
	}
}
