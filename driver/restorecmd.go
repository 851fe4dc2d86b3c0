package driver

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	snapclientset "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// RestoreDefaults are the defaults of the restore subcommand that come from the binary's build.
type RestoreDefaults struct {
	DriverName  string
	EtcdImage   string
	DriverImage string
	UserAgent   string
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

// RunRestore is the `restore` subcommand (also `kubectl etcd-snapshot restore` when the binary is
// installed as kubectl-etcd_snapshot): it parses its flags, restores and prints the table. Exit 0
// when restored (and, with -scale or -wait, checked), 1 on failure, 2 on bad usage.
func RunRestore(args []string, d RestoreDefaults, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: etcd-snapshot-driver restore (-group-snapshot NS/NAME | -volume-snapshot NS/NAME | -snapshot-id ID) [-scale] [flags]")
		fs.PrintDefaults()
	}
	var cfg RestoreConfig
	var kubeconfig, kubeContext, endpoints, caFile, certFile, keyFile string
	uid, gid := &int64Flag{}, &int64Flag{}
	peerURLs, memberPVCs := mapFlag{}, mapFlag{}
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file; default $KUBECONFIG or ~/.kube/config, else in-cluster")
	fs.StringVar(&kubeContext, "context", "", "kubeconfig context")
	fs.StringVar(&cfg.Namespace, "namespace", "", "namespace of -group-snapshot and -volume-snapshot given without one; default the context's")
	fs.StringVar(&cfg.GroupSnapshot, "group-snapshot", "", "VolumeGroupSnapshot to restore, NAMESPACE/NAME or NAME")
	fs.StringVar(&cfg.VolumeSnapshot, "volume-snapshot", "", "VolumeSnapshot to restore, NAMESPACE/NAME or NAME")
	fs.StringVar(&cfg.SnapshotID, "snapshot-id", "", "snapshot id (etcdgs-... or etcds-...) to restore, for a retained content whose snapshot object is gone")
	fs.StringVar(&cfg.DriverName, "driver-name", d.DriverName, "CSI driver name of the snapshots")
	fs.StringVar(&cfg.MetadataNamespace, "metadata-namespace", DefaultMetadataNamespace, "namespace of the driver's snapshot records")
	fs.StringVar(&cfg.ClusterLabel, "cluster-label", DefaultClusterLabel, "label key naming the etcd cluster on its PVCs and client Service")
	fs.StringVar(&cfg.EtcdImage, "etcd-image", d.EtcdImage, "image providing /usr/local/bin/etcdutl")
	fs.StringVar(&cfg.DriverImage, "driver-image", d.DriverImage, "this driver's image, which verifies the snapshot and swaps the data dirs")
	fs.StringVar(&cfg.TargetNamespace, "target-namespace", "", "restore into a NEW cluster: new PVCs in this namespace (default: in place, into the snapshot's own PVCs)")
	fs.StringVar(&cfg.StatefulSet, "statefulset", "", "new cluster: StatefulSet name (members <statefulset>-<i>); default the snapshot's")
	fs.StringVar(&cfg.ClaimTemplate, "claim-template", "", "new cluster: volumeClaimTemplate name (PVCs <template>-<statefulset>-<i>); default the snapshot's")
	fs.IntVar(&cfg.Members, "members", 0, "new cluster: number of members; default the snapshot's voting members")
	fs.StringVar(&cfg.StorageClass, "storage-class", "", "new cluster: StorageClass of the new PVCs; default the source PVCs'")
	fs.StringVar(&cfg.Size, "size", "", "new cluster: size of the new PVCs; default the source PVCs'")
	fs.StringVar(&cfg.PeerURLTemplate, "peer-url-template", "", "new cluster: peer URL of each member, with {name}, {ordinal}, {statefulset}, {service}, {namespace}; default "+DefaultPeerURLTemplate)
	fs.Var(peerURLs, "peer-urls", "new cluster: explicit peer URLs, MEMBER=URL[,MEMBER=URL...]")
	fs.StringVar(&cfg.Service, "service", "", "new cluster: the headless Service for {service}; default the StatefulSet name")
	fs.Var(memberPVCs, "member-pvc", "in place: which PVC holds which member, MEMBER=PVC[,...], when PVC names do not follow <template>-<member>")
	fs.StringVar(&cfg.DataDirInVolume, "data-dir-in-volume", "", "etcd's data dir relative to the PVC's root (e.g. data); default read from the StatefulSet")
	fs.Var(uid, "uid", "user id etcd runs as; default the StatefulSet's runAsUser, else 65532")
	fs.Var(gid, "gid", "group id etcd runs as; default the StatefulSet's runAsGroup, else 65532")
	fs.Int64Var(&cfg.BumpRevision, "bump-revision", DefaultBumpRevision, "added to the revision, with --mark-compacted, so watchers re-list; 0 turns both off")
	fs.BoolVar(&cfg.Scale, "scale", false, "scale the StatefulSet to 0, restore, scale it back and check the cluster")
	fs.BoolVar(&cfg.Wait, "wait", false, "after the restore, wait for the cluster (started by you) and check it")
	fs.BoolVar(&cfg.DeleteOldData, "delete-old-data", false, "delete each member's old data dir once the restore is done (default: keep it as <data-dir>.before-restore-<id>)")
	fs.StringVar(&cfg.RestoreID, "restore-id", "", "id of this restore (default: new, or the one an interrupted run of the same restore left)")
	fs.StringVar(&endpoints, "endpoints", "", "client URLs of the restored cluster for the check, comma-separated; default the recorded members' (in place) or the new cluster's Service")
	fs.StringVar(&caFile, "etcd-ca", "", "CA bundle (PEM) for the check; with -etcd-cert and -etcd-key")
	fs.StringVar(&certFile, "etcd-cert", "", "client certificate (PEM) for the check")
	fs.StringVar(&keyFile, "etcd-key", "", "client key (PEM) for the check")
	fs.StringVar(&cfg.CredentialsSecret, "credentials-secret", "", "Secret NAMESPACE/NAME with ca.crt, tls.crt, tls.key for the check; default the one the snapshot's class names")
	fs.DurationVar(&cfg.Timeout, "timeout", DefaultRestoreCheckTimeout, "how long to wait for the restored cluster to be healthy")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "restore: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg.UID, cfg.GID = uid.v, gid.v
	if len(peerURLs) > 0 {
		cfg.PeerURLs = peerURLs
	}
	if len(memberPVCs) > 0 {
		cfg.MemberPVCs = memberPVCs
	}
	if endpoints != "" {
		eps, err := normalizeEndpoints(strings.Split(endpoints, ","), false)
		if err != nil {
			fmt.Fprintf(stderr, "restore: -endpoints: %v\n", err)
			return 2
		}
		cfg.Endpoints = eps
	}
	if caFile != "" || certFile != "" || keyFile != "" {
		creds, err := ReadCredentialFiles(caFile, certFile, keyFile)
		if err != nil {
			fmt.Fprintf(stderr, "restore: %v\n", err)
			return 2
		}
		cfg.Creds = creds
	}
	if err := checkRestoreConfig(cfg); err != nil {
		fmt.Fprintf(stderr, "restore: %v\n", err)
		return 2
	}

	loading := clientcmd.NewDefaultClientConfigLoadingRules()
	loading.ExplicitPath = kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(loading, &clientcmd.ConfigOverrides{CurrentContext: kubeContext})
	rc, err := cc.ClientConfig()
	if err != nil {
		fmt.Fprintf(stderr, "restore: kubernetes client configuration: %v\n", err)
		return 1
	}
	rc.UserAgent = d.UserAgent
	rc.QPS, rc.Burst = DefaultKubeAPIQPS, DefaultKubeAPIBurst
	if cfg.Namespace == "" {
		if cfg.Namespace, _, err = cc.Namespace(); err != nil {
			fmt.Fprintf(stderr, "restore: namespace of the kubeconfig context: %v\n", err)
			return 1
		}
	}
	if cfg.Kube, err = kubernetes.NewForConfig(rc); err == nil {
		cfg.Snap, err = snapclientset.NewForConfig(rc)
	}
	if err != nil {
		fmt.Fprintf(stderr, "restore: kubernetes client: %v\n", err)
		return 1
	}
	cfg.Progress = stderr

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	report, err := Restore(ctx, cfg)
	if report != nil && len(report.Members) > 0 {
		report.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "restore: %v\n", err)
		return 1
	}
	return 0
}

// ReadCredentialFiles reads the PEM files of -etcd-ca, -etcd-cert and -etcd-key: all three or none
// (nil, nil).
func ReadCredentialFiles(caFile, certFile, keyFile string) (*Credentials, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	if caFile == "" || certFile == "" || keyFile == "" {
		return nil, errors.New("-etcd-ca, -etcd-cert and -etcd-key go together: give all three or none")
	}
	var c Credentials
	for _, f := range []struct {
		flag, path string
		dst        *[]byte
	}{{"-etcd-ca", caFile, &c.CA}, {"-etcd-cert", certFile, &c.Cert}, {"-etcd-key", keyFile, &c.Key}} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.flag, err)
		}
		*f.dst = b
	}
	return &c, nil
}

// WriteTable prints one row per member and the check's result.
func (r *RestoreReport) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tPVC\tREVISION\tKEYS\tOLD DATA KEPT AT\tTIME")
	for _, m := range r.Members {
		kept := m.KeptAt
		if kept == "" {
			kept = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", m.Member, m.PVC, m.Revision, m.Keys, kept, m.Duration.Round(100*time.Millisecond))
	}
	tw.Flush()
	if c := r.Check; c != nil {
		fmt.Fprintf(w, "cluster: healthy (%d of %d voters, leader %s), revision %d (>= %d), %d keys (snapshot %d)\n",
			c.Healthy, c.Voters, c.Leader, c.Revision, c.WantRevision, c.Keys, c.WantKeys)
	}
	if r.Total > 0 {
		fmt.Fprintf(w, "restore %s of snapshot %s into namespace %s took %s\n", r.RestoreID, r.SnapshotID, r.Namespace, r.Total.Round(100*time.Millisecond))
	}
}
