package rig

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// defaultEphemeral is Linux's default ip_local_port_range, used when the file cannot be read.
var defaultEphemeral = [2]int{32768, 60999}

// lowestStablePort keeps clear of the well-known and registered ports most services listen on.
const lowestStablePort = 10000

// stablePort returns a TCP port on 127.0.0.1 that is free, that this process has not handed out
// before, and that lies outside the kernel's ephemeral range. A StatefulSet member scaled to 0
// leaves its port unbound for as long as it is down; a port of the ephemeral range can meanwhile
// become the local port of any outgoing connection (connect picks from that range), and the member
// could not listen on it again. freePort's ports come from that range, which suits components that
// bind once.
func stablePort() (int, error) {
	lo, hi := ephemeralRange()
	// The stable ports: [lowestStablePort, lo) and (hi, 65535].
	var spans [][2]int
	if lo > lowestStablePort {
		spans = append(spans, [2]int{lowestStablePort, lo - 1})
	}
	if hi < 65535 {
		spans = append(spans, [2]int{max(hi+1, lowestStablePort), 65535})
	}
	total := 0
	for _, s := range spans {
		total += s[1] - s[0] + 1
	}
	if total == 0 {
		return 0, fmt.Errorf("rig: the ephemeral port range %d-%d leaves no port from %d up for etcd members", lo, hi, lowestStablePort)
	}
	portsMu.Lock()
	defer portsMu.Unlock()
	start := rand.IntN(total)
	for n := 0; n < total; n++ {
		k := (start + n) % total
		port := 0
		for _, s := range spans {
			size := s[1] - s[0] + 1
			if k < size {
				port = s[0] + k
				break
			}
			k -= size
		}
		if ports[port] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		l.Close()
		ports[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("rig: no free port on 127.0.0.1 outside the ephemeral range %d-%d", lo, hi)
}

// ephemeralRange reads the kernel's ip_local_port_range.
func ephemeralRange() (lo, hi int) {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return defaultEphemeral[0], defaultEphemeral[1]
	}
	return parsePortRange(string(data))
}

// parsePortRange parses "low<whitespace>high", falling back to Linux's default.
func parsePortRange(s string) (lo, hi int) {
	f := strings.Fields(s)
	if len(f) != 2 {
		return defaultEphemeral[0], defaultEphemeral[1]
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi {
		return defaultEphemeral[0], defaultEphemeral[1]
	}
	return lo, hi
}
