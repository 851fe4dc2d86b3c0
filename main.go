// Command etcd-snapshot-driver is a CSI driver that takes verified etcd snapshots through Kubernetes
// Jobs; the subcommands table below lists what else the binary does.
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
	"sort"
	"strconv"
	"strings"
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

// subcommands are what the binary does besides serving as the driver: `etcd-snapshot-driver NAME
// [flags]`, also `kubectl etcd-snapshot NAME` when it is installed as kubectl-etcd_snapshot. The pod
// specs of the snapshot Jobs (driver/job.go) and the restore Jobs (driver/restorejob.go) run them.
var subcommands = []struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) int
}{
	{"restore", "restore a snapshot into its cluster's volumes or a new cluster's", runRestore},
	{"verify", "check a snapshot file (the snapshot and restore Jobs run it)", runVerify},
	{"prepare-save", "remove what a failed attempt left before a snapshot Job's save", runPrepareSave},
	{"restore-step", "prepare a member's volume for etcdutl, or swap the restored data dir in (restore Jobs)", runRestoreStep},
}

// subcommandNames lists the subcommands for a message: "a, b and c".
func subcommandNames() string {
	names := make([]string, len(subcommands))
	for i, c := range subcommands {
		names[i] = c.name
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

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
		for _, c := range subcommands {
			if c.name == args[0] {
				return c.run(args[1:], stdout, stderr)
			}
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
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage of %s:\n", fs.Name())
		fs.PrintDefaults()
		fmt.Fprintln(fs.Output(), "Subcommands, each with flags of its own (SUBCOMMAND -h):")
		for _, c := range subcommands {
			fmt.Fprintf(fs.Output(), "  %-13s %s\n", c.name, c.summary)
		}
	}
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
		fmt.Fprintf(stderr, "unexpected arguments %q; the subcommands are %s\n", fs.Args(), subcommandNames())
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

// runVerify parses the flags of `verify` and runs it.
func runVerify(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o driver.VerifyOptions
	fs.StringVar(&o.File, "file", "", "snapshot file written by `etcdctl snapshot save` (required)")
	fs.StringVar(&o.SHA256, "sha256", "", "hex sha256 the whole file must have (the snapshot record's); empty to skip")
	fs.StringVar(&o.TerminationLog, "termination-log", driver.DefaultTerminationLog, "file that receives the result for the pod's termination message; empty to skip")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.File == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "verify: usage: verify -file <snapshot.db> [-sha256 <hex>] [-termination-log <path>]")
		return 2
	}
	return driver.RunVerify(o, stdout, stderr)
}

// runPrepareSave parses the flags of `prepare-save` and runs it.
func runPrepareSave(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("prepare-save", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("file", "", "snapshot file the save will write (required)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "prepare-save: usage: prepare-save -file <snapshot.db>")
		return 2
	}
	return driver.RunPrepareSave(*file, stdout, stderr)
}

// restoreStepUsage is the usage line of the restore-step subcommand.
const restoreStepUsage = "restore-step: usage: restore-step prepare|swap -volume <dir> -data-dir <relative dir> -restore-id <id> [-delete-old (swap)] [-termination-log <path>]"

// runRestoreStep parses the step and the flags of `restore-step` and runs it; args[0] is the step,
// prepare or swap, which take the same flags but -delete-old (swap only).
func runRestoreStep(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "prepare" && args[0] != "swap") {
		fmt.Fprintln(stderr, restoreStepUsage)
		return 2
	}
	o := driver.RestoreStepOptions{Step: args[0]}
	fs := flag.NewFlagSet("restore-step "+o.Step, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Volume, "volume", "", "mount path of the member's volume (required)")
	fs.StringVar(&o.DataDir, "data-dir", "", "etcd data dir relative to -volume, like \"data\" (required)")
	fs.StringVar(&o.RestoreID, "restore-id", "", "id of this restore; names the restored, kept and marker files (required)")
	if o.Step == "swap" {
		fs.BoolVar(&o.DeleteOld, "delete-old", false, "after the swap, delete the old data dir instead of keeping it")
	}
	fs.StringVar(&o.TerminationLog, "termination-log", driver.DefaultTerminationLog, "file that receives the result for the pod's termination message; empty to skip")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		return driver.ReportFailure(o.TerminationLog, 2, fmt.Sprintf("restore-step %s: unexpected argument %q; %s", o.Step, fs.Arg(0), restoreStepUsage), stderr)
	}
	return driver.RunRestoreStep(o, stdout, stderr)
}

// mapFlag is a repeatable or comma-separated key=value flag.
type mapFlag map[string]string

func (m mapFlag) String() string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

func (m mapFlag) Set(v string) error {
	for _, kv := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" || val == "" {
			return fmt.Errorf("%q is not <member>=<value>", kv)
		}
		if _, dup := m[k]; dup {
			return fmt.Errorf("%q is given twice", k)
		}
		m[k] = val
	}
	return nil
}

// int64Flag is an optional int64 flag.
type int64Flag struct{ v *int64 }

func (f *int64Flag) String() string {
	if f.v == nil {
		return ""
	}
	return strconv.FormatInt(*f.v, 10)
}

func (f *int64Flag) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("%q is not a user or group id", s)
	}
	f.v = &n
	return nil
}

// restoreOptions are the flags of `restore`: the RestoreConfig they fill and those main.go reads.
type restoreOptions struct {
	cfg driver.RestoreConfig

	kubeconfig, kubeContext   string
	endpoints                 string
	caFile, certFile, keyFile string
	uid, gid                  int64Flag
	peerURLs, memberPVCs      mapFlag
}

// registerRestoreFlags defines the flags of `restore` on fs.
func registerRestoreFlags(fs *flag.FlagSet, o *restoreOptions) {
	o.peerURLs, o.memberPVCs = mapFlag{}, mapFlag{}
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; default $KUBECONFIG or ~/.kube/config, else in-cluster")
	fs.StringVar(&o.kubeContext, "context", "", "kubeconfig context")
	fs.StringVar(&o.cfg.Namespace, "namespace", "", "namespace of -group-snapshot and -volume-snapshot given without one; default the context's")
	fs.StringVar(&o.cfg.GroupSnapshot, "group-snapshot", "", "VolumeGroupSnapshot to restore, NAMESPACE/NAME or NAME")
	fs.StringVar(&o.cfg.VolumeSnapshot, "volume-snapshot", "", "VolumeSnapshot to restore, NAMESPACE/NAME or NAME")
	fs.StringVar(&o.cfg.SnapshotID, "snapshot-id", "", "snapshot id (etcdgs-... or etcds-...) to restore, for a retained content whose snapshot object is gone")
	fs.StringVar(&o.cfg.DriverName, "driver-name", driver.DefaultDriverName, "CSI driver name of the snapshots")
	fs.StringVar(&o.cfg.MetadataNamespace, "metadata-namespace", driver.DefaultMetadataNamespace, "namespace of the driver's snapshot records")
	fs.StringVar(&o.cfg.ClusterLabel, "cluster-label", driver.DefaultClusterLabel, "label key naming the etcd cluster on its PVCs and client Service")
	fs.StringVar(&o.cfg.EtcdImage, "etcd-image", driver.DefaultEtcdImage, "image providing /usr/local/bin/etcdutl")
	fs.StringVar(&o.cfg.DriverImage, "driver-image", driverImage(), "this driver's image, which verifies the snapshot and swaps the data dirs")
	fs.StringVar(&o.cfg.TargetNamespace, "target-namespace", "", "restore into a NEW cluster: new PVCs in this namespace (default: in place, into the snapshot's own PVCs)")
	fs.StringVar(&o.cfg.StatefulSet, "statefulset", "", "new cluster: StatefulSet name (members <statefulset>-<i>); default the snapshot's")
	fs.StringVar(&o.cfg.ClaimTemplate, "claim-template", "", "new cluster: volumeClaimTemplate name (PVCs <template>-<statefulset>-<i>); default the snapshot's")
	fs.IntVar(&o.cfg.Members, "members", 0, "new cluster: number of members; default the snapshot's voting members")
	fs.StringVar(&o.cfg.StorageClass, "storage-class", "", "new cluster: StorageClass of the new PVCs; default the source PVCs'")
	fs.StringVar(&o.cfg.Size, "size", "", "new cluster: size of the new PVCs; default the source PVCs'")
	fs.StringVar(&o.cfg.PeerURLTemplate, "peer-url-template", "", "new cluster: peer URL of each member, with {name}, {ordinal}, {statefulset}, {service}, {namespace}; default "+driver.DefaultPeerURLTemplate)
	fs.Var(o.peerURLs, "peer-urls", "new cluster: explicit peer URLs, MEMBER=URL[,MEMBER=URL...]")
	fs.StringVar(&o.cfg.Service, "service", "", "new cluster: the headless Service for {service}; default the StatefulSet name")
	fs.Var(o.memberPVCs, "member-pvc", "in place: which PVC holds which member, MEMBER=PVC[,...], when PVC names do not follow <template>-<member>")
	fs.StringVar(&o.cfg.DataDirInVolume, "data-dir-in-volume", "", "etcd's data dir relative to the PVC's root (e.g. data); default read from the StatefulSet")
	fs.Var(&o.uid, "uid", "user id etcd runs as; default the StatefulSet's runAsUser, else 65532")
	fs.Var(&o.gid, "gid", "group id etcd runs as; default the StatefulSet's runAsGroup, else 65532")
	fs.Int64Var(&o.cfg.BumpRevision, "bump-revision", driver.DefaultBumpRevision, "added to the revision, with --mark-compacted, so watchers re-list; 0 turns both off")
	fs.BoolVar(&o.cfg.Scale, "scale", false, "scale the StatefulSet to 0, restore, scale it back and check the cluster")
	fs.BoolVar(&o.cfg.Wait, "wait", false, "after the restore, wait for the cluster (started by you) and check it")
	fs.BoolVar(&o.cfg.DeleteOldData, "delete-old-data", false, "delete each member's old data dir once the restore is done (default: keep it as <data-dir>.before-restore-<id>)")
	fs.StringVar(&o.cfg.RestoreID, "restore-id", "", "id of this restore (default: new, or the one an interrupted run of the same restore left)")
	fs.StringVar(&o.endpoints, "endpoints", "", "client URLs of the restored cluster for the check, comma-separated; default the recorded members' (in place) or the new cluster's Service")
	fs.StringVar(&o.caFile, "etcd-ca", "", "CA bundle (PEM) for the check; with -etcd-cert and -etcd-key")
	fs.StringVar(&o.certFile, "etcd-cert", "", "client certificate (PEM) for the check")
	fs.StringVar(&o.keyFile, "etcd-key", "", "client key (PEM) for the check")
	fs.StringVar(&o.cfg.CredentialsSecret, "credentials-secret", "", "Secret NAMESPACE/NAME with ca.crt, tls.crt, tls.key for the check; default the one the snapshot's class names")
	fs.DurationVar(&o.cfg.Timeout, "timeout", driver.DefaultRestoreCheckTimeout, "how long to wait for the restored cluster to be healthy")
}

// runRestore parses the flags of `restore`, builds its Kubernetes clients and runs it. Exit 0 when
// restored (and, with -scale or -wait, checked), 1 on failure, 2 on bad usage.
func runRestore(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: etcd-snapshot-driver restore (-group-snapshot NS/NAME | -volume-snapshot NS/NAME | -snapshot-id ID) [-scale] [flags]")
		fs.PrintDefaults()
	}
	var o restoreOptions
	registerRestoreFlags(fs, &o)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "restore: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg := o.cfg
	cfg.UID, cfg.GID = o.uid.v, o.gid.v
	if len(o.peerURLs) > 0 {
		cfg.PeerURLs = o.peerURLs
	}
	if len(o.memberPVCs) > 0 {
		cfg.MemberPVCs = o.memberPVCs
	}
	if o.endpoints != "" {
		eps, err := driver.ParseEndpoints(o.endpoints)
		if err != nil {
			fmt.Fprintf(stderr, "restore: -endpoints: %v\n", err)
			return 2
		}
		cfg.Endpoints = eps
	}
	creds, err := driver.ReadCredentialFiles(o.caFile, o.certFile, o.keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "restore: %v\n", err)
		return 2
	}
	cfg.Creds = creds
	if err := driver.CheckRestoreConfig(cfg); err != nil {
		fmt.Fprintf(stderr, "restore: %v\n", err)
		return 2
	}
	if err := restoreClients(&cfg, o.kubeconfig, o.kubeContext); err != nil {
		fmt.Fprintf(stderr, "restore: %v\n", err)
		return 1
	}
	cfg.Progress = stderr
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return driver.RunRestore(ctx, cfg, stdout, stderr)
}

// restoreClients sets the Kubernetes clients of cfg from -kubeconfig and -context, and cfg.Namespace
// to the context's when -namespace is not given.
func restoreClients(cfg *driver.RestoreConfig, kubeconfig, kubeContext string) error {
	loading := clientcmd.NewDefaultClientConfigLoadingRules()
	loading.ExplicitPath = kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(loading, &clientcmd.ConfigOverrides{CurrentContext: kubeContext})
	rc, err := cc.ClientConfig()
	if err != nil {
		return fmt.Errorf("kubernetes client configuration: %w", err)
	}
	rc.UserAgent = "etcd-snapshot-driver-restore/" + version
	rc.QPS, rc.Burst = driver.DefaultKubeAPIQPS, driver.DefaultKubeAPIBurst
	if cfg.Namespace == "" {
		if cfg.Namespace, _, err = cc.Namespace(); err != nil {
			return fmt.Errorf("namespace of the kubeconfig context: %w", err)
		}
	}
	if cfg.Kube, err = kubernetes.NewForConfig(rc); err == nil {
		cfg.Snap, err = snapclientset.NewForConfig(rc)
	}
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	return nil
}
