package driver

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestCreateFallsBackToRecordedMembers stops the member behind the client Service (etcdWorld points
// it at member 0): quorum still holds, and Create reaches the cluster through the client URLs of the
// members its most recent record lists. With no record to fall back on, or when no endpoint answers,
// the error names every endpoint tried.
func TestCreateFallsBackToRecordedMembers(t *testing.T) {
	cases := []struct {
		name      string
		earlier   bool // a snapshot of this cluster was taken before the member stopped
		stopAll   bool // every member stops, not only the Service's
		code      codes.Code
		wantTried int // endpoints the error must name
	}{
		{name: "a recorded member answers", earlier: true},
		{name: "no record to fall back on", code: codes.Unavailable, wantTried: 1},
		{name: "no member answers", earlier: true, stopAll: true, code: codes.Unavailable, wantTried: 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, cluster := startEngineWithEtcd(t)
			if tc.earlier {
				rec, err := f.engine.Create(f.ctx, groupRequest(cluster, "groupsnapshot-earlier"))
				if err != nil {
					t.Fatal(err)
				}
				f.waitRecord(rec.ID, func(r *Record) bool { return r.Phase == PhaseRunning })
			}
			cluster.Stop(0)
			if tc.stopAll {
				cluster.Stop(1)
				cluster.Stop(2)
			}
			rec, err := f.engine.Create(f.ctx, groupRequest(cluster, "groupsnapshot-after"))
			if tc.code != codes.OK {
				if status.Code(err) != tc.code {
					t.Fatalf("Create = %+v, %v; want %s", rec, err, tc.code)
				}
				// Each endpoint tried appears as "<url>: <reason>"; the Service's is localhost with member
				// 0's port, the recorded ones are the members' own URLs.
				msg := status.Convert(err).Message()
				tried := 0
				for _, u := range cluster.ClientURLs {
					tried += strings.Count(msg, u[strings.LastIndex(u, ":"):]+": ")
				}
				if tried != tc.wantTried {
					t.Errorf("error names %d endpoints, want %d: %s", tried, tc.wantTried, msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("Create with the Service's member down: %v", err)
			}
			if rec.SourceMember == nil || rec.SourceMember.Endpoint == cluster.ClientURLs[0] {
				t.Errorf("snapshot taken from %+v, the stopped member", rec.SourceMember)
			}
		})
	}
}
