package driver

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/testpki"
)

// checkTimeout is generous for a loaded machine; a healthy check takes milliseconds.
const checkTimeout = 20 * time.Second

// statusOf returns the status CheckCluster reported for member name.
func statusOf(t *testing.T, h *ClusterHealth, name string) MemberStatus {
	t.Helper()
	for _, m := range h.Members {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("member %q missing from health result %+v", name, h.Members)
	return MemberStatus{}
}

// TestCheckClusterQuorum stops members of one cluster one after another and checks the verdict each time.
func TestCheckClusterQuorum(t *testing.T) {
	c := startTestCluster(t, 3)
	c.Put(t, 10, "quorum/")
	firstLeader := c.leaderIndex(t)
	second := (firstLeader + 1) % 3

	// The rig's client Service is ExternalName=localhost while members advertise 127.0.0.1 URLs: the
	// member list comes through one name, each Status through the member's own address.
	viaService := []string{strings.Replace(c.ClientURLs[firstLeader], "127.0.0.1", "localhost", 1)}
	cases := []struct {
		name      string
		endpoints []string // nil means every member's client URL
		stop      int      // member index to stop before the check, -1 for none
		// check runs on the outcome; stopped lists the members stopped so far.
		check func(t *testing.T, h *ClusterHealth, err error, stopped []int)
	}{
		{
			name:      "all healthy through one service name",
			endpoints: viaService,
			stop:      -1,
			check: func(t *testing.T, h *ClusterHealth, err error, _ []int) {
				if err != nil {
					t.Fatalf("CheckCluster via %v: %v", viaService, err)
				}
				if h.HealthyVoters != 3 || h.Source == nil || h.Source.ID != c.memberID(firstLeader) {
					t.Errorf("healthy %d, source %+v; want 3 and the leader %x", h.HealthyVoters, h.Source, c.memberID(firstLeader))
				}
				for _, m := range h.Members {
					if len(m.ClientURLs) != 1 || !strings.HasPrefix(m.ClientURLs[0], "https://127.0.0.1:") {
						t.Errorf("member %q client URLs %v, want its own 127.0.0.1 URL", m.Name, m.ClientURLs)
					}
				}
			},
		},
		{
			name: "all healthy: snapshot from the leader",
			stop: -1,
			check: func(t *testing.T, h *ClusterHealth, err error, _ []int) {
				if err != nil {
					t.Fatalf("CheckCluster: %v", err)
				}
				if !h.HasQuorum || h.Voters != 3 || h.HealthyVoters != 3 {
					t.Errorf("quorum %v, voters %d healthy %d; want true, 3, 3", h.HasQuorum, h.Voters, h.HealthyVoters)
				}
				if h.LeaderID != c.memberID(firstLeader) {
					t.Errorf("LeaderID %x, want %x", h.LeaderID, c.memberID(firstLeader))
				}
				if h.Source == nil || h.Source.ID != h.LeaderID || !h.Source.Healthy {
					t.Fatalf("Source = %+v, want the healthy leader %x", h.Source, h.LeaderID)
				}
				if h.Source.Revision < 11 || h.Source.RaftIndex == 0 || h.Source.DBSize == 0 || h.Source.Version == "" {
					t.Errorf("Source status incomplete: %+v", h.Source)
				}
				for i, m := range h.Members {
					if len(m.ClientURLs) == 0 || len(m.PeerURLs) == 0 || m.Name == "" || m.IsLearner {
						t.Errorf("member %d incomplete: %+v", i, m.Member)
					}
				}
			},
		},
		{
			name: "leader stopped: snapshot from a healthy member, stopped member named",
			stop: firstLeader,
			check: func(t *testing.T, h *ClusterHealth, err error, stopped []int) {
				if err != nil {
					t.Fatalf("CheckCluster: %v", err)
				}
				if !h.HasQuorum || h.HealthyVoters != 2 || h.Voters != 3 {
					t.Errorf("quorum %v, voters %d healthy %d; want true, 3, 2", h.HasQuorum, h.Voters, h.HealthyVoters)
				}
				down := statusOf(t, h, fmt.Sprintf("m%d", stopped[0]))
				if down.Healthy || !strings.Contains(down.Reason, "connection refused") {
					t.Errorf("stopped member status = healthy %v reason %q, want unhealthy with connection refused", down.Healthy, down.Reason)
				}
				if h.Source == nil || !h.Source.Healthy || h.Source.ID == down.ID || h.Source.ID != h.LeaderID {
					t.Fatalf("Source = %+v, want the new healthy leader", h.Source)
				}
			},
		},
		{
			name: "two stopped: quorum lost, members named",
			stop: second,
			check: func(t *testing.T, h *ClusterHealth, err error, stopped []int) {
				wantCode(t, err, codes.FailedPrecondition, "quorum lost", "1 of 3 voting members healthy (need 2)",
					fmt.Sprintf(`member "m%d" (%s): connection refused`, stopped[0], c.ClientURLs[stopped[0]]),
					fmt.Sprintf(`member "m%d" (%s): connection refused`, stopped[1], c.ClientURLs[stopped[1]]))
				if h == nil || h.HasQuorum || h.HealthyVoters > 1 || h.Source != nil {
					t.Errorf("health alongside the error = %+v, want no quorum and no source", h)
				}
			},
		},
	}
	var stopped []int
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.stop >= 0 {
				c.Stop(tc.stop)
				stopped = append(stopped, tc.stop)
			}
			target := c.target()
			if tc.endpoints != nil {
				target.Endpoints = tc.endpoints
			}
			h, err := CheckCluster(context.Background(), target)
			tc.check(t, h, err, stopped)
		})
	}
}

// TestCheckClusterAlarms raises each blocking alarm the way etcd's own tests do (Maintenance.Alarm
// ACTIVATE, the request a member sends itself when it exceeds its quota) and expects a refusal.
func TestCheckClusterAlarms(t *testing.T) {
	c := startTestCluster(t, 3)
	cases := []struct {
		name   string
		alarm  pb.AlarmType
		member int
	}{
		{name: "NOSPACE", alarm: pb.AlarmType_NOSPACE, member: 1},
		{name: "CORRUPT", alarm: pb.AlarmType_CORRUPT, member: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
			defer cancel()
			req := &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: c.memberID(tc.member), Alarm: tc.alarm}
			if _, err := pb.NewMaintenanceClient(c.cli.ActiveConnection()).Alarm(ctx, req); err != nil {
				t.Fatalf("activate %s: %v", tc.alarm, err)
			}
			t.Cleanup(func() {
				req.Action = pb.AlarmRequest_DEACTIVATE
				if _, err := pb.NewMaintenanceClient(c.cli.ActiveConnection()).Alarm(context.Background(), req); err != nil {
					t.Errorf("deactivate %s: %v", tc.alarm, err)
				}
			})
			h, err := CheckCluster(ctx, c.target())
			wantCode(t, err, codes.FailedPrecondition, fmt.Sprintf(`%s on member "m%d"`, tc.alarm, tc.member))
			if h == nil || !h.HasQuorum || len(h.Alarms) != 1 || h.Source != nil {
				t.Errorf("health alongside the error = %+v, want quorum, one alarm, no source", h)
			}
		})
	}
	// With the alarms disarmed the same cluster is fit again, so the refusals above came from the alarms.
	if _, err := CheckCluster(context.Background(), c.target()); err != nil {
		t.Errorf("CheckCluster after disarming: %v", err)
	}
}

// TestCheckClusterTLS checks that certificate problems are reported as TLS failures, not as an
// unreachable cluster.
func TestCheckClusterTLS(t *testing.T) {
	c := startTestCluster(t, 3)
	other, err := testpki.NewCA("unrelated-ca")
	if err != nil {
		t.Fatal(err)
	}
	foreignClient, err := other.Issue("foreign-client")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		creds Credentials
		want  []string
	}{
		{
			name:  "CA that did not sign the server",
			creds: Credentials{CA: other.CertPEM(), Cert: c.Client.CertPEM, Key: c.Client.KeyPEM},
			want:  []string{"TLS", "x509", c.ClientURLs[0]},
		},
		{
			name:  "client certificate the server does not trust",
			creds: Credentials{CA: c.CA.CertPEM(), Cert: foreignClient.CertPEM, Key: foreignClient.KeyPEM},
			want:  []string{"TLS", c.ClientURLs[0]},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			target := c.target()
			target.Creds = tc.creds
			start := time.Now()
			h, err := CheckCluster(context.Background(), target)
			wantCode(t, err, codes.FailedPrecondition, tc.want...)
			if h != nil {
				t.Errorf("health = %+v, want nil when no member could be asked", h)
			}
			// A handshake failure is final; it must not wait out the timeout like an unreachable host.
			if d := time.Since(start); d > checkTimeout/2 {
				t.Errorf("TLS failure took %s to report", d)
			}
		})
	}
}

// TestCheckClusterRejectsBadTargets covers arguments refused before any connection is made, and an
// endpoint nothing listens on.
func TestCheckClusterRejectsBadTargets(t *testing.T) {
	ca, err := testpki.NewCA("bad-target-ca")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Issue("client")
	if err != nil {
		t.Fatal(err)
	}
	creds := Credentials{CA: ca.CertPEM(), Cert: kp.CertPEM, Key: kp.KeyPEM}
	closed := closedPortURL(t)
	silent := silentURL(t)
	cases := []struct {
		name   string
		target ClusterTarget
		code   codes.Code
		want   []string
	}{
		{"plaintext without opt-in", ClusterTarget{Endpoints: []string{"http://127.0.0.1:2379"}, Creds: creds}, codes.InvalidArgument, []string{"http://127.0.0.1:2379", "allowPlaintext"}},
		{"no endpoints", ClusterTarget{Creds: creds}, codes.InvalidArgument, []string{"no etcd endpoints"}},
		{"not a URL", ClusterTarget{Endpoints: []string{"127.0.0.1:2379"}, Creds: creds}, codes.InvalidArgument, []string{`"127.0.0.1:2379"`}},
		{"unsupported scheme", ClusterTarget{Endpoints: []string{"unix:///run/etcd.sock"}, Creds: creds}, codes.InvalidArgument, []string{"unix:///run/etcd.sock"}},
		{"certificate without key", ClusterTarget{Endpoints: []string{closed}, Creds: Credentials{CA: creds.CA, Cert: creds.Cert}}, codes.InvalidArgument, []string{"together"}},
		{"CA bundle without certificate", ClusterTarget{Endpoints: []string{closed}, Creds: Credentials{CA: []byte("not pem"), Cert: creds.Cert, Key: creds.Key}}, codes.InvalidArgument, []string{"ca.crt"}},
		{"key not matching certificate", ClusterTarget{Endpoints: []string{closed}, Creds: Credentials{CA: creds.CA, Cert: creds.Cert, Key: mustIssue(t, ca).KeyPEM}}, codes.InvalidArgument, []string{"tls.crt", "tls.key"}},
		{"nothing listening", ClusterTarget{Endpoints: []string{closed}, Creds: creds}, codes.Unavailable, []string{closed, "connection refused"}},
		{"endpoint that never answers", ClusterTarget{Endpoints: []string{silent}, Creds: creds, Timeout: time.Second}, codes.Unavailable, []string{silent, "timed out"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.target.Timeout == 0 {
				tc.target.Timeout = checkTimeout
			}
			h, err := CheckCluster(context.Background(), tc.target)
			wantCode(t, err, tc.code, tc.want...)
			if h != nil {
				t.Errorf("health = %+v, want nil", h)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("error quotes key material: %v", err)
			}
		})
	}
}

// mustIssue issues a fresh client key pair from ca.
func mustIssue(t *testing.T, ca *testpki.CA) *testpki.KeyPair {
	t.Helper()
	kp, err := ca.Issue("other-client")
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// silentURL returns an https URL on a loopback port that accepts connections and never speaks.
func silentURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		var conns []net.Conn
		for {
			conn, err := l.Accept()
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return
			}
			conns = append(conns, conn)
		}
	}()
	return "https://" + l.Addr().String()
}

// closedPortURL returns an https URL on a loopback port nothing listens on.
func closedPortURL(t *testing.T) string {
	t.Helper()
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("https://%s", net.JoinHostPort("127.0.0.1", fmt.Sprint(ports[0])))
}

// TestClusterHealthEvaluation covers the counting and choice rules on member sets a three-member test
// cluster cannot produce: learners, an unreachable leader, split leader views.
func TestClusterHealthEvaluation(t *testing.T) {
	voter := func(id uint64, healthy bool, leader, index uint64) MemberStatus {
		return MemberStatus{Member: Member{ID: id, Name: fmt.Sprintf("m%d", id)}, Healthy: healthy, LeaderID: leader, RaftIndex: index}
	}
	learner := func(id uint64, leader, index uint64) MemberStatus {
		m := voter(id, true, leader, index)
		m.IsLearner = true
		return m
	}
	cases := []struct {
		name            string
		members         []MemberStatus
		voters, healthy int
		quorum          bool
		leader, source  uint64 // source 0: none
		settling        bool
	}{
		{"healthy leader is the source", []MemberStatus{voter(1, true, 2, 10), voter(2, true, 2, 9), voter(3, true, 2, 10)}, 3, 3, true, 2, 2, false},
		{"learners do not vote and are never the source", []MemberStatus{voter(1, true, 1, 5), voter(2, false, 0, 0), voter(3, false, 0, 0), learner(4, 1, 50), learner(5, 1, 50)}, 3, 1, false, 1, 1, false},
		{"unreachable leader: highest raft index", []MemberStatus{voter(1, false, 0, 0), voter(2, true, 1, 7), voter(3, true, 1, 8)}, 3, 2, true, 1, 3, false},
		{"split leader views", []MemberStatus{voter(1, true, 1, 7), voter(2, true, 2, 7), voter(3, true, 2, 7)}, 3, 3, true, 0, 1, true},
		{"leader that is not a member", []MemberStatus{voter(1, true, 9, 7), voter(2, true, 9, 7), voter(3, false, 0, 0)}, 3, 2, true, 0, 1, true},
		{"even cluster needs a strict majority", []MemberStatus{voter(1, true, 1, 7), voter(2, true, 1, 7), voter(3, false, 0, 0), voter(4, false, 0, 0)}, 4, 2, false, 1, 1, false},
		{"election in progress", []MemberStatus{voter(1, true, 1, 7), {Member: Member{ID: 2, Name: "m2"}, Reason: reasonNoLeader}, voter(3, false, 0, 0)}, 3, 1, false, 1, 1, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := evaluate(tc.members)
			if h.Voters != tc.voters || h.HealthyVoters != tc.healthy || h.HasQuorum != tc.quorum || h.LeaderID != tc.leader {
				t.Errorf("voters %d healthy %d quorum %v leader %d; want %d %d %v %d", h.Voters, h.HealthyVoters, h.HasQuorum, h.LeaderID, tc.voters, tc.healthy, tc.quorum, tc.leader)
			}
			var source uint64
			if s := h.chooseSource(); s != nil {
				source = s.ID
			}
			if source != tc.source {
				t.Errorf("source %d, want %d", source, tc.source)
			}
			if got := h.settling(); got != tc.settling {
				t.Errorf("settling %v, want %v", got, tc.settling)
			}
		})
	}
}
