package driver

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestScheduleMissedAcrossOutage: an hourly schedule whose driver was down five hours starts only the
// most recent run and counts four missed runs, once.
func TestScheduleMissedAcrossOutage(t *testing.T) {
	f := newSTFixture(t, stT0, []*unstructured.Unstructured{stSchedule("h", "0 * * * *", stT0)}, stClassObj(stClass, dgtDriver))
	f.mustSyncAt(t, "h", stT0.Add(time.Hour))
	f.finish(t, "h-20260310110000", stT0.Add(time.Hour+time.Minute), "")
	f.mustSyncAt(t, "h", stT0.Add(time.Hour+2*time.Minute))
	// Down from 11:02 to 16:20: runs at 12, 13, 14, 15 and 16 were due.
	f.mustSyncAt(t, "h", stT0.Add(6*time.Hour+20*time.Minute))
	f.mustSyncAt(t, "h", stT0.Add(6*time.Hour+21*time.Minute))
	if names := f.vgsNames(t); !reflect.DeepEqual(names, []string{"h-20260310110000", "h-20260310160000"}) {
		t.Fatalf("runs %v", names)
	}
	if got := testutil.ToFloat64(scheduleMissedRuns.WithLabelValues(stNS, "h")); got != 4 {
		t.Errorf("missed runs %v, want 4", got)
	}
	events := f.events(t, f.ctrl)
	if !strings.Contains(strings.Join(events, "\n"), "RunMissed: Missed 4 run(s)") {
		t.Errorf("events %v", events)
	}
}

// TestScheduleStartingDeadline: a run that cannot start within startingDeadlineSeconds is missed (no
// snapshot), counted once; the next run in time starts.
func TestScheduleStartingDeadline(t *testing.T) {
	f := newSTFixture(t, stT0, []*unstructured.Unstructured{stSchedule("d", "0 * * * *", stT0, func(spec map[string]any) {
		spec["startingDeadlineSeconds"] = int64(120)
	})}, stClassObj(stClass, dgtDriver))
	f.mustSyncAt(t, "d", stT0.Add(time.Hour+5*time.Minute)) // 5 minutes late
	f.mustSyncAt(t, "d", stT0.Add(time.Hour+6*time.Minute))
	if names := f.vgsNames(t); len(names) != 0 {
		t.Fatalf("a run past its deadline started: %v", names)
	}
	st := f.status(t, "d")
	if st.LastMissedScheduleTime == nil || !st.LastMissedScheduleTime.Time.Equal(stT0.Add(time.Hour)) || st.LastScheduleTime != nil {
		t.Errorf("status %+v", st)
	}
	if got := testutil.ToFloat64(scheduleMissedRuns.WithLabelValues(stNS, "d")); got != 1 {
		t.Errorf("missed runs %v, want 1", got)
	}
	f.mustSyncAt(t, "d", stT0.Add(2*time.Hour+90*time.Second)) // within the deadline
	if names := f.vgsNames(t); !reflect.DeepEqual(names, []string{"d-20260310120000"}) {
		t.Fatalf("runs %v", names)
	}
	if got := reasons(f.events(t, f.ctrl)); !reflect.DeepEqual(got, []string{evRunMissed, evSnapshotCreated}) {
		t.Errorf("events %v", got)
	}
}

// TestScheduleAcrossDST: a 02:30 Europe/Berlin schedule over both 2026 changes, with a run per sync,
// gets one run a day except none on the spring-forward day (no 02:30 exists) and two on the
// fall-back day, each named by its distinct UTC time. That is robfig/cron's behaviour, and a CronJob's.
func TestScheduleAcrossDST(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		start, end time.Time
		want       []string
	}{
		{name: "spring forward", start: time.Date(2026, 3, 27, 12, 0, 0, 0, berlin), end: time.Date(2026, 3, 31, 12, 0, 0, 0, berlin),
			want: []string{"b-20260328013000", "b-20260330003000", "b-20260331003000"}},
		{name: "fall back", start: time.Date(2026, 10, 23, 12, 0, 0, 0, berlin), end: time.Date(2026, 10, 26, 12, 0, 0, 0, berlin),
			want: []string{"b-20261024003000", "b-20261025003000", "b-20261025013000", "b-20261026013000"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newSTFixture(t, tc.start, []*unstructured.Unstructured{stSchedule("b", "30 2 * * *", tc.start, func(spec map[string]any) {
				spec["timeZone"] = "Europe/Berlin"
			})}, stClassObj(stClass, dgtDriver))
			now := tc.start
			for i := 0; i < 20; i++ {
				after := f.mustSyncAt(t, "b", now)
				for _, name := range f.vgsNames(t) {
					if v := f.vgs(t, name); v.Status == nil {
						f.finish(t, name, now.Add(time.Second), "")
					}
				}
				now = now.Add(after + time.Second)
				if now.After(tc.end) {
					break
				}
			}
			if got := f.vgsNames(t); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("runs %v, want %v", got, tc.want)
			}
			if got := testutil.ToFloat64(scheduleMissedRuns.WithLabelValues(stNS, "b")); got != 0 {
				t.Errorf("%v missed runs, want none", got)
			}
		})
	}
}

// TestScheduleTooManyMissed: a clock jump of a year over an hourly schedule starts the latest run,
// counts every missed one and says to check the clocks, as CronJob does past 100.
func TestScheduleTooManyMissed(t *testing.T) {
	f := newSTFixture(t, stT0, []*unstructured.Unstructured{stSchedule("y", "0 * * * *", stT0)}, stClassObj(stClass, dgtDriver))
	at := stT0.AddDate(1, 0, 0).Add(30 * time.Minute)
	f.mustSyncAt(t, "y", at)
	if names := f.vgsNames(t); !reflect.DeepEqual(names, []string{"y-20270310100000"}) {
		t.Fatalf("runs %v", names)
	}
	hours := at.Sub(stT0) / time.Hour
	if got := testutil.ToFloat64(scheduleMissedRuns.WithLabelValues(stNS, "y")); got != float64(hours-1) {
		t.Errorf("missed runs %v, want %d", got, hours-1)
	}
	if events := strings.Join(f.events(t, f.ctrl), "\n"); !strings.Contains(events, "check the clocks") {
		t.Errorf("no clock warning in %s", events)
	}
}
