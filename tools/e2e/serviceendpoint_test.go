package e2e

import (
	"testing"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
)

// TestE2EServiceEndpointDown stops the member behind the cluster's client Service (member 0: the rig's
// ExternalName Service carries its port). Quorum holds, and a VolumeGroupSnapshot still becomes ready:
// the driver reaches the cluster through the member URLs of its most recent record, and saves from a
// member that is up.
func TestE2EServiceEndpointDown(t *testing.T) {
	r, ctx := setup(t)
	// The record to fall back on.
	_, earlier := readyGroup(t, ctx, r, uniqueName("e2e-before-endpoint-down"))
	if len(earlier.Members) != 3 {
		t.Fatalf("record %s lists members %+v, want 3", earlier.ID, earlier.Members)
	}

	if err := r.Etcd.StopMember(0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Etcd.StartMember(0); err != nil {
			t.Errorf("clean-up: restart etcd member 0: %v", err)
		}
	})
	_, rec := readyGroup(t, ctx, r, uniqueName("e2e-endpoint-down"))
	if rec.Phase != driver.PhaseReady || rec.SourceMember == nil {
		t.Fatalf("record %s: phase %s, source member %+v; want Ready", rec.ID, rec.Phase, rec.SourceMember)
	}
	if stopped := r.Etcd.MemberName(0); rec.SourceMember.Name == stopped {
		t.Errorf("record %s says it saved from %s, the member that is down", rec.ID, stopped)
	}
	t.Logf("with %s down, snapshot %s was saved from %s (%s)", r.Etcd.MemberName(0), rec.ID, rec.SourceMember.Name, rec.SourceMember.Endpoint)
}
