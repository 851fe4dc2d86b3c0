package rig

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	snapclient "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig/etcdcluster"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig/provisioner"
)

// Names the rig gives to the cluster it builds.
const (
	// DriverName is the CSI driver name this driver registers (its -driver-name default).
	DriverName = "etcd-snapshot.csi.io"
	// DriverNamespace and DriverServiceAccount are where manifests/ put the driver and as whom it runs.
	DriverNamespace      = "kube-system"
	DriverServiceAccount = "etcd-snapshot-driver"
	// DriverUser is the user name the driver and the csi-snapshotter authenticate as.
	DriverUser = "system:serviceaccount:" + DriverNamespace + ":" + DriverServiceAccount
	// NodeName is the one node the pod runner registers.
	NodeName = "rig-node"
	// StorageClass is the default StorageClass served by the rig's provisioner.
	StorageClass = "rig-hostpath"
	// DefaultNamespace is the namespace of the etcd cluster under test.
	DefaultNamespace = "etcd-test"
	// EtcdClusterName is the name (and etcd.io/cluster label value) of the etcd cluster under test.
	EtcdClusterName = "main"
	// DriverImage is the image name the pod runner maps to the driver binary built from the checkout.
	DriverImage = "rig.local/etcd-snapshot-driver:dev"

	serviceCIDR = "10.0.0.0/24"
	serviceIP   = "10.0.0.1"
)

// Options configure Start. The zero value is a complete rig in a new temporary directory.
type Options struct {
	// Root is the one directory holding everything the rig writes: data, sockets, volumes, pods,
	// kubeconfigs. Default: a new temporary directory, removed by Stop. Keep it short: the CSI socket
	// lives in it and unix socket paths are limited to 107 bytes.
	Root string
	// LogDir receives <component>.log for every component. Default: <Root>/logs.
	LogDir string
	// Progress receives one line per build and start-up step. Default: discarded.
	Progress io.Writer
	// Namespace of the etcd cluster under test. Default: DefaultNamespace.
	Namespace string
	// EtcdMembers is the size of the etcd cluster under test. Default: 3.
	EtcdMembers int
	// EtcdStatefulSet runs the etcd cluster under test (EtcdClusterName in Namespace) as a real
	// StatefulSet, Rig.EtcdSet (see StartEtcdStatefulSet), instead of process-managed members, Rig.Etcd
	// (then nil): scaling it and restoring it work as in a real cluster, but a single member cannot be
	// stopped (etcdcluster's StopMember), which the fault tests need.
	EtcdStatefulSet bool
	// DriverReplicas is how many replicas of the driver's Deployment run, each a driver and a
	// csi-snapshotter on its own socket; with two or more the sidecars elect a leader as shipped.
	// Default 1.
	DriverReplicas int
	// EtcdArgs are extra etcd flags for the members of the cluster under test (for example
	// --quota-backend-bytes for a large database); only with EtcdStatefulSet.
	EtcdArgs []string
	// DriverArgs are extra flags for the driver, appended after the rig's own.
	DriverArgs []string
	// SnapshotControllerArgs are extra flags for the upstream snapshot-controller, appended after the
	// rig's own (a later flag wins: --kube-api-qps=5 measures upstream's default rate limit).
	SnapshotControllerArgs []string
	// WithoutDriver starts neither the driver nor the csi-snapshotter, for debugging the rig itself or
	// running the driver by hand (for example under a debugger, with the flags Rig.DriverArgs returns).
	WithoutDriver bool
	// NoSignalHandler leaves SIGINT and SIGTERM to the caller, who must then call Stop. By default the
	// rig stops itself (and every other rig of the process) on either signal and exits the process.
	NoSignalHandler bool
	// KeepRoot keeps a temporary Root after Stop.
	KeepRoot bool
}

// Rig is a running local cluster. Fields are set by Start and must not be changed.
type Rig struct {
	// Kubeconfig is the path of an admin (system:masters) kubeconfig.
	Kubeconfig string
	// RESTConfig is the admin client configuration behind Kube, Snap and Dynamic.
	RESTConfig *rest.Config
	Kube       kubernetes.Interface
	Snap       snapclient.Interface
	Dynamic    dynamic.Interface
	// Etcd is the etcd cluster under test, registered in Namespace; nil with Options.EtcdStatefulSet,
	// which sets EtcdSet instead. EtcdClient serves either.
	Etcd      *etcdcluster.Cluster
	EtcdSet   *EtcdStatefulSet
	Namespace string
	// DriverName is the CSI driver name of this driver; StorageClass and NodeName name the rig's own
	// storage class and node.
	DriverName   string
	StorageClass string
	NodeName     string
	// EtcdImage and DriverImage are the image names the pod runner understands; the driver is started
	// with them as -etcd-image and -driver-image.
	EtcdImage   string
	DriverImage string
	// BinDir holds the upstream binaries: kubectl, etcd, etcdctl, etcdutl, kube-*, snapshot components.
	BinDir string
	// DriverBinDir holds this rig's copy of the driver binary (DriverBinary).
	DriverBinDir string
	// LauncherImage is the image of the rig's etcd StatefulSets (see StartEtcdStatefulSet);
	// LauncherBinDir, the directory it maps to, holds LauncherBinary and a link to etcd.
	LauncherImage  string
	LauncherBinDir string
	// Root is the rig's directory; APIServerURL the apiserver's https URL.
	Root         string
	APIServerURL string
	// CSISocket is the driver's unix socket path; DriverHTTPAddress the host:port of its /metrics,
	// /healthz and /ready.
	CSISocket         string
	DriverHTTPAddress string

	opts        Options
	repoRoot    string
	logDir      string
	progress    io.Writer
	createdRoot bool
	pki         *pki
	etcdURL     string                     // the apiserver's etcd
	deployment  *unstructured.Unstructured // the Deployment of manifests/, for the driver's arguments
	sidecarAddr string
	replicas    []*driverReplica // [0] is driver, snapshotter and sidecarAddr
	mapper      *restmapper.DeferredDiscoveryRESTMapper

	startCtx    context.Context // canceled by Stop, so a Stop during Start aborts it
	cancelStart context.CancelFunc
	life        context.Context // lifetime of in-process components
	cancelLife  context.CancelFunc
	inproc      sync.WaitGroup

	mu          sync.Mutex
	stopped     bool
	procs       []*process
	apiserver   *process
	driver      *process
	snapshotter *process
	driverArgs  []string
	clusters    []*etcdcluster.Cluster
	inprocErrs  map[string]error
	prov        *provisioner.Provisioner
	provLog     *os.File
	startFailed bool
	stopOnce    sync.Once
	rss         rssSampler
}

// Start builds what is missing (see EnsureUpstream, EnsureDriver), starts every component, checks
// each is healthy and returns the running rig. On error everything started so far is stopped and the
// error names the failing component with the tail of its log; the logs are kept and their directory is
// named in the error.
func Start(ctx context.Context, opts Options) (*Rig, error) {
	begin := time.Now()
	r := &Rig{
		opts:          opts,
		progress:      opts.Progress,
		Namespace:     opts.Namespace,
		DriverName:    DriverName,
		StorageClass:  StorageClass,
		NodeName:      NodeName,
		DriverImage:   DriverImage,
		LauncherImage: LauncherImage,
		inprocErrs:    map[string]error{},
	}
	if r.progress == nil {
		r.progress = io.Discard
	}
	if r.Namespace == "" {
		r.Namespace = DefaultNamespace
	}
	if r.opts.EtcdMembers == 0 {
		r.opts.EtcdMembers = 3
	}
	if len(opts.EtcdArgs) > 0 && !opts.EtcdStatefulSet {
		return nil, errors.New("rig: Options.EtcdArgs needs Options.EtcdStatefulSet")
	}
	r.startCtx, r.cancelStart = context.WithCancel(ctx)
	r.life, r.cancelLife = context.WithCancel(context.Background())
	if !opts.NoSignalHandler {
		handleSignals(r)
	}
	if err := r.start(); err != nil {
		r.mu.Lock()
		r.startFailed = true
		r.mu.Unlock()
		r.Stop()
		if r.logDir != "" {
			err = fmt.Errorf("%w\nrig: component logs kept in %s", err, r.logDir)
		}
		return nil, err
	}
	r.logf("rig: up in %s; admin kubeconfig %s; logs in %s", time.Since(begin).Round(100*time.Millisecond), r.Kubeconfig, r.logDir)
	return r, nil
}

func (r *Rig) start() error {
	var err error
	if r.repoRoot, err = RepoRoot(); err != nil {
		return err
	}
	if err := r.makeDirs(); err != nil {
		return err
	}
	r.rss.start(r.life)
	redirectKlog(filepath.Join(r.logDir, "in-process-klog.log"))
	ctx, cancel := context.WithCancel(r.startCtx)
	defer cancel()

	// Binaries: the upstream set is cached by hash, the driver and the etcd launcher are rebuilt
	// (incrementally) every time.
	step := time.Now()
	var launcherBuilt string
	err = parallel(cancel,
		func() (err error) { launcherBuilt, err = EnsureLauncher(ctx, r.progressWriter()); return err },
		func() (err error) { r.BinDir, err = EnsureUpstream(ctx, r.progressWriter()); return err },
		func() error {
			if r.opts.WithoutDriver {
				return nil
			}
			built, err := EnsureDriver(ctx, r.progressWriter())
			if err != nil {
				return err
			}
			// A private copy, so that a rebuild by another test process never swaps the binary this rig runs.
			r.DriverBinDir = filepath.Join(r.Root, "images", "driver")
			return copyFile(filepath.Join(built, DriverBinary), filepath.Join(r.DriverBinDir, DriverBinary))
		},
	)
	if err != nil {
		return err
	}
	if err := r.installLauncherImage(launcherBuilt); err != nil {
		return err
	}
	versions, err := readUpstreamVersions(filepath.Join(r.repoRoot, "tools", "upstream", "go.mod"))
	if err != nil {
		return err
	}
	r.EtcdImage = "rig.local/etcd:" + versions.Etcd
	r.logf("rig: binaries ready (%s)", time.Since(step).Round(100*time.Millisecond))

	if r.pki, err = newPKI(filepath.Join(r.Root, "pki")); err != nil {
		return fmt.Errorf("rig: credentials: %w", err)
	}

	// The cluster under test needs no API server to start; its registration waits for one.
	etcdDone := make(chan error, 1)
	if !r.opts.EtcdStatefulSet {
		go func() { etcdDone <- r.startEtcdUnderTest() }()
	}

	if err := r.startAPIServerEtcd(ctx); err != nil {
		return err
	}
	if err := r.startAPIServer(ctx); err != nil {
		return err
	}
	if err := r.buildProvisioner(); err != nil {
		return err
	}
	err = parallel(cancel,
		func() error { return r.startControllerManager(ctx) },
		func() error { return r.startScheduler(ctx) },
		func() error { return r.startNodeAndStorage(ctx) },
		func() error {
			if err := r.installSnapshotCRDs(ctx); err != nil {
				return err
			}
			return parallel(cancel,
				func() error { return r.startSnapshotController(ctx) },
				func() error {
					if err := r.applyDriverManifests(ctx); err != nil {
						return err
					}
					if r.opts.WithoutDriver {
						return nil
					}
					return r.startDriverAndSidecar(ctx)
				},
			)
		},
		func() error {
			if r.opts.EtcdStatefulSet {
				return nil // started below, once the controllers, node and storage it needs run
			}
			select {
			case err := <-etcdDone:
				if err != nil {
					return err
				}
			case <-ctx.Done():
				return fmt.Errorf("rig: start-up of the etcd cluster under test interrupted: %w", ctx.Err())
			}
			return r.registerEtcdUnderTest(ctx)
		},
	)
	if err != nil {
		return err
	}
	if r.opts.EtcdStatefulSet {
		if err := r.startEtcdUnderTestStatefulSet(ctx); err != nil {
			return err
		}
	}
	return r.checkAll(ctx)
}

// makeDirs creates Root and LogDir.
func (r *Rig) makeDirs() error {
	root := r.opts.Root
	if root == "" {
		dir, err := os.MkdirTemp("", "rig-")
		if err != nil {
			return fmt.Errorf("rig: %w", err)
		}
		root, r.createdRoot = dir, true
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return fmt.Errorf("rig: %w", err)
	}
	r.Root = root
	r.CSISocket = filepath.Join(root, "csi", "csi.sock")
	if len(r.CSISocket) > 107 {
		return fmt.Errorf("rig: root %s is too long for the CSI socket path %s (unix sockets allow 107 bytes)", root, r.CSISocket)
	}
	r.logDir = r.opts.LogDir
	if r.logDir == "" {
		r.logDir = filepath.Join(root, "logs")
	}
	if r.logDir, err = filepath.Abs(r.logDir); err != nil {
		return fmt.Errorf("rig: %w", err)
	}
	for _, d := range []string{root, r.logDir, filepath.Join(root, "csi")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("rig: %w", err)
		}
	}
	return nil
}

// Logs returns the directory holding <component>.log of every component.
func (r *Rig) Logs() string { return r.logDir }

// Stop stops every component (SIGTERM to each process group, SIGKILL after a grace period), ends
// the in-process pod runner and provisioner (which kill their pods), and removes a temporary Root
// unless Options.KeepRoot is set or Start failed. It is safe to call more than once and concurrently.
func (r *Rig) Stop() {
	r.stopOnce.Do(r.stop)
}

func (r *Rig) stop() {
	begin := time.Now()
	r.mu.Lock()
	r.stopped = true
	procs := append([]*process(nil), r.procs...)
	clusters := append([]*etcdcluster.Cluster(nil), r.clusters...)
	failed := r.startFailed
	r.mu.Unlock()
	r.cancelStart()

	// The pod runner kills its pods when its context ends; give it and the provisioner a moment.
	r.cancelLife()
	inprocDone := make(chan struct{})
	go func() { r.inproc.Wait(); close(inprocDone) }()

	var wg sync.WaitGroup
	for _, c := range clusters {
		wg.Go(func() { c.Stop() })
	}
	for tier := 0; len(procs) > 0; tier++ {
		var later []*process
		for _, p := range procs {
			if p.stopTier == tier {
				wg.Go(func() { p.stop(stopGrace) })
			} else {
				later = append(later, p)
			}
		}
		wg.Wait()
		procs = later
	}
	select {
	case <-inprocDone:
	case <-time.After(15 * time.Second):
		r.logf("rig: pod runner or provisioner did not return within 15s of stopping")
	}
	unregisterSignals(r)
	if r.Root != "" {
		r.logf("rig: stopped in %s; peak RSS %s", time.Since(begin).Round(100*time.Millisecond), formatBytes(r.rss.peak()))
	}
	if r.createdRoot && !r.opts.KeepRoot {
		if !failed {
			os.RemoveAll(r.Root)
		} else {
			removeAllBut(r.Root, r.logDir) // a failed start keeps its logs for the error message
		}
	}
}

// removeAllBut removes everything in dir except keep and the directories leading to it.
func removeAllBut(dir, keep string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if path == keep {
			continue
		}
		if rel, err := filepath.Rel(path, keep); err == nil && !strings.HasPrefix(rel, "..") {
			removeAllBut(path, keep)
			continue
		}
		os.RemoveAll(path)
	}
}

// isStopped reports whether Stop has been called.
func (r *Rig) isStopped() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped
}

// launch starts p as a component of the rig, unless the rig is stopping.
func (r *Rig) launch(p *process) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return fmt.Errorf("rig: not starting %s: the rig is stopping", p.name)
	}
	if err := p.start(); err != nil {
		return err
	}
	r.procs = append(r.procs, p)
	return nil
}

// newProcess describes a component whose binary is in BinDir and whose log is <LogDir>/<name>.log.
func (r *Rig) newProcess(name, binary string, args ...string) *process {
	return &process{name: name, path: binary, args: args, logPath: filepath.Join(r.logDir, name+".log")}
}

// goInProcess runs an in-process component until the rig stops, recording an early return.
func (r *Rig) goInProcess(name string, run func(ctx context.Context) error) {
	r.inproc.Go(func() {
		err := run(r.life)
		if r.life.Err() == nil {
			if err == nil {
				err = errors.New("returned while the rig was running")
			}
			r.logf("rig: %s stopped: %v", name, err)
			r.mu.Lock()
			r.inprocErrs[name] = err
			r.mu.Unlock()
		}
	})
}

func (r *Rig) inprocErr(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inprocErrs[name]
}

// logf prints a progress line and keeps it in <LogDir>/rig.log.
func (r *Rig) logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...) + "\n"
	fmt.Fprint(r.progress, line)
	if r.logDir != "" {
		appendLog(filepath.Join(r.logDir, "rig.log"), time.Now().Format("15:04:05.000 ")+line)
	}
}

// progressWriter is r.progress teed into rig.log, for the build steps.
func (r *Rig) progressWriter() io.Writer {
	return writerFunc(func(p []byte) (int, error) { r.logf("%s", trimNL(p)); return len(p), nil })
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func trimNL(p []byte) string {
	s := string(p)
	for len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	return s
}

// parallel runs fns concurrently and returns the first error; cancel (if not nil) is called on that
// first error, so that the others, which wait on the canceled context, give up instead of waiting out
// their timeouts and burying the cause under their own errors.
func parallel(cancel context.CancelFunc, fns ...func() error) error {
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	for _, fn := range fns {
		wg.Go(func() {
			if err := fn(); err != nil {
				mu.Lock()
				if first == nil {
					first = err
					if cancel != nil {
						cancel()
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

// copyFile copies an executable into a new directory, replacing any previous copy.
func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("rig: %w", err)
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return fmt.Errorf("rig: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("rig: copy %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// clients builds the admin clients from the admin kubeconfig's settings.
func (r *Rig) clients() error {
	cfg := &rest.Config{
		Host:            r.APIServerURL,
		BearerToken:     r.pki.tokens["rig-admin"],
		TLSClientConfig: rest.TLSClientConfig{CAData: r.pki.caPEM},
		QPS:             100,
		Burst:           200,
		UserAgent:       "rig",
	}
	var err error
	r.RESTConfig = cfg
	if r.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	if r.Snap, err = snapclient.NewForConfig(cfg); err != nil {
		return err
	}
	if r.Dynamic, err = dynamic.NewForConfig(cfg); err != nil {
		return err
	}
	r.mapper = restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(r.Kube.Discovery()))
	return nil
}
