package driver

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const metricsNamespace = "etcd_snapshot_driver"

// Registry holds every collector the driver exports on /metrics.
var Registry = prometheus.NewRegistry()

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
		Buckets:   prometheus.ExponentialBuckets(1, 2, 12),
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
		Help:      "Healthy voting members seen at the last health check of an etcd cluster.",
	}, []string{"namespace", "cluster"})

	clusterQuorum = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metricsNamespace,
		Name:      "cluster_quorum",
		Help:      "1 when the last health check of an etcd cluster found quorum, else 0.",
	}, []string{"namespace", "cluster"})

	clusterLeaderPresent = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: metricsNamespace,
		Name:      "cluster_leader_present",
		Help:      "1 when the last health check of an etcd cluster found a leader the healthy members agree on, else 0.",
	}, []string{"namespace", "cluster"})

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

	leader = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: metricsNamespace,
		Name:      "leader",
		Help:      "1 while this replica holds the leader Lease and runs the driver's controllers, else 0.",
	})
)

func init() {
	Registry.MustRegister(
		rpcTotal, rpcDuration,
		snapshotOperations, snapshotDuration, snapshotSize,
		clusterHealthyMembers, clusterQuorum, clusterLeaderPresent,
		scheduleLastSuccess, scheduleNextRun, scheduleIntervalSeconds, scheduleSnapshots, scheduleRuns, scheduleMissedRuns,
		leader,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
}

// observeClusterHealth publishes the outcome of one health check; a nil h (nothing reachable) reads as
// no healthy members, no quorum and no leader.
func observeClusterHealth(namespace, cluster string, h *ClusterHealth) {
	healthy, quorum, leader := 0.0, 0.0, 0.0
	if h != nil {
		healthy, quorum, leader = float64(h.HealthyVoters), boolFloat(h.HasQuorum), boolFloat(h.LeaderID != 0)
	}
	clusterHealthyMembers.WithLabelValues(namespace, cluster).Set(healthy)
	clusterQuorum.WithLabelValues(namespace, cluster).Set(quorum)
	clusterLeaderPresent.WithLabelValues(namespace, cluster).Set(leader)
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
