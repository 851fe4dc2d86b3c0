package driver

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// kubeStatus turns a Kubernetes API error into a gRPC status whose message starts with what the
// driver was doing. The code decides whether the sidecar retries, so only passing conditions get a
// retryable code (Unavailable, Aborted, ResourceExhausted, DeadlineExceeded, Canceled).
func kubeStatus(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf(format, args...)
	code := codes.Unavailable
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case isQuotaError(err):
		code = codes.ResourceExhausted
	case apierrors.IsConflict(err):
		code = codes.Aborted
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		// RBAC does not fix itself; the operator has to grant the verb.
		code = codes.PermissionDenied
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		// The API server refused an object built from the request (for example a class parameter).
		code = codes.InvalidArgument
	case apierrors.IsNotFound(err):
		code = codes.FailedPrecondition
	case apierrors.IsAlreadyExists(err):
		code = codes.AlreadyExists
	}
	return status.Errorf(code, "%s: %v", what, err)
}

// isQuotaError reports a ResourceQuota refusal: the API server answers Forbidden with "exceeded quota".
func isQuotaError(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "exceeded quota")
}

// asStatus makes sure an RPC never returns a bare Go error: the CO decides between retrying and
// recording a failure by the gRPC code, so unknown errors must not surface as codes.Unknown.
func asStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	var apiErr apierrors.APIStatus
	if errors.As(err, &apiErr) {
		return kubeStatus(err, "Kubernetes API")
	}
	return status.Error(codes.Internal, err.Error())
}

// invalidArgument builds the INVALID_ARGUMENT status for a request field.
func invalidArgument(field, format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "%s: %s", field, fmt.Sprintf(format, args...))
}
