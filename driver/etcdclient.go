package driver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
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

// Credentials are the PEM-encoded CA bundle, client certificate and client key used for etcd mTLS.
type Credentials struct{ CA, Cert, Key []byte }

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

// tlsConfig builds the client TLS configuration; server certificates are always verified, against the
// CA bundle when given, else against the system roots. A client certificate etcd would refuse for its
// dates or its usage is refused here, by name, rather than as a handshake alert from every member.
func (c Credentials) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(c.CA) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(c.CA) {
			return nil, healthFailure(failTLS, false, status.Error(codes.InvalidArgument, "etcd CA bundle (ca.crt) holds no PEM certificate"))
		}
		cfg.RootCAs = pool
	}
	switch {
	case len(c.Cert) > 0 && len(c.Key) > 0:
		pair, err := tls.X509KeyPair(c.Cert, c.Key)
		if err != nil {
			// The tls package's messages describe the problem without quoting key material.
			return nil, healthFailure(failTLS, false, status.Errorf(codes.InvalidArgument, "etcd client certificate (tls.crt) and key (tls.key) do not load: %v", err))
		}
		if err := checkClientCert(pair.Leaf, time.Now()); err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	case len(c.Cert) > 0 || len(c.Key) > 0:
		return nil, healthFailure(failTLS, false, status.Error(codes.InvalidArgument, "etcd client certificate (tls.crt) and key (tls.key) must be given together"))
	}
	return cfg, nil
}

// checkClientCert refuses a client certificate that any etcd server refuses (crypto/tls verifies a
// client's chain at the current time and for ExtKeyUsageClientAuth): expired, not yet valid, or meant
// for another use. The message names the certificate by subject, issuer and dates, never its key.
func checkClientCert(leaf *x509.Certificate, now time.Time) error {
	refuse := func(format string, args ...any) error {
		return healthFailure(failTLS, false, status.Errorf(codes.FailedPrecondition, "etcd client certificate (tls.crt) "+format, args...))
	}
	switch {
	case now.After(leaf.NotAfter):
		return refuse("expired %s ago: %s; issue a new one and update the Secret", now.Sub(leaf.NotAfter).Round(time.Second), describeCert(leaf))
	case now.Before(leaf.NotBefore):
		return refuse("is not valid yet (in %s; is a clock wrong?): %s", leaf.NotBefore.Sub(now).Round(time.Second), describeCert(leaf))
	case !forClientAuth(leaf):
		return refuse("is not for client authentication (extended key usage %s; etcd requires clientAuth): %s", extKeyUsages(leaf), describeCert(leaf))
	}
	return nil
}

// forClientAuth reports whether the certificate may authenticate a TLS client; no extended key usage
// at all means any use, as x509.Certificate.Verify reads it.
func forClientAuth(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	return slices.ContainsFunc(c.ExtKeyUsage, func(u x509.ExtKeyUsage) bool {
		return u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny
	})
}

// extKeyUsageNames are the names RFC 5280 gives the usages a TLS certificate is likely to carry.
var extKeyUsageNames = map[x509.ExtKeyUsage]string{
	x509.ExtKeyUsageServerAuth:      "serverAuth",
	x509.ExtKeyUsageClientAuth:      "clientAuth",
	x509.ExtKeyUsageCodeSigning:     "codeSigning",
	x509.ExtKeyUsageEmailProtection: "emailProtection",
	x509.ExtKeyUsageTimeStamping:    "timeStamping",
	x509.ExtKeyUsageOCSPSigning:     "OCSPSigning",
}

// extKeyUsages lists a certificate's extended key usages by name, unknown ones by OID.
func extKeyUsages(c *x509.Certificate) string {
	var names []string
	for _, u := range c.ExtKeyUsage {
		if n, ok := extKeyUsageNames[u]; ok {
			names = append(names, n)
		} else {
			names = append(names, fmt.Sprintf("#%d", u))
		}
	}
	for _, oid := range c.UnknownExtKeyUsage {
		names = append(names, oid.String())
	}
	return strings.Join(names, ", ")
}

// describeCert names a certificate for a message: subject, issuer and validity, all public.
func describeCert(c *x509.Certificate) string {
	return fmt.Sprintf("subject %q, issuer %q, valid from %s to %s", c.Subject.String(), c.Issuer.String(),
		c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
}

// describeRefusedClientCert explains a handshake the server ended with an alert about the client's
// certificate: which certificate it was and, when a CA bundle is given, whether it chains to it (a
// client certificate from another CA than the server's is the usual cause).
func describeRefusedClientCert(cfg *tls.Config, required bool) string {
	if len(cfg.Certificates) == 0 || cfg.Certificates[0].Leaf == nil {
		return "the server requires a client certificate and none is configured (tls.crt, tls.key)"
	}
	pair := cfg.Certificates[0]
	msg := "the server refused the client certificate, " + describeCert(pair.Leaf)
	if required {
		// crypto/tls sends a client certificate only if its issuer is among the CAs the server
		// names in its request; otherwise it sends none and the server says a certificate is required.
		msg = "the server accepts client certificates only from CAs it trusts, and the configured one is not signed by any of them, " +
			"so none was sent: " + describeCert(pair.Leaf)
	}
	if cfg.RootCAs == nil {
		return msg
	}
	intermediates := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			intermediates.AddCert(c)
		}
	}
	opts := x509.VerifyOptions{Roots: cfg.RootCAs, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := pair.Leaf.Verify(opts); err != nil {
		msg += fmt.Sprintf("; it does not chain to the CA bundle ca.crt either (%v)", err)
	}
	return msg
}

// isRemoteCertRefusal reports a TLS alert the server sent about the client's certificate (alert texts
// as crypto/tls prints them).
func isRemoteCertRefusal(reason string) bool {
	for _, alert := range []string{"bad certificate", "unknown certificate authority", "expired certificate",
		"unsupported certificate", "certificate required", "revoked certificate", "unknown certificate"} {
		if strings.Contains(reason, "remote error: tls: "+alert) {
			return true
		}
	}
	return false
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

// etcdRootRole is the role etcd requires for Maintenance.Snapshot (`etcdctl snapshot save`) once auth
// is enabled (go.etcd.io/etcd/server/v3, etcdserver/api/v3rpc/maintenance.go: isPermitted, admin only).
const etcdRootRole = "root"

// snapshotPermitted checks, on the member the snapshot will come from, that etcd will let the client
// save a snapshot: with auth enabled, the client certificate's common name must be a user holding the
// root role. Without this check the health check passes and the Job fails three times on "permission
// denied". A user may read its own entry (go.etcd.io/etcd/server/v3, etcdserver/apply/auth.go UserGet),
// so no extra right is needed.
func (c *checker) snapshotPermitted(ctx context.Context, m *MemberStatus) error {
	urls := c.usableURLs(m.ClientURLs)
	if len(urls) == 0 {
		return nil // clientURL reports this with the member's name
	}
	var enabled bool
	err := c.call(ctx, urls[0], func(ctx context.Context, conn *grpc.ClientConn) error {
		resp, err := pb.NewAuthClient(conn).AuthStatus(ctx, &pb.AuthStatusRequest{}, grpc.WaitForReady(false))
		enabled = err == nil && resp.Enabled
		return err
	})
	if status.Code(err) == codes.Unimplemented {
		return nil // etcd before 3.5 has no AuthStatus; the Job reports a refusal itself
	}
	if err != nil {
		reason, class := c.reason(ctx, urls[0], err)
		if class == "" {
			class = failUnreachable
		}
		return healthFailure(class, false, status.Errorf(codes.Unavailable, "etcd member %s: auth status unreadable: %s", m.label(), reason))
	}
	if !enabled {
		return nil
	}
	refuse := func(format string, args ...any) error {
		return healthFailure(failAuth, false, status.Errorf(codes.FailedPrecondition, "etcd auth is enabled and "+format+
			"; `etcdctl snapshot save` needs the %s role: grant it (etcdctl user grant-role <user> %s)", append(args, etcdRootRole, etcdRootRole)...))
	}
	if len(c.tls.Certificates) == 0 || c.tls.Certificates[0].Leaf == nil || c.tls.Certificates[0].Leaf.Subject.CommonName == "" {
		return refuse("the client certificate names no user (empty common name)")
	}
	user := c.tls.Certificates[0].Leaf.Subject.CommonName
	var roles []string
	err = c.call(ctx, urls[0], func(ctx context.Context, conn *grpc.ClientConn) error {
		resp, err := pb.NewAuthClient(conn).UserGet(ctx, &pb.AuthUserGetRequest{Name: user}, grpc.WaitForReady(false))
		if err == nil {
			roles = resp.Roles
		}
		return err
	})
	switch {
	case err != nil && status.Convert(err).Message() == status.Convert(rpctypes.ErrGRPCUserNotFound).Message():
		return refuse("etcd has no user %q (the client certificate's common name)", user)
	case err != nil:
		reason, class := c.reason(ctx, urls[0], err)
		if class == "" {
			class = failUnreachable
		}
		return healthFailure(class, false, status.Errorf(codes.Unavailable, "etcd member %s: user %q unreadable: %s", m.label(), user, reason))
	case !slices.Contains(roles, etcdRootRole):
		return refuse("user %q (the client certificate's common name) has roles %v", user, roles)
	}
	return nil
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

// etcdAuthErrors are etcd's answers to a client whose identity it does not accept (go.etcd.io/etcd/api/v3
// v3rpc/rpctypes).
var etcdAuthErrors = []error{
	rpctypes.ErrGRPCUserEmpty, rpctypes.ErrGRPCAuthFailed, rpctypes.ErrGRPCPermissionDenied,
	rpctypes.ErrGRPCInvalidAuthToken, rpctypes.ErrGRPCUserNotFound, rpctypes.ErrGRPCAuthOldRevision,
}

// isEtcdAuthError reports an etcd auth refusal; etcd sends some as InvalidArgument, so the message
// decides, and any PermissionDenied or Unauthenticated counts too.
func isEtcdAuthError(err error) bool {
	s, ok := status.FromError(err)
	if !ok {
		return false
	}
	if s.Code() == codes.PermissionDenied || s.Code() == codes.Unauthenticated {
		return true
	}
	for _, authErr := range etcdAuthErrors {
		if want := status.Convert(authErr); s.Code() == want.Code() && s.Message() == want.Message() {
			return true
		}
	}
	return false
}
