package driver

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Missed-run arithmetic in the way of CronJob (kubernetes pkg/controller/cronjob, utils.go
// mostRecentScheduleTime): a run is due at the most recent schedule time after the last one accounted
// for; the earlier unstarted ones are missed, counted once because the accounted-for time moves past them.
const (
	// tooManyMissedRuns is CronJob's threshold for warning about clock skew or a long outage.
	tooManyMissedRuns = 100
	// maxScheduleSteps bounds the walk over schedule times; past it the count is estimated from the
	// interval (an @every 1s schedule down for 12 days), as CronJob does for every long walk.
	maxScheduleSteps = 1_000_000
)

// parseSchedule parses a 5-field cron expression or a descriptor (@hourly, @daily, @every 90m, ...)
// interpreted in the IANA time zone tz, UTC when tz is empty. Time zones come only from tz: CronJob
// refuses TZ= in the schedule and so does the CRD.
func parseSchedule(spec, tz string) (cron.Schedule, error) {
	if strings.Contains(spec, "TZ=") {
		return nil, errors.New("spec.schedule must not contain TZ= or CRON_TZ=; set spec.timeZone")
	}
	loc := time.UTC
	if tz != "" {
		l, err := time.LoadLocation(tz)
		if err != nil {
			return nil, fmt.Errorf("spec.timeZone %q is not a known IANA time zone: %v", tz, err)
		}
		loc = l
	}
	sched, err := cron.ParseStandard(spec)
	if err != nil {
		return nil, fmt.Errorf("spec.schedule %q: %v", spec, err)
	}
	if s, ok := sched.(*cron.SpecSchedule); ok {
		s.Location = loc
	}
	// An expression like "0 0 31 2 *" parses but never fires; robfig returns the zero time for it.
	first := sched.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC))
	if first.IsZero() || sched.Next(first).IsZero() {
		return nil, fmt.Errorf("spec.schedule %q never fires", spec)
	}
	return sched, nil
}

// dueRuns are the schedule times in (since, now].
type dueRuns struct {
	// count is how many there are (estimated beyond maxScheduleSteps).
	count int64
	// latest is the most recent; zero when count is 0.
	latest time.Time
}

// findDueRuns walks the schedule from since to now.
func findDueRuns(sched cron.Schedule, since, now time.Time) dueRuns {
	var d dueRuns
	for t := sched.Next(since); !t.IsZero() && !t.After(now); t = sched.Next(t) {
		d.count++
		d.latest = t
		if d.count < maxScheduleSteps {
			continue
		}
		// Estimate the rest from the interval, then let the schedule find the exact latest time from
		// two intervals before the estimate (irregular schedules such as weekdays only).
		interval := sched.Next(t).Sub(t)
		if interval <= 0 {
			return d
		}
		n := int64(now.Sub(t) / interval)
		d.count += n
		start := t
		if n > 2 {
			start = t.Add(time.Duration(n-2) * interval)
		}
		for u := sched.Next(start); !u.IsZero() && !u.After(now); u = sched.Next(u) {
			d.latest = u
		}
		return d
	}
	return d
}

// scheduleInterval is the time between the next two runs after now: the unit of "two intervals
// without a success" (BackupStale) and the metric the stale alert divides by.
func scheduleInterval(sched cron.Schedule, now time.Time) time.Duration {
	t1 := sched.Next(now)
	return sched.Next(t1).Sub(t1)
}

// runName is the VolumeGroupSnapshot of the run at t: the same name for the same run on every replica
// and after every restart, so a run is created at most once.
func runName(schedule string, t time.Time) string {
	return schedule + "-" + t.UTC().Format("20060102150405")
}
