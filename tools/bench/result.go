package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// snapshotResult is the benchmark's verdict on snapshots, the fields of its RESULT line.
type snapshotResult struct {
	size           int64
	pairs          int
	ratioMedian    float64
	overheadMedian float64 // seconds
	verifyVsStatus float64
}

func (r snapshotResult) String() string {
	return fmt.Sprintf("RESULT size=%d pairs=%d ratio_median=%.3f overhead_median_s=%.3f verify_vs_status=%.3f",
		r.size, r.pairs, r.ratioMedian, r.overheadMedian, r.verifyVsStatus)
}

// restoreResult is the verdict on restore, the fields of the RESULT restore line.
type restoreResult struct {
	size        int64
	rawS        float64 // raw etcdutl snapshot restore of every member at once, wall time
	driverS     float64 // the restore command, scale down and up and the health check included
	perMemberS  float64 // median of the command's per-member Job times
	rawMemberS  float64 // median of the raw per-member times
	memberCount int
}

func (r restoreResult) String() string {
	return fmt.Sprintf("RESULT restore size=%d members=%d raw_s=%.3f driver_s=%.3f per_member_s=%.3f raw_per_member_s=%.3f",
		r.size, r.memberCount, r.rawS, r.driverS, r.perMemberS, r.rawMemberS)
}

// parseResult reads a RESULT line into its fields; every value must be a number.
func parseResult(line string) (kind string, fields map[string]float64, err error) {
	words := strings.Fields(line)
	if len(words) < 2 || words[0] != "RESULT" {
		return "", nil, fmt.Errorf("not a RESULT line: %q", line)
	}
	words = words[1:]
	if !strings.Contains(words[0], "=") {
		kind, words = words[0], words[1:]
	}
	fields = map[string]float64{}
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok || k == "" {
			return "", nil, fmt.Errorf("RESULT line %q: %q is not key=value", line, w)
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return "", nil, fmt.Errorf("RESULT line %q: %s: %w", line, k, err)
		}
		if _, dup := fields[k]; dup {
			return "", nil, fmt.Errorf("RESULT line %q: %s given twice", line, k)
		}
		fields[k] = f
	}
	if len(fields) == 0 {
		return "", nil, fmt.Errorf("RESULT line %q has no key=value fields", line)
	}
	return kind, fields, nil
}

// median of xs (0 for none); the mean of the middle two for an even count.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
