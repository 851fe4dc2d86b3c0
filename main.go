// Command etcd-snapshot-driver is a CSI driver that takes verified etcd snapshots through Kubernetes
// Jobs; `etcd-snapshot-driver verify` is the check those Jobs run (after `prepare-save`, which clears
// a failed attempt's file), `etcd-snapshot-driver restore`
// (also `kubectl etcd-snapshot restore` when installed as kubectl-etcd_snapshot) restores a snapshot,
// and `restore-step` is what its Jobs run.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/golang/glog"
	snapclientset "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

// driverImage is the default -driver-image: this binary's own image.
func driverImage() string {
	return driver.DriverImageRepository + ":" + version
}

// options are the command-line flags of the driver.
type options struct {
	endpoint          string
	driverName        string
	httpAddress       string
	kubeconfig        string
	clusterLabel      string
	metadataNamespace string
	etcdImage         string
	driverImage       string
	etcdCA            string
	etcdCert          string
	etcdKey           string
	storageClass      string
	healthTimeout     time.Duration
	sweepGrace        time.Duration
	createWait        time.Duration
	kubeAPIQPS        float64
	kubeAPIBurst      int
	showVersion       bool

	leaderElection          bool
	leaderElectionNamespace string
	leaseDuration           time.Duration
	renewDeadline           time.Duration
	retryPeriod             time.Duration
}

// registerFlags defines the driver's flags on fs; glog's -v, -logtostderr and friends are already on
// flag.CommandLine.
func registerFlags(fs *flag.FlagSet, o *options) {
	fs.StringVar(&o.endpoint, "endpoint", "unix:///csi/csi.sock", "CSI endpoint: the unix socket the CSI services listen on")
	fs.StringVar(&o.driverName, "driver-name", driver.DefaultDriverName, "CSI driver name, as in the CSIDriver object and the snapshot classes")
	fs.StringVar(&o.httpAddress, "http-address", ":8080", "address serving /metrics, /healthz and /ready")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty means the in-cluster configuration")
	fs.StringVar(&o.clusterLabel, "cluster-label", driver.DefaultClusterLabel, "label key naming the etcd cluster on its PVCs and client Service")
	fs.StringVar(&o.metadataNamespace, "metadata-namespace", driver.DefaultMetadataNamespace, "namespace of the snapshot metadata ConfigMaps")
	fs.StringVar(&o.etcdImage, "etcd-image", driver.DefaultEtcdImage, "image providing /usr/local/bin/etcdctl for `etcdctl snapshot save`")
	fs.StringVar(&o.driverImage, "driver-image", driverImage(), "image of this driver, whose `verify` subcommand checks each snapshot")
	fs.StringVar(&o.etcdCA, "etcd-ca", "", "fallback etcd client CA bundle (PEM), used when a snapshot class names no secret")
	fs.StringVar(&o.etcdCert, "etcd-cert", "", "fallback etcd client certificate (PEM); needs -etcd-ca and -etcd-key")
	fs.StringVar(&o.etcdKey, "etcd-key", "", "fallback etcd client private key (PEM); needs -etcd-ca and -etcd-cert")
	fs.StringVar(&o.storageClass, "snapshot-storage-class", "", "StorageClass of snapshot PVCs when the class parameter snapshotStorageClass is absent; empty means the cluster default")
	fs.DurationVar(&o.healthTimeout, "health-timeout", driver.DefaultHealthTimeout, "time limit of one etcd cluster health check")
	fs.DurationVar(&o.sweepGrace, "sweep-grace", driver.DefaultSweepGrace, "how long an abandoned Pending snapshot or pre-created VolumeGroupSnapshotContent waits before the sweeper removes it")
	// Shorter than the csi-snapshotter's CSI --timeout (1 minute by default) by far: a Create that
	// waits holds one of the sidecar's workers.
	fs.DurationVar(&o.createWait, "create-wait", 5*time.Second, "how long a Create waits for its snapshot's Job to finish, so that its answer is already ready; 0 answers not ready at once")
	fs.Float64Var(&o.kubeAPIQPS, "kube-api-qps", driver.DefaultKubeAPIQPS, "queries per second to the Kubernetes API server (client-side rate limit)")
	fs.IntVar(&o.kubeAPIBurst, "kube-api-burst", driver.DefaultKubeAPIBurst, "burst of queries to the Kubernetes API server above -kube-api-qps")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	fs.BoolVar(&o.leaderElection, "leader-election", true, "run the driver's controllers only on the replica holding the Lease "+driver.DefaultLeaseName+" (every replica serves CSI)")
	fs.StringVar(&o.leaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader Lease; default -metadata-namespace")
	fs.DurationVar(&o.leaseDuration, "leader-election-lease-duration", 15*time.Second, "how long a standby waits after the leader stopped renewing before it takes over")
	fs.DurationVar(&o.renewDeadline, "leader-election-renew-deadline", 10*time.Second, "how long the leader retries renewing before it gives up leading (and exits)")
	fs.DurationVar(&o.retryPeriod, "leader-election-retry-period", 2*time.Second, "how often replicas try to acquire or renew the Lease")
}

func main() {
	os.Exit(run(flag.CommandLine, os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole command; fs must hold glog's flags (flag.CommandLine, where glog registers them).
func run(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "verify":
			return driver.RunVerify(args[1:], stdout, stderr)
		case "prepare-save":
			return driver.RunPrepareSave(args[1:], stdout, stderr)
		case "restore-step":
			return driver.RunRestoreStep(args[1:], stdout, stderr)
		case "restore":
			return driver.RunRestore(args[1:], driver.RestoreDefaults{
				DriverName:  driver.DefaultDriverName,
				EtcdImage:   driver.DefaultEtcdImage,
				DriverImage: driverImage(),
				UserAgent:   "etcd-snapshot-driver-restore/" + version,
			}, stdout, stderr)
		}
	}

	var o options
	registerFlags(fs, &o)
	// glog writes files unless told otherwise; containers log to stderr.
	if err := fs.Set("logtostderr", "true"); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := driver.RouteKlog(fs); err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	defer glog.Flush()
	defer klog.Flush()

	if o.showVersion {
		fmt.Fprintf(stdout, "etcd-snapshot-driver %s\n", version)
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected arguments %q; the subcommands are restore and verify\n", fs.Args())
		return 2
	}

	cfg, err := config(o)
	if err != nil {
		glog.Errorf("%v", err)
		return 1
	}
	d, err := driver.New(cfg)
	if err != nil {
		glog.Errorf("%v", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := d.Run(ctx); err != nil {
		glog.Errorf("%v", err)
		return 1
	}
	return 0
}

// config turns the flags into the driver configuration, building the Kubernetes client and reading
// the fallback etcd credentials.
func config(o options) (driver.Config, error) {
	restConfig, err := kubeRESTConfig(o)
	if err != nil {
		return driver.Config{}, err
	}
	kube, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return driver.Config{}, fmt.Errorf("kubernetes client: %w", err)
	}
	snapshots, err := snapclientset.NewForConfig(restConfig)
	if err != nil {
		return driver.Config{}, fmt.Errorf("snapshot API client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(restConfig)
	if err != nil {
		return driver.Config{}, fmt.Errorf("dynamic client (EtcdSnapshotSchedules): %w", err)
	}
	creds, err := fallbackCredentials(o.etcdCA, o.etcdCert, o.etcdKey)
	if err != nil {
		return driver.Config{}, err
	}
	if o.createWait < 0 {
		return driver.Config{}, fmt.Errorf("-create-wait %v: must not be negative", o.createWait)
	}
	var le *driver.LeaderElectionConfig
	if o.leaderElection {
		ns := o.leaderElectionNamespace
		if ns == "" {
			ns = o.metadataNamespace
		}
		le = &driver.LeaderElectionConfig{
			Namespace: ns, Name: driver.DefaultLeaseName, Identity: leaderIdentity(),
			LeaseDuration: o.leaseDuration, RenewDeadline: o.renewDeadline, RetryPeriod: o.retryPeriod,
		}
	}
	return driver.Config{
		LeaderElection: le,
		DriverName:     o.driverName,
		Version:        version,
		Endpoint:       o.endpoint,
		HTTPAddress:    o.httpAddress,
		Snapshots:      snapshots,
		Dynamic:        dyn,
		Engine: driver.EngineConfig{
			Kube:                 kube,
			MetadataNamespace:    o.metadataNamespace,
			ClusterLabel:         o.clusterLabel,
			EtcdImage:            o.etcdImage,
			DriverImage:          o.driverImage,
			FallbackCreds:        creds,
			SnapshotStorageClass: o.storageClass,
			HealthTimeout:        o.healthTimeout,
			SweepGrace:           o.sweepGrace,
			CreateWait:           o.createWait,
		},
	}, nil
}

// leaderIdentity names this process in the Lease: the pod (POD_NAME from the downward API, else the
// host name) and a random suffix, so a restarted container never inherits its predecessor's lease.
func leaderIdentity() string {
	name := os.Getenv("POD_NAME")
	if name == "" {
		name, _ = os.Hostname()
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return name + "_" + hex.EncodeToString(b)
}

// kubeRESTConfig is the Kubernetes client configuration of -kubeconfig with -kube-api-qps and
// -kube-api-burst.
func kubeRESTConfig(o options) (*rest.Config, error) {
	if o.kubeAPIQPS <= 0 {
		return nil, fmt.Errorf("-kube-api-qps %v: must be more than 0", o.kubeAPIQPS)
	}
	if o.kubeAPIBurst < 1 {
		return nil, fmt.Errorf("-kube-api-burst %d: must be at least 1", o.kubeAPIBurst)
	}
	restConfig, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration (-kubeconfig %q): %w", o.kubeconfig, err)
	}
	restConfig.UserAgent = "etcd-snapshot-driver/" + version
	restConfig.QPS, restConfig.Burst = float32(o.kubeAPIQPS), o.kubeAPIBurst
	return restConfig, nil
}

// fallbackCredentials reads -etcd-ca, -etcd-cert and -etcd-key: all three or none.
func fallbackCredentials(caFile, certFile, keyFile string) (*driver.Credentials, error) {
	return driver.ReadCredentialFiles(caFile, certFile, keyFile)
}
