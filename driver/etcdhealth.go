package driver

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang/glog"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// DefaultHealthTimeout bounds a whole CheckCluster when the target sets no Timeout; it is also
	// the default of -health-timeout and EngineConfig.HealthTimeout.
	DefaultHealthTimeout = 10 * time.Second
	// settleRounds is how many times the member Status round runs while a leader change is in flight
	// (reachable members that know no leader or disagree on it); elections end within a few ticks.
	settleRounds = 4
	settlePause  = 300 * time.Millisecond
)

// ClusterTarget says how to reach an etcd cluster and how long a health check may take.
type ClusterTarget struct {
	// Endpoints are client URLs (https://host:port) used to ask the cluster for its member list.
	Endpoints []string
	Creds     Credentials
	// AllowPlaintext permits http:// URLs; without it they are refused.
	AllowPlaintext bool
	// Timeout bounds the whole check; zero means DefaultHealthTimeout.
	Timeout time.Duration
}

// Member is one etcd cluster member as reported by MemberList.
type Member struct {
	ID         uint64
	Name       string
	PeerURLs   []string
	ClientURLs []string
	IsLearner  bool
}

// MemberStatus is a member together with what its own Status endpoint reported.
type MemberStatus struct {
	Member
	// Healthy is true when the member answered Status over its own client URL and knows a leader.
	Healthy bool
	// Reason says why the member is not healthy; empty when it is.
	Reason    string
	LeaderID  uint64
	RaftIndex uint64
	RaftTerm  uint64
	Revision  int64
	DBSize    int64
	Version   string

	// failure is failTLS or failAuth when the member refused the credentials, "" otherwise.
	failure string
}

// ClusterHealth summarises one CheckCluster run.
type ClusterHealth struct {
	Members       []MemberStatus
	Voters        int
	HealthyVoters int
	HasQuorum     bool
	// LeaderID is the leader the healthy members agree on, 0 when they do not.
	LeaderID uint64
	// Alarms are the active cluster alarms, e.g. `NOSPACE on member "m1"`.
	Alarms []string
	// Source is the member to snapshot: the leader if healthy, else the healthy voter with the highest
	// raft index. Nil when the check failed.
	Source *MemberStatus
}

// Failure classes of a health check, the reason label of health_check_errors_total.
const (
	// failTLS: a TLS handshake failed either way, or the client certificate, key or CA bundle is unusable.
	failTLS = "tls"
	// failAuth: etcd (auth enabled) refused the client's identity.
	failAuth = "auth"
	// failUnreachable: no member answered, or the check ran out of time before it could decide.
	failUnreachable = "unreachable"
	// failQuorum: the members answered and there is no quorum, or no leader they agree on.
	failQuorum = "quorum"
	// failAlarm: the cluster is healthy but a NOSPACE or CORRUPT alarm is active.
	failAlarm = "alarm"
)

// healthError is a failed health check: the gRPC status the caller returns, the failure class, and
// whether the check ran to the end, in which case the ClusterHealth beside it describes the cluster
// and may be published. A credentials or network failure describes the driver's view, not etcd.
type healthError struct {
	st       *status.Status
	class    string
	complete bool
}

// healthFailure classifies err, a gRPC status error.
func healthFailure(class string, complete bool, err error) error {
	return &healthError{st: status.Convert(err), class: class, complete: complete}
}

func (e *healthError) Error() string { return e.st.Err().Error() }

// GRPCStatus makes the error its status for status.FromError and status.Code.
func (e *healthError) GRPCStatus() *status.Status { return e.st }

// healthOutcome returns the failure class of a CheckCluster error ("" for success or an unclassified
// refusal such as a malformed endpoint) and whether the check completed.
func healthOutcome(err error) (class string, complete bool) {
	if err == nil {
		return "", true
	}
	var he *healthError
	if errors.As(err, &he) {
		return he.class, he.complete
	}
	return "", false
}

// CheckCluster asks the cluster for its members, checks every member over its own client URLs and
// decides whether a snapshot may be taken and from which member. Errors are gRPC statuses; the health
// is returned with a FailedPrecondition error whenever it was computed, and healthOutcome says whether
// the check completed and why it failed.
func CheckCluster(ctx context.Context, t ClusterTarget) (*ClusterHealth, error) {
	c, err := newChecker(t)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	timeout := t.Timeout
	if timeout <= 0 {
		timeout = DefaultHealthTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	members, err := c.memberList(ctx, t.Endpoints)
	if err != nil {
		return nil, err
	}
	var h *ClusterHealth
	for round := 1; ; round++ {
		h = evaluate(c.statuses(ctx, members))
		if round == settleRounds || !h.settling() || ctx.Err() != nil {
			break
		}
		glog.V(4).Infof("etcd %v: leader change in flight (round %d), checking members again", t.Endpoints, round)
		select {
		case <-ctx.Done():
		case <-time.After(settlePause):
		}
	}
	if !h.HasQuorum {
		if err := ctx.Err(); err != nil {
			// The check ran out of time or was cancelled: members may be slow, not down, so the answer
			// must stay retryable.
			return h, healthFailure(failUnreachable, false, status.Errorf(status.FromContextError(err).Code(),
				"etcd health check did not finish within %s: %s", timeout, h.quorumMessage()))
		}
		// Members that refuse the credentials say nothing about quorum: publishing "no quorum" for a
		// wrong certificate would look like an etcd outage.
		if class := h.credentialFailure(); class != "" {
			return h, healthFailure(class, false, status.Error(codes.FailedPrecondition,
				"etcd members refused the client's credentials, so quorum is unknown ("+h.quorumMessage()+")"))
		}
		return h, healthFailure(failQuorum, true, status.Error(codes.FailedPrecondition, h.quorumMessage()))
	}
	if h.Alarms, err = c.alarms(ctx, h); err != nil {
		return h, err
	}
	if blocking := blockingAlarms(h.Alarms); len(blocking) > 0 {
		return h, healthFailure(failAlarm, true, status.Errorf(codes.FailedPrecondition, "etcd alarm active, no snapshot taken: %s", strings.Join(blocking, "; ")))
	}
	if h.LeaderID == 0 {
		return h, healthFailure(failQuorum, true, status.Error(codes.FailedPrecondition, h.leaderMessage()))
	}
	h.Source = h.chooseSource()
	if h.Source == nil {
		return h, healthFailure(failQuorum, true, status.Error(codes.FailedPrecondition, "no healthy voting member to take the snapshot from"))
	}
	if err := c.snapshotPermitted(ctx, h.Source); err != nil {
		h.Source = nil
		return h, err
	}
	glog.V(4).Infof("etcd %v: %d of %d voters healthy, leader %x, source %q", t.Endpoints, h.HealthyVoters, h.Voters, h.LeaderID, h.Source.Name)
	return h, nil
}

// alarmAdvice says, for each alarm that refuses a snapshot, what the operator has to do.
var alarmAdvice = map[string]string{
	pb.AlarmType_NOSPACE.String(): "the backend quota is exhausted: compact and defragment, then `etcdctl alarm disarm`",
	pb.AlarmType_CORRUPT.String(): "the members' data diverged: find and replace the corrupt member, then `etcdctl alarm disarm`",
}

// blockingAlarms are the alarms under which a snapshot is refused, with advice: NOSPACE (the member
// takes no writes, its data sits at the quota) and CORRUPT (the data disagrees between members).
func blockingAlarms(alarms []string) []string {
	var out []string
	for _, a := range alarms {
		kind, _, _ := strings.Cut(a, " ")
		if advice, ok := alarmAdvice[kind]; ok {
			out = append(out, fmt.Sprintf("%s (%s)", a, advice))
		}
	}
	return out
}

// evaluate counts voters and healthy voters and finds the leader the healthy members agree on.
func evaluate(members []MemberStatus) *ClusterHealth {
	h := &ClusterHealth{Members: members}
	leaders := map[uint64]bool{}
	for _, m := range members {
		if !m.IsLearner {
			h.Voters++
			if m.Healthy {
				h.HealthyVoters++
			}
		}
		if m.Healthy {
			leaders[m.LeaderID] = true
		}
	}
	h.HasQuorum = h.Voters > 0 && h.HealthyVoters > h.Voters/2
	if len(leaders) == 1 {
		for id := range leaders {
			if slices.ContainsFunc(members, func(m MemberStatus) bool { return m.ID == id && !m.IsLearner }) {
				h.LeaderID = id
			}
		}
	}
	return h
}

// credentialFailure returns failTLS or failAuth when an unhealthy voter refused the credentials, so
// the lost quorum may be the driver's view only; "" when every failure was etcd's own.
func (h *ClusterHealth) credentialFailure() string {
	class := ""
	for _, m := range h.Members {
		switch {
		case m.Healthy || m.IsLearner:
		case m.failure == failTLS:
			return failTLS
		case m.failure == failAuth:
			class = failAuth
		}
	}
	return class
}

// settling reports a state a leader election resolves by itself: a majority of voters reachable, but
// some know no leader or the healthy ones disagree on it.
func (h *ClusterHealth) settling() bool {
	reachable := 0
	for _, m := range h.Members {
		if !m.IsLearner && (m.Healthy || strings.Contains(m.Reason, reasonNoLeader)) {
			reachable++
		}
	}
	return reachable > h.Voters/2 && (!h.HasQuorum || h.LeaderID == 0)
}

// chooseSource picks the leader if it is a healthy voter, else the healthy voter with the highest
// raft index (the most up-to-date copy).
func (h *ClusterHealth) chooseSource() *MemberStatus {
	var best *MemberStatus
	for i := range h.Members {
		m := &h.Members[i]
		if !m.Healthy || m.IsLearner {
			continue
		}
		if m.ID == h.LeaderID {
			return m
		}
		if best == nil || m.RaftIndex > best.RaftIndex {
			best = m
		}
	}
	return best
}

// quorumMessage names every unhealthy member and why.
func (h *ClusterHealth) quorumMessage() string {
	var b strings.Builder
	fmt.Fprintf(&b, "quorum lost: %d of %d voting members healthy (need %d)", h.HealthyVoters, h.Voters, h.Voters/2+1)
	for _, m := range h.Members {
		if !m.Healthy {
			fmt.Fprintf(&b, "; %s: %s", m.label(), m.Reason)
		}
	}
	return b.String()
}

// leaderMessage says which leader each healthy member reports.
func (h *ClusterHealth) leaderMessage() string {
	var parts []string
	for _, m := range h.Members {
		if m.Healthy {
			parts = append(parts, fmt.Sprintf("%s reports leader %x", m.label(), m.LeaderID))
		}
	}
	return "no leader agreed by the healthy members: " + strings.Join(parts, "; ")
}

// label names a member for messages: `member "m1" (https://10.0.0.1:2379)`.
func (m MemberStatus) label() string {
	l := "member " + memberLabel(m.ID, m.Name)
	if len(m.ClientURLs) > 0 {
		l += " (" + strings.Join(m.ClientURLs, ", ") + ")"
	}
	return l
}

// memberLabel is the quoted member name, or its hex id for a member that has not started.
func memberLabel(id uint64, name string) string {
	if name == "" {
		return fmt.Sprintf("%x", id)
	}
	return fmt.Sprintf("%q", name)
}
