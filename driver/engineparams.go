package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Class parameters the driver understands; parseParams is their contract, held by
// engineparams_test.go (TestParseParamsSizing, TestParseSnapshotSize).
const (
	paramEndpoints            = "endpoints"
	paramSnapshotStorageClass = "snapshotStorageClass"
	paramSnapshotMinSize      = "snapshotMinSize"
	paramSnapshotSizeFactor   = "snapshotSizeFactor"
	paramJobDeadline          = "jobActiveDeadlineSeconds"
	paramVerifyMemoryLimit    = "verifyMemoryLimit"
	paramSnapshotSize         = "snapshotSize"
	paramAllowPlaintext       = "allowPlaintext"

	// Bounds of the sizing overrides: below them a Job cannot do its work, above them a value is a
	// typo rather than a plan.
	minSnapshotSizeFactor = 0.1
	maxSnapshotSizeFactor = 10
)

var defaultSnapshotMinSize = resource.MustParse("1Gi")

// knownParams lists the class parameters for the message refusing an unknown one.
var knownParams = strings.Join([]string{paramEndpoints, paramSnapshotStorageClass, paramSnapshotMinSize, paramSnapshotSize, paramSnapshotSizeFactor,
	paramJobDeadline, paramVerifyMemoryLimit, paramAllowPlaintext}, ", ")

// snapshotParams are the parsed class parameters of one request.
type snapshotParams struct {
	Endpoints    []string
	StorageClass string
	MinSize      resource.Quantity
	// SizeFactor multiplies the database size for the snapshot PVC; 0 means defaultSnapshotSizeFactor.
	SizeFactor float64
	// JobDeadline is the Job's activeDeadlineSeconds; 0 means sized from the database (jobDeadline).
	JobDeadline int64
	// VerifyMemory is the verify container's memory limit; nil means sized from the database
	// (verifyMemoryLimit).
	VerifyMemory *resource.Quantity
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
		case strings.HasPrefix(k, upstreamParameterPrefix):
			// The CSI sidecars add these themselves (secret references are stripped before the
			// call; --extra-create-metadata adds object names): not ours to validate, and they must
			// not change a snapshot's identity (paramsHash).
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
			q, err := parseQuantity(v)
			if errors.Is(err, errQuantityTooLarge) {
				return p, status.Errorf(codes.InvalidArgument, "class parameter %s=%q is larger than %s", paramSnapshotMinSize, truncate(v, 64), resource.NewQuantity(maxSizedDB, resource.BinarySI))
			}
			if err != nil || q.Sign() <= 0 {
				return p, status.Errorf(codes.InvalidArgument, "class parameter %s=%q is not a positive quantity such as 1Gi", paramSnapshotMinSize, v)
			}
			// A quantity such as 1e1111111100 parses, but any arithmetic on it (sizing, comparing,
			// printing) takes practically forever; no volume is larger than the sizing bound anyway.
			if n, ok := q.AsInt64(); !ok || n > maxSizedDB {
				return p, status.Errorf(codes.InvalidArgument, "class parameter %s=%q is larger than %s", paramSnapshotMinSize, truncate(v, 64), resource.NewQuantity(maxSizedDB, resource.BinarySI))
			}
			p.MinSize = q
		case k == paramSnapshotSizeFactor:
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || !(f >= minSnapshotSizeFactor && f <= maxSnapshotSizeFactor) {
				return p, status.Errorf(codes.InvalidArgument, "class parameter %s=%q is not a number from %g to %g (the snapshot PVC is the database size times it, plus headroom)",
					paramSnapshotSizeFactor, truncate(v, 64), minSnapshotSizeFactor, float64(maxSnapshotSizeFactor))
			}
			p.SizeFactor = f
		case k == paramJobDeadline:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < jobDeadlineMinimum || n > jobDeadlineMax {
				return p, status.Errorf(codes.InvalidArgument, "class parameter %s=%q is not a whole number of seconds from %d to %d",
					paramJobDeadline, truncate(v, 64), jobDeadlineMinimum, jobDeadlineMax)
			}
			p.JobDeadline = n
		case k == paramVerifyMemoryLimit:
			q, err := parseQuantity(v)
			lo, hi := resource.NewQuantity(jobVerifyMemoryMinimum, resource.BinarySI), resource.NewQuantity(jobVerifyMemoryMax, resource.BinarySI)
			if n, ok := q.AsInt64(); err != nil || !ok || n < jobVerifyMemoryMinimum || n > jobVerifyMemoryMax {
				return p, status.Errorf(codes.InvalidArgument, "class parameter %s=%q is not a memory quantity from %s to %s, such as 1Gi",
					paramVerifyMemoryLimit, truncate(v, 64), lo, hi)
			}
			p.VerifyMemory = &q
		case k == paramSnapshotSize:
			q, err := parseQuantity(v)
			if errors.Is(err, errQuantityTooLarge) {
				return p, status.Errorf(codes.InvalidArgument, "class parameter %s=%q is larger than %s", paramSnapshotSize, truncate(v, 64), resource.NewQuantity(maxSizedDB, resource.BinarySI))
			}
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
			return p, status.Errorf(codes.InvalidArgument, "unknown class parameter %q; known: %s", k, knownParams)
		}
	}
	for _, other := range []string{paramSnapshotMinSize, paramSnapshotSizeFactor} {
		if _, set := in[other]; set && p.Size != nil {
			return p, status.Errorf(codes.InvalidArgument, "class parameters %s and %s exclude each other: %s fixes the snapshot PVC's size", paramSnapshotSize, other, paramSnapshotSize)
		}
	}
	return p, nil
}

// paramsHash fingerprints the parameters that shape a snapshot, so a repeated Create with other
// parameters is told apart from a retry. Sidecar-added keys are left out (see upstreamParameterPrefix).
func paramsHash(in map[string]string) string {
	keys := make([]string, 0, len(in))
	for k := range in {
		if !strings.HasPrefix(k, upstreamParameterPrefix) {
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

// maxQuantityExponent bounds the decimal exponent of a quantity the driver parses: every quantity it
// accepts is below 1e18, and resource.ParseQuantity itself does not return in practice for one such
// as 1e11111111100 (FuzzParams, testdata/fuzz/FuzzParams/63578a9c4d752b47).
const maxQuantityExponent = 18

// quantityExponent is a quantity's decimal exponent suffix ("1e9", "5E-3"); a bare "E" is exa.
var quantityExponent = regexp.MustCompile(`[eE]([+-]?[0-9]+)$`)

// errQuantityTooLarge is parseQuantity's answer for an exponent above maxQuantityExponent.
var errQuantityTooLarge = errors.New("driver: quantity exponent too large")

// parseQuantity is resource.ParseQuantity after refusing a decimal exponent beyond
// maxQuantityExponent either way, which ParseQuantity could take practically forever on.
func parseQuantity(v string) (resource.Quantity, error) {
	if m := quantityExponent.FindStringSubmatch(v); m != nil {
		e, err := strconv.Atoi(m[1])
		switch {
		case err != nil && !strings.HasPrefix(m[1], "-"), err == nil && e > maxQuantityExponent:
			return resource.Quantity{}, errQuantityTooLarge
		case err != nil, e < -maxQuantityExponent:
			return resource.Quantity{}, fmt.Errorf("driver: quantity %q: exponent below -%d", v, maxQuantityExponent)
		}
	}
	return resource.ParseQuantity(v)
}
