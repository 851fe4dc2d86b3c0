// Package etcdcluster runs the etcd cluster under test in the rig: real processes of the upstream etcd
// binary, TLS with client certificates on both the client and the peer port, on loopback.
package etcdcluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/testpki"
)

// Timing. The heartbeat and election timeout are twice etcd's defaults (100ms/1s) so that a machine
// shared by builds and tests does not see spurious elections.
const (
	heartbeatMs      = 200
	electionMs       = 2000
	healthyTimeout   = 90 * time.Second
	stopGrace        = 10 * time.Second
	healthProbeEvery = 200 * time.Millisecond
)

// Config describes the cluster to start.
type Config struct {
	BinDir  string // holds the etcd binary (and etcdctl, etcdutl)
	Dir     string // member volumes <Dir>/<Name>-<i> (data in <volume>/data) and certificates in <Dir>/pki
	Name    string // cluster name, default "main"; members are <Name>-0, <Name>-1, ...
	Members int    // default 3
	LogDir  string // member logs etcd-<Name>-<i>.log; default Dir
}

// Cluster is a running etcd cluster; Stop ends it.
type Cluster struct {
	cfg            Config
	authority      *testpki.CA
	token          string // --initial-cluster-token, unique per cluster
	ca             []byte
	clientCert     []byte
	clientKey      []byte
	initialCluster string
	tlsConfig      *tls.Config

	mu      sync.Mutex
	members []*member
	stopped bool
	stopCh  chan struct{}
}

type member struct {
	name       string
	dir        string // the volume a PV points at
	clientPort int
	peerPort   int
	certFile   string
	keyFile    string
	logFile    string
	proc       *process // nil while stopped
}

// process is one running etcd.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once reaped
}

// Start writes certificates, starts every member and returns once each answers a linearizable read.
// The processes are killed when ctx ends or Stop is called.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if cfg.Name == "" {
		cfg.Name = "main"
	}
	if cfg.Members <= 0 {
		cfg.Members = 3
	}
	if cfg.Dir == "" {
		return nil, errors.New("etcdcluster: Config.Dir is required")
	}
	var err error
	if cfg.Dir, err = filepath.Abs(cfg.Dir); err != nil {
		return nil, fmt.Errorf("etcdcluster: %w", err)
	}
	if cfg.LogDir == "" {
		cfg.LogDir = cfg.Dir
	}
	bin := filepath.Join(cfg.BinDir, "etcd")
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() {
		return nil, fmt.Errorf("etcdcluster: no etcd binary at %s", bin)
	}
	pki := filepath.Join(cfg.Dir, "pki")
	for _, d := range []string{cfg.Dir, cfg.LogDir, pki} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("etcdcluster: %w", err)
		}
	}

	c := &Cluster{cfg: cfg, stopCh: make(chan struct{})}
	if err := c.writePKI(pki); err != nil {
		return nil, err
	}
	ports, err := freePorts(2 * cfg.Members)
	if err != nil {
		return nil, fmt.Errorf("etcdcluster: %w", err)
	}
	var peers []string
	for i := 0; i < cfg.Members; i++ {
		name := fmt.Sprintf("%s-%d", cfg.Name, i)
		m := &member{
			name:       name,
			dir:        filepath.Join(cfg.Dir, name),
			clientPort: ports[2*i],
			peerPort:   ports[2*i+1],
			certFile:   filepath.Join(pki, name+".crt"),
			keyFile:    filepath.Join(pki, name+".key"),
			logFile:    filepath.Join(cfg.LogDir, "etcd-"+name+".log"),
		}
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return nil, fmt.Errorf("etcdcluster: %w", err)
		}
		kp, err := c.authority.Issue(name, "127.0.0.1", "localhost")
		if err != nil {
			return nil, fmt.Errorf("etcdcluster: %w", err)
		}
		if err := kp.WriteFiles(m.certFile, m.keyFile); err != nil {
			return nil, fmt.Errorf("etcdcluster: %w", err)
		}
		c.members = append(c.members, m)
		peers = append(peers, name+"="+m.peerURL())
	}
	c.initialCluster = strings.Join(peers, ",")

	go func() {
		select {
		case <-ctx.Done():
			c.Stop()
		case <-c.stopCh:
		}
	}()

	token := make([]byte, 8)
	_, _ = rand.Read(token)
	c.token = cfg.Name + "-" + hex.EncodeToString(token)
	for _, m := range c.members {
		if err := c.startProcess(m); err != nil {
			c.Stop()
			return nil, err
		}
	}
	for _, m := range c.members {
		if err := c.waitHealthy(ctx, m); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) writePKI(dir string) error {
	ca, err := testpki.NewCA("etcd-" + c.cfg.Name + "-ca")
	if err != nil {
		return fmt.Errorf("etcdcluster: %w", err)
	}
	if err := ca.WriteCertFile(filepath.Join(dir, "ca.crt")); err != nil {
		return fmt.Errorf("etcdcluster: %w", err)
	}
	client, err := ca.Issue(c.cfg.Name + "-client")
	if err != nil {
		return fmt.Errorf("etcdcluster: %w", err)
	}
	if err := client.WriteFiles(filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")); err != nil {
		return fmt.Errorf("etcdcluster: %w", err)
	}
	c.authority = ca
	c.ca, c.clientCert, c.clientKey = ca.CertPEM(), client.CertPEM, client.KeyPEM
	if c.tlsConfig, err = ca.ClientTLS(client); err != nil {
		return fmt.Errorf("etcdcluster: client certificate: %w", err)
	}
	return nil
}

func (m *member) clientURL() string { return fmt.Sprintf("https://127.0.0.1:%d", m.clientPort) }
func (m *member) peerURL() string   { return fmt.Sprintf("https://127.0.0.1:%d", m.peerPort) }
func (m *member) dataDir() string   { return filepath.Join(m.dir, "data") }

// args are the member's flags; a restart uses the same ones (the initial-cluster flags are ignored
// once the data dir exists).
func (c *Cluster) args(m *member) []string {
	ca := filepath.Join(c.cfg.Dir, "pki", "ca.crt")
	return []string{
		"--name=" + m.name,
		"--data-dir=" + m.dataDir(),
		"--listen-client-urls=" + m.clientURL(),
		"--advertise-client-urls=" + m.clientURL(),
		"--listen-peer-urls=" + m.peerURL(),
		"--initial-advertise-peer-urls=" + m.peerURL(),
		"--initial-cluster=" + c.initialCluster,
		"--initial-cluster-token=" + c.token,
		"--initial-cluster-state=new",
		"--client-cert-auth",
		"--trusted-ca-file=" + ca,
		"--cert-file=" + m.certFile,
		"--key-file=" + m.keyFile,
		"--peer-client-cert-auth",
		"--peer-trusted-ca-file=" + ca,
		"--peer-cert-file=" + m.certFile,
		"--peer-key-file=" + m.keyFile,
		fmt.Sprintf("--heartbeat-interval=%d", heartbeatMs),
		fmt.Sprintf("--election-timeout=%d", electionMs),
	}
}

// startProcess starts the member's etcd in its own process group, appending its output to its log.
func (c *Cluster) startProcess(m *member) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("etcdcluster: cluster is stopped")
	}
	if m.proc != nil {
		return fmt.Errorf("etcdcluster: member %s is running", m.name)
	}
	logf, err := os.OpenFile(m.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("etcdcluster: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(c.cfg.BinDir, "etcd"), c.args(m)...)
	cmd.Env = environ()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("etcdcluster: start %s: %w", m.name, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	m.proc = p
	return nil
}

// environ is the rig's environment without ETCD_* variables, which etcd would read as flags.
func environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			env = append(env, kv)
		}
	}
	return env
}

// waitHealthy returns once the member serves a linearizable read, which needs it to be connected to a
// leader and caught up to the read index.
func (c *Cluster) waitHealthy(ctx context.Context, m *member) error {
	c.mu.Lock()
	p := m.proc
	c.mu.Unlock()
	if p == nil {
		return fmt.Errorf("etcdcluster: member %s is not running", m.name)
	}
	cli, err := c.newClient([]string{m.clientURL()})
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, healthyTimeout)
	defer cancel()
	var last error
	for {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cli.Get(rctx, "health")
		rcancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-p.exited:
			return fmt.Errorf("etcdcluster: member %s exited while starting: %s (log %s)", m.name, p.cmd.ProcessState, m.logFile)
		case <-ctx.Done():
			return fmt.Errorf("etcdcluster: member %s not healthy: %v (log %s)", m.name, last, m.logFile)
		case <-time.After(healthProbeEvery):
		}
	}
}

func (c *Cluster) newClient(endpoints []string) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		TLS:         c.tlsConfig.Clone(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcdcluster: client: %w", err)
	}
	return cli, nil
}

func (c *Cluster) member(i int) (*member, error) {
	if i < 0 || i >= len(c.members) {
		return nil, fmt.Errorf("etcdcluster: no member %d in a cluster of %d", i, len(c.members))
	}
	return c.members[i], nil
}

// StopMember stops member i: SIGTERM, then SIGKILL if it has not exited within 10s.
func (c *Cluster) StopMember(i int) error {
	m, err := c.member(i)
	if err != nil {
		return err
	}
	c.mu.Lock()
	p := m.proc
	m.proc = nil
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	p.stop()
	return nil
}

// StartMember starts member i again with the same flags, so that it rejoins from its data dir, and
// returns once it serves a linearizable read.
func (c *Cluster) StartMember(i int) error {
	m, err := c.member(i)
	if err != nil {
		return err
	}
	if err := c.startProcess(m); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.stopCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	return c.waitHealthy(ctx, m)
}

// stop ends the process group: SIGTERM, SIGKILL after the grace period, and whatever is left of the
// group afterwards.
func (p *process) stop() {
	pid := p.cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(stopGrace):
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-p.exited
}

// Stop stops every member. It may be called more than once. The leader goes last: stopped together
// with its followers it would spend etcd's leader-transfer timeout trying to hand over leadership.
func (c *Cluster) Stop() {
	c.mu.Lock()
	if !c.stopped {
		c.stopped = true
		close(c.stopCh)
	}
	var running []*member
	procs := map[*member]*process{}
	for _, m := range c.members {
		if m.proc != nil {
			running = append(running, m)
			procs[m] = m.proc
			m.proc = nil
		}
	}
	c.mu.Unlock()
	leader := c.leader(running)
	var wg sync.WaitGroup
	for _, m := range running {
		if m != leader {
			wg.Go(procs[m].stop)
		}
	}
	wg.Wait()
	if leader != nil {
		procs[leader].stop()
	}
}

// leader asks the members which of them leads; nil if none answers quickly.
func (c *Cluster) leader(ms []*member) *member {
	if len(ms) < 2 {
		return nil
	}
	var eps []string
	for _, m := range ms {
		eps = append(eps, m.clientURL())
	}
	cli, err := c.newClient(eps)
	if err != nil {
		return nil
	}
	defer cli.Close()
	for _, m := range ms {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := cli.Status(ctx, m.clientURL())
		cancel()
		if err == nil && st.Header.MemberId == st.Leader {
			return m
		}
	}
	return nil
}

// ClientURLs are the members' client URLs, in member order.
func (c *Cluster) ClientURLs() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.clientURL())
	}
	return out
}

// PeerURLs are the members' peer URLs, in member order.
func (c *Cluster) PeerURLs() []string {
	var out []string
	for _, m := range c.members {
		out = append(out, m.peerURL())
	}
	return out
}

// InitialCluster is the --initial-cluster value of the members (name=peerURL,...), as a restore needs it.
func (c *Cluster) InitialCluster() string { return c.initialCluster }

// MemberName is the etcd name of member i (<name>-<i>).
func (c *Cluster) MemberName(i int) string { return c.members[i].name }

// MemberDir is the volume directory of member i, the volume handle of its PV; etcd's data dir is
// MemberDir(i)/data.
func (c *Cluster) MemberDir(i int) string { return c.members[i].dir }

// Creds returns the CA certificate and a client certificate and key, in PEM.
func (c *Cluster) Creds() (ca, cert, key []byte) {
	return clone(c.ca), clone(c.clientCert), clone(c.clientKey)
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// IssueClientCert signs a client certificate and key (PEM) for commonName with the cluster's CA and
// the given validity, for tests of certificates the members refuse by date.
func (c *Cluster) IssueClientCert(commonName string, notBefore, notAfter time.Time) (cert, key []byte, err error) {
	kp, err := c.authority.IssueValidity(commonName, notBefore, notAfter)
	if err != nil {
		return nil, nil, fmt.Errorf("etcdcluster: %w", err)
	}
	return kp.CertPEM, kp.KeyPEM, nil
}

// Client returns a client of the whole cluster, for test data; the caller closes it.
func (c *Cluster) Client() (*clientv3.Client, error) { return c.newClient(c.ClientURLs()) }

// freePorts reserves n distinct free loopback ports; all listeners stay open until all are chosen.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
