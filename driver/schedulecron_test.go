package driver

import (
	"testing"
	"time"
)

func TestParseSchedule(t *testing.T) {
	base := time.Date(2026, 3, 10, 9, 15, 30, 0, time.UTC)
	cases := []struct {
		name, spec, tz string
		wantNext       time.Time
		wantErr        string
	}{
		{name: "five fields", spec: "0 2 * * *", wantNext: time.Date(2026, 3, 11, 2, 0, 0, 0, time.UTC)},
		{name: "hourly", spec: "@hourly", wantNext: time.Date(2026, 3, 10, 10, 0, 0, 0, time.UTC)},
		{name: "daily", spec: "@daily", wantNext: time.Date(2026, 3, 11, 0, 0, 0, 0, time.UTC)},
		{name: "every", spec: "@every 10s", wantNext: time.Date(2026, 3, 10, 9, 15, 40, 0, time.UTC)},
		{name: "every 90m", spec: "@every 90m", wantNext: time.Date(2026, 3, 10, 10, 45, 30, 0, time.UTC)},
		// 02:00 in New York (EDT since March 8) is 06:00 UTC.
		{name: "time zone", spec: "0 2 * * *", tz: "America/New_York", wantNext: time.Date(2026, 3, 11, 6, 0, 0, 0, time.UTC)},
		{name: "six fields refused", spec: "0 0 2 * * *", wantErr: "spec.schedule"},
		{name: "garbage", spec: "every day", wantErr: "spec.schedule"},
		{name: "TZ in schedule", spec: "CRON_TZ=Europe/Berlin 0 2 * * *", wantErr: "set spec.timeZone"},
		{name: "unknown zone", spec: "0 2 * * *", tz: "Mars/Olympus", wantErr: "spec.timeZone"},
		{name: "never fires", spec: "0 0 31 2 *", wantErr: "never fires"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sched, err := parseSchedule(tc.spec, tc.tz)
			if checkErr(t, err, tc.wantErr) {
				return
			}
			if got := sched.Next(base); !got.Equal(tc.wantNext) {
				t.Errorf("Next(%s) = %s, want %s", base, got.UTC(), tc.wantNext)
			}
		})
	}
}

func TestFindDueRuns(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []struct {
		name, spec, tz string
		since, now     time.Time
		wantCount      int64
		wantLatest     time.Time
	}{
		{name: "nothing due yet", spec: "@hourly", since: at("2026-03-10T09:00:00Z"), now: at("2026-03-10T09:59:59Z")},
		{name: "exactly on time", spec: "@hourly", since: at("2026-03-10T09:00:00Z"), now: at("2026-03-10T10:00:00Z"),
			wantCount: 1, wantLatest: at("2026-03-10T10:00:00Z")},
		{name: "driver down five hours", spec: "0 * * * *", since: at("2026-03-10T04:00:00Z"), now: at("2026-03-10T09:30:00Z"),
			wantCount: 5, wantLatest: at("2026-03-10T09:00:00Z")},
		// Europe/Berlin skips 02:00-03:00 on 2026-03-29: robfig (and so CronJob) has no 02:30 that day.
		{name: "DST spring forward skips the hour", spec: "30 2 * * *", tz: "Europe/Berlin",
			since: time.Date(2026, 3, 28, 3, 0, 0, 0, berlin), now: time.Date(2026, 3, 29, 23, 0, 0, 0, berlin)},
		// and repeats 02:00-03:00 on 2026-10-25: two runs, an hour apart in UTC.
		{name: "DST fall back repeats the hour", spec: "30 2 * * *", tz: "Europe/Berlin",
			since: time.Date(2026, 10, 24, 12, 0, 0, 0, berlin), now: time.Date(2026, 10, 25, 12, 0, 0, 0, berlin),
			wantCount: 2, wantLatest: at("2026-10-25T01:30:00Z")},
		{name: "long outage of a fast schedule is estimated", spec: "@every 1s", since: at("2026-03-01T00:00:00Z"), now: at("2026-03-13T00:00:00Z"),
			wantCount: 12 * 24 * 3600, wantLatest: at("2026-03-13T00:00:00Z")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sched, err := parseSchedule(tc.spec, tc.tz)
			if err != nil {
				t.Fatal(err)
			}
			got := findDueRuns(sched, tc.since, tc.now)
			if got.count != tc.wantCount || !got.latest.Equal(tc.wantLatest) {
				t.Errorf("findDueRuns = %d runs, latest %s; want %d, latest %s", got.count, got.latest.UTC(), tc.wantCount, tc.wantLatest.UTC())
			}
		})
	}
}

func TestRunNameIsUTC(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	// The two 02:30 runs of the fall-back night get two names.
	first := runName("nightly", time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC).In(berlin))
	second := runName("nightly", time.Date(2026, 10, 25, 1, 30, 0, 0, time.UTC).In(berlin))
	if first != "nightly-20261025003000" || second != "nightly-20261025013000" {
		t.Errorf("run names %s, %s", first, second)
	}
}
