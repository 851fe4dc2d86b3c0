package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Class parameters the driver understands (CONTRACTS.md "Class parameters").
const (
	paramEndpoints            = "endpoints"
	paramSnapshotStorageClass = "snapshotStorageClass"
	paramSnapshotMinSize      = "snapshotMinSize"
	paramSnapshotSize         = "snapshotSize"
	paramAllowPlaintext       = "allowPlaintext"

	// reservedParamPrefix marks parameters the CSI sidecars add themselves (secret references are
	// stripped before the call; --extra-create-metadata adds object names). They are not ours to
	// validate and must not change a snapshot's identity.
	reservedParamPrefix = "csi.storage.k8s.io/"
)

var defaultSnapshotMinSize = resource.MustParse("1Gi")

// snapshotParams are the parsed class parameters of one request.
type snapshotParams struct {
	Endpoints    []string
	StorageClass string
	MinSize      resource.Quantity
	// Size, when set, is the snapshot PVC's size instead of the one computed from the database.
	Size           *resource.Quantity
	AllowPlaintext bool
}

// parseParams validates the class parameters. Unknown keys are refused so a misspelt parameter is
// reported instead of silently ignored.
func parseParams(in map[string]string) (snapshotParams, error) {
	p := snapshotParams{MinSize: defaultSnapshotMinSize}
	for k, v := range in {
		switch {
		case strings.HasPrefix(k, reservedParamPrefix):
		case k == paramEndpoints:
			for _, ep := range strings.Split(v, ",") {
				if ep = strings.TrimSpace(ep); ep != "" {
					p.Endpoints = append(p.Endpoints, ep)
				}
			}
			if len(p.Endpoints) == 0 {
				return p, status.Errorf(codes.InvalidArgument, "class parameter %s is empty; give comma-separated client URLs or leave it out", paramEndpoints)
			}
		case k == paramSnapshotStorageClass:
			p.StorageClass = v
		case k == paramSnapshotMinSize:
			q, err := resource.ParseQuantity(v)
			if err != nil || q.Sign() <= 0 {
				return p, status.Errorf(codes.InvalidArgument, "class parameter %s=%q is not a positive quantity such as 1Gi", paramSnapshotMinSize, v)
			}
			// A quantity such as 1e1111111100 parses, but any arithmetic on it (sizing, comparing,
			// printing) takes practically forever; no volume is larger than the sizing bound anyway.
			if n, ok := q.AsInt64(); !ok || n > maxSizedDB {
				return p, status.Errorf(codes.InvalidArgument, "class parameter %s=%q is larger than %s", paramSnapshotMinSize, truncate(v, 64), resource.NewQuantity(maxSizedDB, resource.BinarySI))
			}
			p.MinSize = q
		case k == paramSnapshotSize:
			q, err := resource.ParseQuantity(v)
			if err != nil || q.Sign() <= 0 {
				return p, status.Errorf(codes.InvalidArgument, "class parameter %s=%q is not a positive quantity such as 10Gi", paramSnapshotSize, v)
			}
			if n, ok := q.AsInt64(); !ok || n > maxSizedDB {
				return p, status.Errorf(codes.InvalidArgument, "class parameter %s=%q is larger than %s", paramSnapshotSize, truncate(v, 64), resource.NewQuantity(maxSizedDB, resource.BinarySI))
			}
			p.Size = &q
		case k == paramAllowPlaintext:
			switch v {
			case "true":
				p.AllowPlaintext = true
			case "false", "":
			default:
				return p, status.Errorf(codes.InvalidArgument, "class parameter %s=%q must be \"true\" or \"false\"", paramAllowPlaintext, v)
			}
		default:
			return p, status.Errorf(codes.InvalidArgument, "unknown class parameter %q; known: %s, %s, %s, %s, %s", k,
				paramEndpoints, paramSnapshotStorageClass, paramSnapshotMinSize, paramSnapshotSize, paramAllowPlaintext)
		}
	}
	if _, hasMin := in[paramSnapshotMinSize]; hasMin && p.Size != nil {
		return p, status.Errorf(codes.InvalidArgument, "class parameters %s and %s exclude each other: %s fixes the snapshot PVC's size", paramSnapshotSize, paramSnapshotMinSize, paramSnapshotSize)
	}
	return p, nil
}

// paramsHash fingerprints the parameters that shape a snapshot, so a repeated Create with other
// parameters is told apart from a retry. Sidecar-added keys are left out (see reservedParamPrefix).
func paramsHash(in map[string]string) string {
	keys := make([]string, 0, len(in))
	for k := range in {
		if !strings.HasPrefix(k, reservedParamPrefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		// Length-prefixing keeps "a=b,c" and "a=b" + "c=" distinct.
		fmt.Fprintf(h, "%d:%s%d:%s", len(k), k, len(in[k]), in[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}
