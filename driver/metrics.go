package driver

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

const metricsNamespace = "etcd_snapshot_driver"

// Registry holds every collector the driver exports on /metrics.
var Registry = prometheus.NewRegistry()

// snapshotDurationBuckets run from 1 s to 8192 s: past the Job deadline of an 8 GiB database
// (jobDeadline), so that the slowest snapshot that can still succeed lands in a bucket of its own.
var snapshotDurationBuckets = prometheus.ExponentialBuckets(1, 2, 14)

var (
	rpcTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "rpc_total",
		Help:      "CSI RPCs handled, by method and gRPC status code.",
	}, []string{"method", "code"})

	rpcDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metricsNamespace,
		Name:      "rpc_duration_seconds",
		Help:      "Latency of CSI RPCs, by method.",
		Buckets:   prometheus.ExponentialBuckets(0.001, 4, 9),
	}, []string{"method"})

	snapshotOperations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "snapshot_operations_total",
		Help:      "Finished snapshot operations, by operation (create, delete) and result (success, failure).",
	}, []string{"operation", "result"})

	snapshotDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: metricsNamespace,
		Name:      "snapshot_duration_seconds",
		Help:      "Time from accepting a snapshot request to a verified snapshot.",
		Buckets:   snapshotDurationBuckets,
	})

	snapshotSize = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: metricsNamespace,
		Name:      "snapshot_size_bytes",
		Help:      "Size of verified snapshot files.",
		Buckets:   prometheus.ExponentialBuckets(1<<20, 4, 9),
	})

	clusterHealthyMembers = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metricsNamespace,
		Name:      "cluster_healthy_members",
		Help:      "Healthy voting members seen at the last completed health check of an etcd cluster.",
	}, []string{"namespace", "cluster"})

	clusterQuorum = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metricsNamespace,
		Name:      "cluster_quorum",
		Help:      "1 when the last completed health check of an etcd cluster found quorum, else 0.",
	}, []string{"namespace", "cluster"})

	clusterLeaderPresent = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metricsNamespace,
		Name:      "cluster_leader_present",
		Help:      "1 when the last completed health check of an etcd cluster found a leader the healthy members agree on, else 0.",
	}, []string{"namespace", "cluster"})

	healthCheckTimestamp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metricsNamespace,
		Name:      "health_check_timestamp_seconds",
		Help:      "Unix time of the last completed health check of an etcd cluster, the time the cluster_* gauges describe.",
	}, []string{"namespace", "cluster"})

	healthCheckErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "health_check_errors_total",
		Help:      "Failed etcd health checks, by reason: tls, auth, unreachable, quorum, alarm.",
	}, []string{"namespace", "cluster", "reason"})

	scheduleLastSuccess = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metricsNamespace,
		Name:      "schedule_last_success_timestamp_seconds",
		Help:      "Creation time of the newest ready VolumeGroupSnapshot of an EtcdSnapshotSchedule (Unix seconds).",
	}, []string{"namespace", "schedule"})

	scheduleNextRun = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metricsNamespace,
		Name:      "schedule_next_run_timestamp_seconds",
		Help:      "Time of the next run of an EtcdSnapshotSchedule (Unix seconds); absent while suspended or invalid.",
	}, []string{"namespace", "schedule"})

	scheduleIntervalSeconds = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metricsNamespace,
		Name:      "schedule_interval_seconds",
		Help:      "Time between the next two runs of an EtcdSnapshotSchedule; the stale alert allows two of them without a success.",
	}, []string{"namespace", "schedule"})

	scheduleSnapshots = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metricsNamespace,
		Name:      "schedule_snapshots",
		Help:      "VolumeGroupSnapshots an EtcdSnapshotSchedule keeps, by state (ready, failed, running).",
	}, []string{"namespace", "schedule", "state"})

	scheduleRuns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "schedule_runs_total",
		Help:      "Finished runs of EtcdSnapshotSchedules, by result (success, failure).",
	}, []string{"namespace", "schedule", "result"})

	scheduleMissedRuns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "schedule_missed_runs_total",
		Help:      "Runs of EtcdSnapshotSchedules that never started (driver down, previous run in progress, past startingDeadlineSeconds).",
	}, []string{"namespace", "schedule"})

	snapshotsLost = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "snapshots_lost_total",
		Help:      "Ready snapshots whose file was found gone (the record turned Lost, with the reason).",
	})

	// sweeperRemoved counts what the sweeper (sweeper.go) removed, by kind.
	sweeperRemoved = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace,
		Name:      "sweeper_removed_total",
		Help:      "Abandoned snapshot objects the sweeper removed, by kind (pending, rollback, content, snapshot).",
	}, []string{"kind"})

	leader = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: metricsNamespace,
		Name:      "leader",
		Help:      "1 while this replica holds the leader Lease and runs the driver's controllers, else 0.",
	})
)

// healthFailureClasses are every reason label value of health_check_errors_total.
var healthFailureClasses = []string{failTLS, failAuth, failUnreachable, failQuorum, failAlarm}

func init() {
	// Every kind starts at 0 so that increase() sees the first removal.
	for _, kind := range []string{sweptPending, sweptRollback, sweptContent, sweptSnapshot} {
		sweeperRemoved.WithLabelValues(kind).Add(0)
	}
	Registry.MustRegister(
		rpcTotal, rpcDuration,
		snapshotOperations, snapshotDuration, snapshotSize,
		clusterHealthyMembers, clusterQuorum, clusterLeaderPresent, healthCheckTimestamp, healthCheckErrors,
		scheduleLastSuccess, scheduleNextRun, scheduleIntervalSeconds, scheduleSnapshots, scheduleRuns, scheduleMissedRuns,
		snapshotsLost, leader, sweeperRemoved,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
}

// observeClusterHealth publishes the outcome of one CheckCluster (h and err as it returned them): a
// failure is counted under its reason, and the health gauges and their timestamp change only when the
// check completed. A TLS, credential or network failure leaves them as the last completed check set
// them, so it never reads as an etcd outage.
func observeClusterHealth(namespace, cluster string, h *ClusterHealth, err error) {
	// Every reason is exported from the first check on, so rate() and increase() see the first error.
	for _, class := range healthFailureClasses {
		healthCheckErrors.WithLabelValues(namespace, cluster, class)
	}
	class, complete := healthOutcome(err)
	if class != "" {
		healthCheckErrors.WithLabelValues(namespace, cluster, class).Inc()
	}
	if !complete || h == nil {
		return
	}
	clusterHealthyMembers.WithLabelValues(namespace, cluster).Set(float64(h.HealthyVoters))
	clusterQuorum.WithLabelValues(namespace, cluster).Set(boolFloat(h.HasQuorum))
	clusterLeaderPresent.WithLabelValues(namespace, cluster).Set(boolFloat(h.LeaderID != 0))
	healthCheckTimestamp.WithLabelValues(namespace, cluster).SetToCurrentTime()
}

// forgetClusterHealth stops exporting every health series of a cluster.
func forgetClusterHealth(namespace, cluster string) {
	for _, g := range []*prometheus.GaugeVec{clusterHealthyMembers, clusterQuorum, clusterLeaderPresent, healthCheckTimestamp} {
		g.DeleteLabelValues(namespace, cluster)
	}
	healthCheckErrors.DeletePartialMatch(prometheus.Labels{"namespace": namespace, "cluster": cluster})
}

// forgetClusterIfGone drops a cluster's health series once the driver holds no snapshot record of it:
// the driver checks a cluster only to snapshot it, so with its last record deleted nothing will check
// it again, and a stale "quorum 1" or "quorum 0" would be reported for ever.
func (e *Engine) forgetClusterIfGone(obj metav1.Object) {
	namespace, cluster := obj.GetLabels()[labelNamespace], obj.GetLabels()[labelCluster]
	if namespace == "" || cluster == "" {
		return
	}
	left, err := e.meta.cache.List(labels.SelectorFromSet(labels.Set{labelNamespace: namespace, labelCluster: cluster}))
	if err != nil || len(left) > 0 {
		return
	}
	forgetClusterHealth(namespace, cluster)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
