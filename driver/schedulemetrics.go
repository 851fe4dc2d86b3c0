package driver

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// publishScheduleMetrics sets the gauges of one schedule from the status just computed; the run
// counters move where the runs finish (schedulesync.go).
func publishScheduleMetrics(s *etcdSnapshotSchedule, st *scheduleStatus, runs []scheduleRun, interval time.Duration) {
	ns, name := s.Namespace, s.Name
	// Counters start at 0, so that increase() sees a schedule's first failure (the alert's trigger).
	scheduleRuns.WithLabelValues(ns, name, "success").Add(0)
	scheduleRuns.WithLabelValues(ns, name, "failure").Add(0)
	scheduleMissedRuns.WithLabelValues(ns, name).Add(0)
	if st.LastSuccessfulTime != nil {
		scheduleLastSuccess.WithLabelValues(ns, name).Set(float64(st.LastSuccessfulTime.Unix()))
	}
	if st.NextScheduleTime != nil {
		scheduleNextRun.WithLabelValues(ns, name).Set(float64(st.NextScheduleTime.Unix()))
	} else {
		scheduleNextRun.DeleteLabelValues(ns, name)
	}
	if interval > 0 {
		scheduleIntervalSeconds.WithLabelValues(ns, name).Set(interval.Seconds())
	} else {
		scheduleIntervalSeconds.DeleteLabelValues(ns, name)
	}
	for _, state := range []runState{runReady, runFailed, runInFlight} {
		scheduleSnapshots.WithLabelValues(ns, name, state.String()).Set(float64(countState(runs, state)))
	}
}

// forgetScheduleMetrics drops the series of a deleted schedule.
func forgetScheduleMetrics(namespace, name string) {
	l := prometheus.Labels{"namespace": namespace, "schedule": name}
	for _, v := range []*prometheus.GaugeVec{scheduleLastSuccess, scheduleNextRun, scheduleIntervalSeconds, scheduleSnapshots} {
		v.DeletePartialMatch(l)
	}
	scheduleRuns.DeletePartialMatch(l)
	scheduleMissedRuns.DeletePartialMatch(l)
}
