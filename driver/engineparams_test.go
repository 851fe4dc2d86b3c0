package driver

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/api/resource"
)

// TestParseParamsSizing parses the class parameters that override the sizing of the snapshot PVC and
// Job: valid values land in snapshotParams, bad ones are InvalidArgument naming the parameter and
// the accepted range.
func TestParseParamsSizing(t *testing.T) {
	cases := []struct {
		name   string
		params map[string]string
		// check inspects the parsed parameters of a valid case.
		check func(t *testing.T, p snapshotParams)
		// msg are substrings of the InvalidArgument message of an invalid case.
		msg []string
	}{
		{name: "defaults", params: nil, check: func(t *testing.T, p snapshotParams) {
			if p.SizeFactor != 0 || p.JobDeadline != 0 || p.VerifyMemory != nil || p.MinSize.Cmp(resource.MustParse("1Gi")) != 0 {
				t.Errorf("defaults parsed as %+v; want no overrides and a 1Gi minimum", p)
			}
		}},
		{name: "all overrides", params: map[string]string{"snapshotSizeFactor": "1.5", "jobActiveDeadlineSeconds": "7200", "verifyMemoryLimit": "2Gi"},
			check: func(t *testing.T, p snapshotParams) {
				if p.SizeFactor != 1.5 || p.JobDeadline != 7200 || p.VerifyMemory == nil || p.VerifyMemory.Cmp(resource.MustParse("2Gi")) != 0 {
					t.Errorf("parsed as %+v; want factor 1.5, deadline 7200, verify memory 2Gi", p)
				}
			}},
		{name: "factor not a number", params: map[string]string{"snapshotSizeFactor": "twice"}, msg: []string{`snapshotSizeFactor="twice"`, "0.1 to 10"}},
		{name: "factor too small", params: map[string]string{"snapshotSizeFactor": "0.01"}, msg: []string{"snapshotSizeFactor", "0.1 to 10"}},
		{name: "factor too large", params: map[string]string{"snapshotSizeFactor": "1e9"}, msg: []string{"snapshotSizeFactor", "0.1 to 10"}},
		{name: "factor NaN", params: map[string]string{"snapshotSizeFactor": "NaN"}, msg: []string{"snapshotSizeFactor"}},
		{name: "deadline not whole seconds", params: map[string]string{"jobActiveDeadlineSeconds": "1h"}, msg: []string{`jobActiveDeadlineSeconds="1h"`, "60 to 86400"}},
		{name: "deadline too short", params: map[string]string{"jobActiveDeadlineSeconds": "10"}, msg: []string{"jobActiveDeadlineSeconds", "60 to 86400"}},
		{name: "deadline too long", params: map[string]string{"jobActiveDeadlineSeconds": "86401"}, msg: []string{"jobActiveDeadlineSeconds"}},
		{name: "memory not a quantity", params: map[string]string{"verifyMemoryLimit": "lots"}, msg: []string{`verifyMemoryLimit="lots"`, "64Mi to 16Gi"}},
		{name: "memory too small", params: map[string]string{"verifyMemoryLimit": "1Mi"}, msg: []string{"verifyMemoryLimit", "64Mi to 16Gi"}},
		{name: "memory too large", params: map[string]string{"verifyMemoryLimit": "1e1111111100"}, msg: []string{"verifyMemoryLimit"}},
		{name: "memory with an exponent ParseQuantity never finishes", params: map[string]string{"verifyMemoryLimit": "1e11111111100"}, msg: []string{"verifyMemoryLimit"}},
		{name: "minimum with an exponent ParseQuantity never finishes", params: map[string]string{"snapshotMinSize": "1e11111111100"}, msg: []string{"snapshotMinSize", "larger than"}},
		{name: "minimum with a huge negative exponent", params: map[string]string{"snapshotMinSize": "1e-11111111100"}, msg: []string{"snapshotMinSize", "not a positive quantity"}},
		{name: "unknown parameter lists the sizing ones", params: map[string]string{"verifyMemory": "1Gi"},
			msg: []string{`"verifyMemory"`, "snapshotSizeFactor", "jobActiveDeadlineSeconds", "verifyMemoryLimit"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parseParams(tc.params)
			if tc.check != nil {
				if err != nil {
					t.Fatalf("parseParams(%v): %v", tc.params, err)
				}
				tc.check(t, p)
				return
			}
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("parseParams(%v) = %+v, %v; want InvalidArgument", tc.params, p, err)
			}
			for _, m := range tc.msg {
				if !strings.Contains(status.Convert(err).Message(), m) {
					t.Errorf("message %q does not contain %q", status.Convert(err).Message(), m)
				}
			}
		})
	}
}

// TestParseSnapshotSize checks the snapshotSize class parameter: a positive quantity within the sizing
// bound, and not together with snapshotMinSize.
func TestParseSnapshotSize(t *testing.T) {
	p, err := parseParams(map[string]string{paramSnapshotSize: "8Mi"})
	if err != nil || p.Size == nil || p.Size.String() != "8Mi" {
		t.Fatalf("parseParams(snapshotSize=8Mi) = %+v, %v", p, err)
	}
	if p, err := parseParams(nil); err != nil || p.Size != nil {
		t.Fatalf("without snapshotSize: %+v, %v; want no fixed size", p, err)
	}
	cases := []struct {
		name string
		in   map[string]string
		want string
	}{
		{"not a quantity", map[string]string{paramSnapshotSize: "big"}, "not a positive quantity"},
		{"zero", map[string]string{paramSnapshotSize: "0"}, "not a positive quantity"},
		{"negative", map[string]string{paramSnapshotSize: "-1Gi"}, "not a positive quantity"},
		{"beyond the bound", map[string]string{paramSnapshotSize: "1e1111111100"}, "larger than"},
		{"an exponent ParseQuantity never finishes", map[string]string{paramSnapshotSize: "1E99999999999999999999"}, "larger than"},
		{"with snapshotMinSize", map[string]string{paramSnapshotSize: "8Mi", paramSnapshotMinSize: "1Gi"}, "exclude each other"},
		{"with snapshotSizeFactor", map[string]string{paramSnapshotSize: "8Mi", paramSnapshotSizeFactor: "2"}, "exclude each other"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseParams(tc.in)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), paramSnapshotSize) {
				t.Errorf("parseParams(%v) = %v; want InvalidArgument naming %s and saying %q", tc.in, err, paramSnapshotSize, tc.want)
			}
		})
	}
}
