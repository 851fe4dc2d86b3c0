package launcher

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Table is the member table the rig publishes in a ConfigMap (key TableKey) for one StatefulSet: the
// loopback ports of each ordinal, which a real cluster would not need because each pod has its own IP.
type Table struct {
	// StatefulSet is the name of the StatefulSet whose pods read the table; pod <StatefulSet>-<i> is member i.
	StatefulSet string `json:"statefulSet"`
	// Token is the --initial-cluster-token of a new cluster; etcd ignores it once the data dir holds a member.
	Token   string   `json:"token"`
	Members []Member `json:"members"`
}

// Member is the loopback ports of one ordinal.
type Member struct {
	Ordinal    int `json:"ordinal"`
	ClientPort int `json:"clientPort"`
	PeerPort   int `json:"peerPort"`
}

// TableKey is the ConfigMap key (and file name in the mounted volume) of the table.
const TableKey = "members.json"

// Name is the etcd member name (and pod name) of ordinal i.
func (t *Table) Name(i int) string { return t.StatefulSet + "-" + strconv.Itoa(i) }

// ClientURL is the URL member m serves clients on, and advertises.
func (m Member) ClientURL() string { return "https://127.0.0.1:" + strconv.Itoa(m.ClientPort) }

// PeerURL is the URL member m's peers reach it on.
func (m Member) PeerURL() string { return "https://127.0.0.1:" + strconv.Itoa(m.PeerPort) }

// ParseTable decodes and checks a member table: ordinals 0..n-1 each once, distinct ports.
func ParseTable(data []byte) (*Table, error) {
	var t Table
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("member table: %w", err)
	}
	if t.StatefulSet == "" {
		return nil, errors.New("member table: statefulSet is empty")
	}
	if t.Token == "" {
		return nil, errors.New("member table: token is empty")
	}
	if len(t.Members) == 0 {
		return nil, errors.New("member table: no members")
	}
	sort.Slice(t.Members, func(i, j int) bool { return t.Members[i].Ordinal < t.Members[j].Ordinal })
	ports := map[int]string{}
	for i, m := range t.Members {
		if m.Ordinal != i {
			return nil, fmt.Errorf("member table: ordinals must be 0..%d each once, found %d at position %d", len(t.Members)-1, m.Ordinal, i)
		}
		for _, p := range []struct {
			what string
			port int
		}{{"clientPort", m.ClientPort}, {"peerPort", m.PeerPort}} {
			if p.port <= 0 || p.port > 65535 {
				return nil, fmt.Errorf("member table: ordinal %d: %s %d is not a TCP port", i, p.what, p.port)
			}
			where := fmt.Sprintf("%s of ordinal %d", p.what, i)
			if prev, dup := ports[p.port]; dup {
				return nil, fmt.Errorf("member table: port %d is both the %s and the %s", p.port, prev, where)
			}
			ports[p.port] = where
		}
	}
	return &t, nil
}

// Ordinal maps a pod name of the table's StatefulSet to its ordinal, as the StatefulSet controller
// names pods: <statefulset>-<ordinal>, the ordinal in decimal without leading zeros.
func (t *Table) Ordinal(podName string) (int, error) {
	i := strings.LastIndexByte(podName, '-')
	if i < 0 || podName[:i] != t.StatefulSet {
		return 0, fmt.Errorf("pod name %q is not <statefulset>-<ordinal> of StatefulSet %q", podName, t.StatefulSet)
	}
	s := podName[i+1:]
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || strconv.Itoa(n) != s {
		return 0, fmt.Errorf("pod name %q: %q is not an ordinal", podName, s)
	}
	if n >= len(t.Members) {
		return 0, fmt.Errorf("pod %s: ordinal %d has no entry in the member table (%d members, %s..%s): the StatefulSet was scaled beyond the cluster the rig prepared",
			podName, n, len(t.Members), t.Name(0), t.Name(len(t.Members)-1))
	}
	return n, nil
}

// InitialCluster is the --initial-cluster value: every member's name=peerURL in ordinal order.
func (t *Table) InitialCluster() string {
	var parts []string
	for _, m := range t.Members {
		parts = append(parts, t.Name(m.Ordinal)+"="+m.PeerURL())
	}
	return strings.Join(parts, ",")
}

// ownedFlags are the etcd flags the launcher sets from the table; the container must not set them.
var ownedFlags = []string{
	"name", "listen-client-urls", "advertise-client-urls", "listen-peer-urls",
	"initial-advertise-peer-urls", "initial-cluster", "initial-cluster-token", "initial-cluster-state",
	"client-cert-auth", "trusted-ca-file", "cert-file", "key-file",
	"peer-client-cert-auth", "peer-trusted-ca-file", "peer-cert-file", "peer-key-file",
}

// EtcdArgs are the flags for the member of podName: its name, URLs, the initial cluster and mutual TLS
// on both ports with the certificate <tlsDir>/<pod>.crt, key <tlsDir>/<pod>.key and CA <tlsDir>/ca.crt,
// followed by the container's own etcd flags (extra), which may not repeat one of these.
func (t *Table) EtcdArgs(podName, tlsDir string, extra []string) ([]string, error) {
	i, err := t.Ordinal(podName)
	if err != nil {
		return nil, err
	}
	for _, a := range extra {
		if name, ok := flagName(a); ok {
			for _, f := range ownedFlags {
				if name == f {
					return nil, fmt.Errorf("flag --%s is set by the launcher from the member table; remove it from the container's arguments", f)
				}
			}
		}
	}
	m := t.Members[i]
	ca := filepath.Join(tlsDir, "ca.crt")
	cert := filepath.Join(tlsDir, podName+".crt")
	key := filepath.Join(tlsDir, podName+".key")
	args := []string{
		"--name=" + podName,
		"--listen-client-urls=" + m.ClientURL(),
		"--advertise-client-urls=" + m.ClientURL(),
		"--listen-peer-urls=" + m.PeerURL(),
		"--initial-advertise-peer-urls=" + m.PeerURL(),
		"--initial-cluster=" + t.InitialCluster(),
		"--initial-cluster-token=" + t.Token,
		"--initial-cluster-state=new",
		"--client-cert-auth",
		"--trusted-ca-file=" + ca,
		"--cert-file=" + cert,
		"--key-file=" + key,
		"--peer-client-cert-auth",
		"--peer-trusted-ca-file=" + ca,
		"--peer-cert-file=" + cert,
		"--peer-key-file=" + key,
	}
	return append(args, extra...), nil
}

// FlagValues maps the --k=v and bare --k arguments of args (such as EtcdArgs) to their values, a bare
// flag to ""; a flag given twice is an error.
func FlagValues(args []string) (map[string]string, error) {
	out := map[string]string{}
	for _, a := range args {
		k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("flag --%s given twice in %q", k, args)
		}
		out[k] = v
	}
	return out, nil
}

// flagName returns the name of a "-name", "--name" or "--name=value" argument.
func flagName(arg string) (string, bool) {
	if !strings.HasPrefix(arg, "-") || arg == "-" || arg == "--" {
		return "", false
	}
	name := strings.TrimLeft(arg, "-")
	name, _, _ = strings.Cut(name, "=")
	return name, name != ""
}
