package rig

import (
	"net"
	"strconv"
	"testing"
)

func TestParsePortRange(t *testing.T) {
	cases := []struct {
		name   string
		in     string
		lo, hi int
	}{
		{"kernel format", "32768\t60999\n", 32768, 60999},
		{"spaces", "  1024   65000 ", 1024, 65000},
		{"one field", "32768", 32768, 60999},
		{"not numbers", "a b", 32768, 60999},
		{"reversed", "60000 1000", 32768, 60999},
		{"out of range", "0 70000", 32768, 60999},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if lo, hi := parsePortRange(tc.in); lo != tc.lo || hi != tc.hi {
				t.Errorf("parsePortRange(%q) = %d, %d; want %d, %d", tc.in, lo, hi, tc.lo, tc.hi)
			}
		})
	}
}

// TestStablePort checks that member ports are distinct, free and outside the kernel's ephemeral range.
func TestStablePort(t *testing.T) {
	lo, hi := ephemeralRange()
	seen := map[int]bool{}
	for range 50 {
		p, err := stablePort()
		if err != nil {
			t.Fatal(err)
		}
		if p >= lo && p <= hi || p < lowestStablePort || p > 65535 {
			t.Fatalf("port %d lies in the ephemeral range %d-%d or below %d", p, lo, hi, lowestStablePort)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("port %d is not free: %v", p, err)
		}
		l.Close()
	}
}
