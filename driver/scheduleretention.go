package driver

import (
	"sort"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// unboundErrorGrace is how long an error on a VolumeGroupSnapshot that is not bound to a content yet
// is taken for the snapshot-controller's transient driver-mismatch warning (dynamicgroup.go says why
// it refuses before the content this driver creates is bound) rather than a failed run. Once bound, an error is the driver's answer.
const unboundErrorGrace = 2 * time.Minute

// runState is where one scheduled VolumeGroupSnapshot is.
type runState int

const (
	runInFlight runState = iota
	runReady
	runFailed
)

func (s runState) String() string {
	switch s {
	case runReady:
		return "ready"
	case runFailed:
		return "failed"
	}
	return "running"
}

// scheduleRun is one VolumeGroupSnapshot a schedule created.
type scheduleRun struct {
	vgs *groupsnapshotv1.VolumeGroupSnapshot
	// at is the run's scheduled time (annotation), else the object's creation time.
	at    time.Time
	state runState
	// err is status.error's message of a failed run.
	err string
}

// classifyRun reads the state of one run.
func classifyRun(vgs *groupsnapshotv1.VolumeGroupSnapshot, now time.Time) scheduleRun {
	r := scheduleRun{vgs: vgs, at: vgs.CreationTimestamp.Time, state: runInFlight}
	if t, err := time.Parse(time.RFC3339, vgs.Annotations[annotationScheduledTime]); err == nil {
		r.at = t
	}
	st := vgs.Status
	switch {
	case st == nil:
	case st.ReadyToUse != nil && *st.ReadyToUse:
		r.state = runReady
	case st.Error != nil && (dgIsBound(vgs) || now.Sub(vgs.CreationTimestamp.Time) >= unboundErrorGrace):
		r.state = runFailed
		if st.Error.Message != nil {
			r.err = *st.Error.Message
		}
		if r.err == "" {
			r.err = "the VolumeGroupSnapshot reports an error without a message"
		}
	}
	return r
}

// sortRuns orders runs oldest first; the name (which embeds the time) breaks ties.
func sortRuns(runs []scheduleRun) {
	sort.Slice(runs, func(i, j int) bool {
		if !runs[i].at.Equal(runs[j].at) {
			return runs[i].at.Before(runs[j].at)
		}
		return runs[i].vgs.Name < runs[j].vgs.Name
	})
}

// pruneRuns returns the runs retention deletes, oldest first, from runs sorted oldest first: Ready runs
// beyond the newest keep, failed runs beyond the newest keepFailed, and Ready or failed runs older than
// maxAge. The newest Ready run is never returned, whatever its age, and a run in flight never is.
func pruneRuns(runs []scheduleRun, keep, keepFailed int, maxAge *metav1.Duration, now time.Time) []scheduleRun {
	var ready, failed []int
	for i, r := range runs {
		switch r.state {
		case runReady:
			ready = append(ready, i)
		case runFailed:
			failed = append(failed, i)
		}
	}
	drop := make(map[int]bool)
	for n, i := range ready {
		if n < len(ready)-keep {
			drop[i] = true
		}
	}
	for n, i := range failed {
		if n < len(failed)-keepFailed {
			drop[i] = true
		}
	}
	if maxAge != nil && maxAge.Duration > 0 {
		for _, i := range append(append([]int(nil), ready...), failed...) {
			if now.Sub(runs[i].at) > maxAge.Duration {
				drop[i] = true
			}
		}
	}
	if len(ready) > 0 {
		delete(drop, ready[len(ready)-1])
	}
	var out []scheduleRun
	for i, r := range runs {
		if drop[i] {
			out = append(out, r)
		}
	}
	return out
}
