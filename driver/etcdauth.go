package driver

import (
	"context"
	"slices"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

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
