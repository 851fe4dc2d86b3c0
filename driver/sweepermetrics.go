package driver

import "github.com/prometheus/client_golang/prometheus"

// sweeperRemoved counts what the sweeper (sweeper.go) removed, by kind: pending, rollback, content,
// snapshot.
var sweeperRemoved = prometheus.NewCounterVec(prometheus.CounterOpts{
	Namespace: metricsNamespace,
	Name:      "sweeper_removed_total",
	Help:      "Abandoned snapshot objects the sweeper removed, by kind (pending, rollback, content, snapshot).",
}, []string{"kind"})

// registerSweeperMetrics registers the sweeper's collectors with r, every kind starting at 0 so that
// increase() sees the first removal.
func registerSweeperMetrics(r prometheus.Registerer) {
	for _, kind := range []string{sweptPending, sweptRollback, sweptContent, sweptSnapshot} {
		sweeperRemoved.WithLabelValues(kind).Add(0)
	}
	r.MustRegister(sweeperRemoved)
}

// The call may as well move into metrics.go's init, beside the other collectors.
func init() { registerSweeperMetrics(Registry) }
