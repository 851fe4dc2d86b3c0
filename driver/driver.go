package driver

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/golang/glog"
	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	snapclientset "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	snapinformers "github.com/kubernetes-csi/external-snapshotter/client/v8/informers/externalversions"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

const (
	// maxKlogVerbosity caps client-go's verbosity: from 8 on it logs HTTP request and response bodies,
	// which include the Job's credentials Secret.
	maxKlogVerbosity = 7
	// stopTimeout bounds how long Run waits for in-flight RPCs and HTTP requests when it is stopped.
	stopTimeout = 10 * time.Second
	// dynamicGroupResync re-examines every VolumeGroupSnapshot this often, as upstream's controllers do
	// (their --resync-period default), in case an event was missed.
	dynamicGroupResync = 15 * time.Minute
)

// driverNameRE is the CSI rule for plugin names: domain-name notation, alphanumeric at both ends.
var driverNameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,61}[a-zA-Z0-9])?$`)

// Config holds everything New needs; main fills it from flags.
type Config struct {
	// DriverName is the CSI plugin name (GetPluginInfo), also the driver field of snapshot classes.
	DriverName string
	// Version is reported by GetPluginInfo as the vendor version.
	Version string
	// Endpoint is the unix socket the CSI services listen on: unix:///path or an absolute path.
	Endpoint string
	// HTTPAddress is the host:port serving /metrics, /healthz and /ready.
	HTTPAddress string
	// Engine configures the snapshot engine; NewEngine checks it.
	Engine EngineConfig
	// Snapshots is the client of the snapshot.storage.k8s.io and groupsnapshot.storage.k8s.io APIs,
	// used to let dynamic VolumeGroupSnapshots reach the driver (dynamicgroup.go).
	Snapshots snapclientset.Interface
	// Dynamic reads EtcdSnapshotSchedules (schedule.go); nil turns schedules off.
	Dynamic dynamic.Interface
	// LeaderElection runs the driver's controllers only on the replica holding its Lease; nil runs
	// them in this process unconditionally (a single replica).
	LeaderElection *LeaderElectionConfig
}

// Driver serves the CSI Identity, GroupController and Controller services on one struct; an RPC it
// does not offer answers UNIMPLEMENTED through the embedded Unimplemented servers.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedGroupControllerServer
	csi.UnimplementedControllerServer

	cfg          Config
	socketPath   string
	engine       *Engine
	dynamicGroup *DynamicGroupController
	sweeper      *Sweeper
	schedules    *ScheduleController // nil without Config.Dynamic

	// serving is true while the gRPC server accepts connections (the liveness signal).
	serving atomic.Bool
	// listening is closed once Run has bound both listeners; httpAddr is valid after that.
	listening chan struct{}
	httpAddr  net.Addr
	runOnce   sync.Once
}

// New checks cfg, builds the engine and returns a Driver ready to Run.
func New(cfg Config) (*Driver, error) {
	var errs []error
	switch {
	case cfg.DriverName == "":
		errs = append(errs, errors.New("driver: DriverName is required"))
	case !driverNameRE.MatchString(cfg.DriverName):
		errs = append(errs, fmt.Errorf("driver: DriverName %q is not a valid CSI plugin name (at most 63 characters, "+
			"alphanumerics, '-' and '.', starting and ending with an alphanumeric)", cfg.DriverName))
	}
	if cfg.Version == "" {
		errs = append(errs, errors.New("driver: Version is required"))
	}
	socketPath, err := parseEndpoint(cfg.Endpoint)
	if err != nil {
		errs = append(errs, err)
	}
	if cfg.HTTPAddress == "" {
		errs = append(errs, errors.New("driver: HTTPAddress is required (host:port for /metrics, /healthz and /ready)"))
	}
	if cfg.Snapshots == nil {
		errs = append(errs, errors.New("driver: Snapshots client is required"))
	}
	if cfg.LeaderElection != nil {
		if err := cfg.LeaderElection.check(); err != nil {
			errs = append(errs, err)
		}
	}
	// One informer per resource for the whole process. The engine's Start starts the unfiltered
	// factory on every replica, so a standby also keeps the claims and volumes of the leader-only
	// controllers warm and takes over without a relist.
	kubeInformers := informers.NewSharedInformerFactoryWithOptions(cfg.Engine.Kube, 0,
		informers.WithCustomResyncConfig(map[metav1.Object]time.Duration{&corev1.PersistentVolumeClaim{}: dynamicGroupResync}))
	snapInformers := snapinformers.NewSharedInformerFactory(cfg.Snapshots, dynamicGroupResync)
	cfg.Engine.Informers = kubeInformers
	dynamicGroup := newDynamicGroupControllerWith(cfg.Engine.Kube, cfg.Snapshots, kubeInformers, snapInformers, cfg.DriverName, dgRateLimiter())
	if cfg.Engine.OnGroupReady == nil {
		cfg.Engine.OnGroupReady = dynamicGroup.WakeGroupContent
	}
	engine, err := NewEngine(cfg.Engine)
	if err != nil {
		errs = append(errs, err)
	}
	var schedules *ScheduleController
	if cfg.Dynamic != nil && engine != nil {
		schedules, err = NewScheduleController(ScheduleConfig{Kube: cfg.Engine.Kube, Snapshots: cfg.Snapshots, Dynamic: cfg.Dynamic,
			DriverName: cfg.DriverName, ClusterLabel: cfg.Engine.ClusterLabel, Records: engine.Get, Resync: dynamicGroupResync, SnapInformers: snapInformers})
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	sweeper, err := newSweeper(engine, dynamicGroup, cfg.Snapshots, cfg.Engine.SweepGrace, clock.RealClock{})
	if err != nil {
		return nil, fmt.Errorf("driver: sweeper: %w", err)
	}
	return &Driver{
		cfg:          cfg,
		socketPath:   socketPath,
		engine:       engine,
		dynamicGroup: dynamicGroup,
		sweeper:      sweeper,
		schedules:    schedules,
		listening:    make(chan struct{}),
	}, nil
}

// parseEndpoint accepts unix:///abs/path, unix:/abs/path or /abs/path and returns the socket path.
func parseEndpoint(endpoint string) (string, error) {
	if endpoint == "" {
		return "", errors.New("driver: Endpoint is required (unix:///path/to/csi.sock)")
	}
	p := endpoint
	if rest, ok := strings.CutPrefix(endpoint, "unix:"); ok {
		p = "/" + strings.TrimLeft(rest, "/")
	} else if strings.Contains(endpoint, "://") {
		return "", fmt.Errorf("driver: Endpoint %q: only unix sockets are supported", endpoint)
	}
	if !path.IsAbs(p) {
		return "", fmt.Errorf("driver: Endpoint %q: the socket path must be absolute", endpoint)
	}
	return path.Clean(p), nil
}

// Run serves gRPC on the unix socket and HTTP on HTTPAddress, starts the engine, and blocks until ctx
// is done or a server fails. Stopping is graceful: in-flight RPCs finish (up to stopTimeout) and the
// socket file is removed. Run may be called once.
func (d *Driver) Run(ctx context.Context) error {
	err := errors.New("driver: Run called twice")
	d.runOnce.Do(func() { err = d.run(ctx) })
	return err
}

func (d *Driver) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	grpcListener, err := listenUnix(d.socketPath)
	if err != nil {
		return err
	}
	defer os.Remove(d.socketPath)
	httpListener, err := net.Listen("tcp", d.cfg.HTTPAddress)
	if err != nil {
		grpcListener.Close()
		return fmt.Errorf("driver: listen on -http-address %q: %w", d.cfg.HTTPAddress, err)
	}
	d.httpAddr = httpListener.Addr()
	close(d.listening)

	grpcServer := grpc.NewServer(grpc.UnaryInterceptor(d.intercept))
	csi.RegisterIdentityServer(grpcServer, d)
	csi.RegisterGroupControllerServer(grpcServer, d)
	csi.RegisterControllerServer(grpcServer, d)
	httpServer := &http.Server{Handler: d.httpHandler(), ReadHeaderTimeout: 10 * time.Second}

	errc := make(chan error, 6)
	served := make(chan struct{})
	go func() {
		// Serve returns once the informers have synced; until then Probe and /ready say not ready,
		// which is what the sidecar waits for. Every replica serves; only the leader runs controllers.
		if err := d.engine.Serve(ctx); err != nil {
			if ctx.Err() == nil {
				errc <- fmt.Errorf("driver: start engine: %w", err)
			}
			return
		}
		close(served)
	}()
	go func() {
		if le := d.cfg.LeaderElection; le != nil {
			if err := runElected(ctx, d.cfg.Engine.Kube, le, func(ctx context.Context) { d.runControllers(ctx, served, errc) }); err != nil {
				errc <- err
			}
			return
		}
		d.runControllers(ctx, served, errc)
	}()
	go func() {
		if err := grpcServer.Serve(grpcListener); err != nil {
			errc <- fmt.Errorf("driver: gRPC server: %w", err)
		}
	}()
	go func() {
		if err := httpServer.Serve(httpListener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("driver: HTTP server: %w", err)
		}
	}()
	d.serving.Store(true)
	glog.Infof("%s %s serving CSI on %s and HTTP on %s", d.cfg.DriverName, d.cfg.Version, d.socketPath, d.httpAddr)

	var runErr error
	select {
	case <-ctx.Done():
		glog.Infof("stopping: %v", context.Cause(ctx))
	case runErr = <-errc:
		glog.Errorf("stopping: %v", runErr)
	}
	d.serving.Store(false)

	stopped := make(chan struct{})
	go func() {
		grpcServer.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		glog.Warningf("in-flight RPCs did not finish within %s; closing them", stopTimeout)
		grpcServer.Stop()
		<-stopped
	}
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), stopTimeout)
	defer cancelShutdown()
	if err := httpServer.Shutdown(shutdownCtx); err != nil {
		httpServer.Close()
	}
	return runErr
}

// runControllers runs the driver's own controllers until ctx ends: the engine's Job workers once its
// caches are served, the dynamic group watch, the sweeper and the schedules. Each is idempotent by name, so a
// replica taking over mid-snapshot creates nothing twice.
func (d *Driver) runControllers(ctx context.Context, served <-chan struct{}, errc chan<- error) {
	go func() {
		select {
		case <-served:
			d.engine.StartWorkers(ctx)
		case <-ctx.Done():
		}
	}()
	go func() {
		// It waits for the snapshot CRDs' caches. Without the CRDs, client-go's reflector logs each
		// failed list ("Failed to watch") and retries with backoff (0.8 s doubling to 30 s), so the
		// watch starts once they are installed; meanwhile the CSI services still work for static and
		// single snapshots.
		if err := d.dynamicGroup.Run(ctx); err != nil {
			errc <- fmt.Errorf("driver: dynamic group snapshots: %w", err)
		}
	}()
	go d.sweeper.Run(ctx)
	if d.schedules != nil {
		go func() {
			// Like the dynamic group watch, it waits for its CRD, the reflector logging each failed
			// list and retrying.
			if err := d.schedules.Run(ctx); err != nil {
				errc <- fmt.Errorf("driver: schedules: %w", err)
			}
		}()
	}
	<-ctx.Done()
}

// HTTPAddr returns the address the HTTP server listens on, waiting until Run has bound it; it is ""
// when ctx ends first.
func (d *Driver) HTTPAddr(ctx context.Context) string {
	select {
	case <-d.listening:
		return d.httpAddr.String()
	case <-ctx.Done():
		return ""
	}
}

// listenUnix listens on a unix socket, replacing a stale socket file left by a previous run but never
// any other kind of file.
func listenUnix(socketPath string) (net.Listener, error) {
	if fi, err := os.Lstat(socketPath); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("driver: %s exists and is not a socket; refusing to replace it", socketPath)
		}
		if err := os.Remove(socketPath); err != nil {
			return nil, fmt.Errorf("driver: remove stale socket: %w", err)
		}
	}
	if err := os.MkdirAll(path.Dir(socketPath), 0o750); err != nil {
		return nil, fmt.Errorf("driver: create socket directory: %w", err)
	}
	l, err := net.Listen("unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("driver: listen on %s: %w", socketPath, err)
	}
	return l, nil
}

// intercept is the one interceptor of every RPC: it logs the method at V(3) and the bodies at V(5)
// with secrets stripped, turns every error into a gRPC status, logs each error once and records the
// RPC metrics.
func (d *Driver) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	method := path.Base(info.FullMethod)
	glog.V(3).Infof("%s called", info.FullMethod)
	glog.V(5).Infof("%s request: %s", info.FullMethod, protosanitizer.StripSecrets(req))

	start := time.Now()
	resp, err := handler(ctx, req)
	err = asStatus(err)
	code := status.Code(err)
	rpcTotal.WithLabelValues(method, code.String()).Inc()
	rpcDuration.WithLabelValues(method).Observe(time.Since(start).Seconds())

	if err != nil {
		glog.Errorf("%s failed: %v", info.FullMethod, err)
		return nil, err
	}
	glog.V(5).Infof("%s response: %s", info.FullMethod, protosanitizer.StripSecrets(resp))
	return resp, nil
}

// RouteKlog makes klog (client-go's logger) follow the glog flags parsed on fs, as in klog's
// examples/coexist_glog, so -v, -vmodule and -logtostderr are registered once and drive both loggers.
// klog's -v and every -vmodule level are capped at maxKlogVerbosity: -v=10 or -vmodule=*=10 debugs
// the driver without writing Secret bodies to the log.
func RouteKlog(fs *flag.FlagSet) error {
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		kf := klogFlags.Lookup(f.Name)
		if kf == nil {
			return
		}
		value := f.Value.String()
		switch f.Name {
		case "v":
			value = capKlogLevel(value)
		case "vmodule":
			value = capKlogVmodule(value)
		}
		if err := kf.Value.Set(value); err != nil {
			errs = append(errs, fmt.Errorf("route -%s=%q to klog: %w", f.Name, value, err))
		}
	})
	return errors.Join(errs...)
}

// capKlogLevel lowers a verbosity above maxKlogVerbosity to it; anything else is left for klog to
// accept or refuse.
func capKlogLevel(value string) string {
	if v, err := strconv.Atoi(value); err == nil && v > maxKlogVerbosity {
		return strconv.Itoa(maxKlogVerbosity)
	}
	return value
}

// capKlogVmodule caps each level of a -vmodule list (pattern=N,...); a pattern names a file, so
// without the cap "*=10" or "request=10" would turn on client-go's body logging however -v is capped.
func capKlogVmodule(value string) string {
	entries := strings.Split(value, ",")
	for i, entry := range entries {
		if pattern, level, ok := strings.Cut(entry, "="); ok && !strings.Contains(level, "=") {
			entries[i] = pattern + "=" + capKlogLevel(level)
		}
	}
	return strings.Join(entries, ",")
}
