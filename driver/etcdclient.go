package driver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// memberTimeout bounds one call to one member URL; a member that cannot answer its local Status
	// within it is not fit to stream a snapshot.
	memberTimeout = 3 * time.Second
	// reasonNoLeader marks a member that answers but knows no leader, which an election may fix.
	reasonNoLeader = "reachable but knows no leader (election in progress or cut off from the other members)"
	reasonRefused  = "connection refused"
	reasonTimeout  = "timed out waiting for an answer"
)

// checkEndpoints refuses empty, malformed and (without opt-in) plaintext endpoints. A client URL is
// scheme://host[:port][/] and nothing else: the etcd client ignores a path, query or fragment, and
// user info would carry a password into messages and logs while etcd authenticates by certificate.
func checkEndpoints(endpoints []string, allowPlaintext bool) error {
	if len(endpoints) == 0 {
		return status.Error(codes.InvalidArgument, "no etcd endpoints: give client URLs such as https://etcd-0.etcd:2379")
	}
	for _, ep := range endpoints {
		u, err := url.Parse(ep)
		switch {
		case err != nil || u.Host == "" || u.Hostname() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(ep, "#"):
			return status.Errorf(codes.InvalidArgument, "etcd endpoint %q is not a client URL such as https://etcd-0.etcd:2379", ep)
		case u.User != nil:
			return status.Errorf(codes.InvalidArgument, "etcd endpoint %q carries user info; etcd authenticates the driver by its client certificate", redactUserInfo(u))
		case !strings.HasPrefix(ep, u.Scheme+"://"):
			return status.Errorf(codes.InvalidArgument, "etcd endpoint %q: write the scheme in lower case (https://)", ep)
		case u.Scheme == "http" && !allowPlaintext:
			return status.Errorf(codes.InvalidArgument, "etcd endpoint %q is plaintext http; use https or set the class parameter allowPlaintext=\"true\"", ep)
		case u.Scheme != "https" && u.Scheme != "http":
			return status.Errorf(codes.InvalidArgument, "etcd endpoint %q: scheme must be https (or http with allowPlaintext)", ep)
		}
	}
	return nil
}

// redactUserInfo prints u with its user info replaced, so a refusal does not repeat a password.
func redactUserInfo(u *url.URL) string {
	c := *u
	c.User = url.User("REDACTED")
	return c.String()
}

// checker holds the client shared by the calls of one CheckCluster.
type checker struct {
	cli            *clientv3.Client
	tls            *tls.Config
	allowPlaintext bool
}

// newChecker validates the target and builds its mTLS client; Close releases it.
func newChecker(t ClusterTarget) (*checker, error) {
	if err := checkEndpoints(t.Endpoints, t.AllowPlaintext); err != nil {
		return nil, err
	}
	tlsCfg, err := t.Creds.tlsConfig()
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: t.Endpoints,
		TLS:       tlsCfg,
		Logger:    zap.NewNop(),
		// One attempt per call: the caller wants the reason a member failed, not a retry loop that
		// ends in "context deadline exceeded".
		MaxUnaryRetries: 1,
	})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "etcd client for %v: %v", t.Endpoints, err)
	}
	return &checker{cli: cli, tls: tlsCfg, allowPlaintext: t.AllowPlaintext}, nil
}

// Close closes the client and every connection it made.
func (c *checker) Close() error { return c.cli.Close() }

// call runs fn against a fresh connection to exactly one URL, with the per-member timeout, failing
// fast (no wait-for-ready) so a dead or misconfigured member reports why.
func (c *checker) call(ctx context.Context, u string, fn func(context.Context, *grpc.ClientConn) error) error {
	conn, err := c.cli.Dial(u)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, memberTimeout)
	defer cancel()
	return fn(ctx, conn)
}

// memberList asks the endpoints in turn for the member list; serializable, so it still answers when
// quorum is lost and the health round can say which members are down.
func (c *checker) memberList(ctx context.Context, endpoints []string) ([]Member, error) {
	var failures []string
	classes := map[string]bool{}
	certRefused, certRequired := false, false
	for _, ep := range endpoints {
		var resp *pb.MemberListResponse
		err := c.call(ctx, ep, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
			resp, err = pb.NewClusterClient(conn).MemberList(ctx, &pb.MemberListRequest{Linearizable: false}, grpc.WaitForReady(false))
			return err
		})
		if err == nil {
			members := make([]Member, 0, len(resp.Members))
			for _, m := range resp.Members {
				members = append(members, Member{ID: m.ID, Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, IsLearner: m.IsLearner})
			}
			return members, nil
		}
		reason, class := c.reason(ctx, ep, err)
		classes[class] = true
		certRefused = certRefused || isRemoteCertRefusal(reason)
		certRequired = certRequired || strings.Contains(reason, "remote error: tls: certificate required")
		failures = append(failures, fmt.Sprintf("%s: %s", ep, reason))
	}
	if certRefused {
		failures = append(failures, describeRefusedClientCert(c.tls, certRequired))
	}
	// A refusal of the credentials is final and says more than the endpoints that merely did not answer.
	switch {
	case classes[failTLS]:
		return nil, healthFailure(failTLS, false, status.Errorf(codes.FailedPrecondition,
			"etcd TLS verification failed (check the CA bundle and client certificate): %s", strings.Join(failures, "; ")))
	case classes[failAuth]:
		return nil, healthFailure(failAuth, false, status.Errorf(codes.FailedPrecondition,
			"etcd refused the client's identity (with etcd auth enabled, the client certificate's common name must be an etcd user with the root role): %s",
			strings.Join(failures, "; ")))
	}
	return nil, healthFailure(failUnreachable, false, status.Errorf(codes.Unavailable, "no etcd endpoint answered MemberList: %s", strings.Join(failures, "; ")))
}

// statuses asks every member, concurrently, for its Status over its own client URLs.
func (c *checker) statuses(ctx context.Context, members []Member) []MemberStatus {
	out := make([]MemberStatus, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() { out[i] = c.memberStatus(ctx, m) })
	}
	wg.Wait()
	return out
}

// memberStatus tries the member's usable client URLs until one answers.
func (c *checker) memberStatus(ctx context.Context, m Member) MemberStatus {
	ms := MemberStatus{Member: m}
	urls := c.usableURLs(m.ClientURLs)
	if len(m.ClientURLs) == 0 {
		ms.Reason = "member has not started (no client URLs in the member list)"
		return ms
	}
	if len(urls) == 0 {
		ms.Reason = fmt.Sprintf("only plaintext client URLs %v; set allowPlaintext=\"true\" to use them", m.ClientURLs)
		return ms
	}
	var reasons []string
	for _, u := range urls {
		var resp *pb.StatusResponse
		err := c.call(ctx, u, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
			resp, err = pb.NewMaintenanceClient(conn).Status(ctx, &pb.StatusRequest{}, grpc.WaitForReady(false))
			return err
		})
		var reason string
		switch {
		case err != nil:
			reason, ms.failure = c.reason(ctx, u, err)
		case resp.Header.GetMemberId() != m.ID:
			reason = fmt.Sprintf("answers as member %x, not %x: the advertised client URL reaches another member", resp.Header.GetMemberId(), m.ID)
		case resp.Leader == 0:
			reason = reasonNoLeader
		case resp.DbSize < 0 || resp.DbSize > maxSizedDB:
			// The PVC and the Job deadline are sized from it; no etcd holds more than maxSizedDB.
			reason = fmt.Sprintf("reports an impossible database size of %d bytes", resp.DbSize)
		default:
			ms.Healthy, ms.Reason, ms.failure = true, "", ""
			ms.LeaderID, ms.RaftIndex, ms.RaftTerm = resp.Leader, resp.RaftIndex, resp.RaftTerm
			ms.Revision, ms.DBSize, ms.Version = resp.Header.GetRevision(), resp.DbSize, resp.Version
			ms.IsLearner = ms.IsLearner || resp.IsLearner
			return ms
		}
		if len(urls) == 1 {
			reasons = append(reasons, reason)
		} else {
			reasons = append(reasons, u+": "+reason)
		}
	}
	ms.Reason = strings.Join(reasons, "; ")
	return ms
}

// usableURLs orders https URLs first and drops plaintext ones unless allowed and unknown schemes.
func (c *checker) usableURLs(urls []string) []string {
	var secure, plain []string
	for _, u := range urls {
		switch {
		case strings.HasPrefix(u, "https://"):
			secure = append(secure, u)
		case strings.HasPrefix(u, "http://") && c.allowPlaintext:
			plain = append(plain, u)
		}
	}
	return append(secure, plain...)
}

// alarms lists the cluster's active alarms, asking the healthy members in turn. The list goes through
// raft, so with quorum present a failure everywhere is transient and reported as Unavailable.
func (c *checker) alarms(ctx context.Context, h *ClusterHealth) ([]string, error) {
	names := map[uint64]string{}
	for _, m := range h.Members {
		names[m.ID] = m.Name
	}
	var failures []string
	class := failUnreachable
	for _, m := range h.Members {
		if !m.Healthy {
			continue
		}
		for _, u := range c.usableURLs(m.ClientURLs) {
			var resp *pb.AlarmResponse
			err := c.call(ctx, u, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
				resp, err = pb.NewMaintenanceClient(conn).Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_GET}, grpc.WaitForReady(false))
				return err
			})
			if err != nil {
				reason, why := c.reason(ctx, u, err)
				if why != "" {
					class = why
				}
				failures = append(failures, fmt.Sprintf("%s: %s", m.label(), reason))
				continue
			}
			var out []string
			for _, a := range resp.Alarms {
				if a.Alarm != pb.AlarmType_NONE {
					out = append(out, fmt.Sprintf("%s on member %s", a.Alarm, memberLabel(a.MemberID, names[a.MemberID])))
				}
			}
			return out, nil
		}
	}
	return nil, healthFailure(class, false, status.Errorf(codes.Unavailable, "etcd alarm list unreadable: %s", strings.Join(failures, "; ")))
}

// reason describes why a call to u failed and classifies a refusal of the credentials (failTLS,
// failAuth; "" for anything else). A server that rejects the client certificate only says so after a
// TLS 1.3 handshake the client already counted as done, so gRPC reports a broken pipe or an EOF; a
// direct handshake and read then tells a TLS refusal apart from a network fault.
func (c *checker) reason(ctx context.Context, u string, err error) (string, string) {
	reason, class := describeCallError(err)
	if class != "" || reason == reasonRefused || reason == reasonTimeout || !strings.HasPrefix(u, "https://") {
		return reason, class
	}
	if tlsErr := probeTLS(ctx, u, c.tls); tlsErr != nil {
		return "TLS handshake failed: " + tlsErr.Error(), failTLS
	}
	return reason, ""
}

// probeTLS handshakes with the server at u and waits briefly for an alert; it returns only errors
// that come from TLS itself.
func probeTLS(ctx context.Context, u string, cfg *tls.Config) error {
	parsed, err := url.Parse(u)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, memberTimeout)
	defer cancel()
	cfg = cfg.Clone()
	cfg.ServerName = parsed.Hostname()
	cfg.NextProtos = []string{"h2"}
	d := tls.Dialer{Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", parsed.Host)
	if err != nil {
		if isTLSError(err) {
			return err
		}
		return nil
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetReadDeadline(deadline)
	if _, err := conn.Read(make([]byte, 1)); err != nil && isTLSError(err) {
		return err
	}
	return nil
}

// isTLSError reports errors raised by certificate checks or TLS alerts.
func isTLSError(err error) bool {
	var (
		alert    tls.AlertError
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
	)
	return errors.As(err, &alert) || errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) ||
		strings.Contains(err.Error(), "tls:")
}

// describeCallError turns the error of one call to one URL into a short reason and says whether the
// TLS handshake failed (failTLS) or etcd refused the client's identity (failAuth), which no retry
// fixes; class is "" for anything else.
func describeCallError(err error) (reason, class string) {
	msg := err.Error()
	if s, ok := status.FromError(err); ok {
		msg = s.Message()
	}
	msg = strings.TrimSuffix(strings.TrimPrefix(msg, `connection error: desc = "`), `"`)
	msg = strings.TrimPrefix(msg, "transport: ")
	switch {
	case strings.Contains(msg, "x509:") || strings.Contains(msg, "tls:") || strings.Contains(msg, "authentication handshake failed"):
		return "TLS handshake failed: " + strings.TrimPrefix(msg, "authentication handshake failed: "), failTLS
	case isEtcdAuthError(err):
		return msg, failAuth
	case strings.Contains(msg, "connection refused"):
		return reasonRefused, ""
	case errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded:
		return reasonTimeout, ""
	}
	return msg, ""
}
