package driver

import "time"

// Defaults of the driver's flags and the restore subcommand's (main.go), each written once here so
// that the driver and a restore run against it agree without being told.
const (
	// DefaultDriverName is the CSI driver name, as in the CSIDriver object and the snapshot classes.
	DefaultDriverName = "etcd-snapshot.csi.io"
	// DefaultEtcdImage provides etcdctl to the snapshot Jobs and etcdutl to the restore Jobs.
	DefaultEtcdImage = "gcr.io/etcd-development/etcd:v3.7.3"
	// DriverImageRepository is where the driver's own image is published; the binary's version is its
	// tag, and the Jobs run its subcommands from it.
	DriverImageRepository = "ghcr.io/etcd-snapshot-driver/etcd-snapshot-driver"
	// DefaultClusterLabel is the label key naming the etcd cluster on its PVCs and client Service.
	DefaultClusterLabel = "etcd.io/cluster"
	// DefaultMetadataNamespace holds the snapshot records (ConfigMaps) and the leader Lease.
	DefaultMetadataNamespace = "kube-system"
	// DefaultTerminationLog is where verify and restore-step leave their result: Kubernetes' default
	// terminationMessagePath, which the pod's termination message is read from.
	DefaultTerminationLog = "/dev/termination-log"
	// DefaultKubeAPIQPS and DefaultKubeAPIBurst are the client-side rate limit towards the Kubernetes
	// API server; client-go's own defaults (5 and 10) throttle a single snapshot's few dozen requests
	// by seconds.
	DefaultKubeAPIQPS   = 50
	DefaultKubeAPIBurst = 100
	// DefaultBumpRevision is added to the snapshot's revision on restore, with --mark-compacted, so that
	// watchers see revisions move forward and re-list instead of missing events (etcd-io/etcd#16028).
	DefaultBumpRevision = 1_000_000_000
	// DefaultPeerURLTemplate is a new cluster's member peer URL: a StatefulSet member's stable DNS name
	// behind its headless Service.
	DefaultPeerURLTemplate = "https://{name}.{service}.{namespace}.svc:2380"
	// DefaultRestoreCheckTimeout bounds the wait for the restored cluster to turn healthy.
	DefaultRestoreCheckTimeout = 5 * time.Minute
)
