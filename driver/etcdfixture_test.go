package driver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/testpki"
)

// testCluster is an in-process etcd cluster with TLS on the client and peer ports and client
// certificate authentication on both, for tests that need a real etcd.
type testCluster struct {
	// Members are the running servers, index i is named "m<i>"; a stopped member stays in place.
	Members []*embed.Etcd
	// ClientURLs holds one https client URL per member, in member order.
	ClientURLs []string
	// CA signed every server, peer and client certificate of the cluster.
	CA *testpki.CA
	// Client is a client certificate the cluster accepts.
	Client *testpki.KeyPair
	// Dir holds the data directories and certificate files.
	Dir string

	mu      sync.Mutex
	stopped []bool
	cli     *clientv3.Client
}

// Timings small enough for fast elections, large enough that a loaded 2-core machine under -race
// does not miss heartbeats and flap leaders.
const (
	testTickMs     = 50
	testElectionMs = 1000
	// testStartAttempts covers the rare case that a probed free port is taken before etcd binds it.
	testStartAttempts = 3
)

// startTestCluster starts an n-member TLS etcd cluster on free 127.0.0.1 ports and waits until every
// member is ready; t.Cleanup stops it.
func startTestCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	return startTestClusterWith(t, n, nil)
}

// startTestClusterWith is startTestCluster with a hook that may adjust each member's configuration.
func startTestClusterWith(t *testing.T, n int, configure func(*embed.Config)) *testCluster {
	t.Helper()
	ca, err := testpki.NewCA("etcd-test-ca")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Issue("etcd-test-server", "127.0.0.1", "localhost")
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Issue("etcd-test-client")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := ca.WriteCertFile(caFile); err != nil {
		t.Fatal(err)
	}
	if err := server.WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	tlsInfo := transport.TLSInfo{CertFile: certFile, KeyFile: keyFile, TrustedCAFile: caFile, ClientCertAuth: true}

	var lastErr error
	for attempt := 0; attempt < testStartAttempts; attempt++ {
		c := &testCluster{CA: ca, Client: client, Dir: filepath.Join(dir, fmt.Sprintf("attempt-%d", attempt))}
		if lastErr = c.start(n, tlsInfo, configure); lastErr == nil {
			t.Cleanup(c.close)
			c.connect(t)
			return c
		}
		c.close()
		t.Logf("etcd test cluster start attempt %d failed: %v", attempt+1, lastErr)
	}
	t.Fatalf("start %d-member etcd test cluster: %v", n, lastErr)
	return nil
}

// start launches n members and waits for all of them to be ready.
func (c *testCluster) start(n int, tlsInfo transport.TLSInfo, configure func(*embed.Config)) error {
	ports, err := freePorts(2 * n)
	if err != nil {
		return err
	}
	names := make([]string, n)
	peerURLs := make([]url.URL, n)
	clientURLs := make([]url.URL, n)
	initial := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("m%d", i)
		peerURLs[i] = url.URL{Scheme: "https", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i])}
		clientURLs[i] = url.URL{Scheme: "https", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}
		initial[i] = names[i] + "=" + peerURLs[i].String()
		c.ClientURLs = append(c.ClientURLs, clientURLs[i].String())
	}
	c.stopped = make([]bool, n)
	for i := range n {
		cfg := embed.NewConfig()
		cfg.Name = names[i]
		cfg.Dir = filepath.Join(c.Dir, names[i])
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peerURLs[i]}, []url.URL{peerURLs[i]}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{clientURLs[i]}, []url.URL{clientURLs[i]}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "etcd-test"
		cfg.ClusterState = embed.ClusterStateFlagNew
		cfg.ClientTLSInfo, cfg.PeerTLSInfo = tlsInfo, tlsInfo
		cfg.TickMs, cfg.ElectionMs = testTickMs, testElectionMs
		cfg.UnsafeNoFsync = true
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		if configure != nil {
			configure(cfg)
		}
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			return fmt.Errorf("member %s: %w", names[i], err)
		}
		c.Members = append(c.Members, e)
	}
	timeout := time.After(60 * time.Second)
	for i, e := range c.Members {
		select {
		case <-e.Server.ReadyNotify():
		case err := <-e.Err():
			return fmt.Errorf("member %s: %w", names[i], err)
		case <-timeout:
			return fmt.Errorf("member %s not ready after 60s", names[i])
		}
	}
	return nil
}

// connect opens the cluster-wide client used by Put.
func (c *testCluster) connect(t *testing.T) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   c.ClientURLs,
		TLS:         c.tlsConfig(t),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("etcd test client: %v", err)
	}
	c.cli = cli
}

// tlsConfig is the client TLS configuration for this cluster's certificates.
func (c *testCluster) tlsConfig(t *testing.T) *tls.Config {
	t.Helper()
	pair, err := tls.X509KeyPair(c.Client.CertPEM, c.Client.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CA.CertPEM())
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// Stop stops member i; later calls and the final cleanup skip it.
func (c *testCluster) Stop(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped[i] {
		return
	}
	c.stopped[i] = true
	c.Members[i].Close()
}

// Creds returns the CA certificate and a client certificate and key the cluster accepts.
func (c *testCluster) Creds() Credentials {
	return Credentials{CA: c.CA.CertPEM(), Cert: c.Client.CertPEM, Key: c.Client.KeyPEM}
}

// Put writes n keys named prefix+"%06d" (0..n-1) with values "value-%d", one revision per key.
func (c *testCluster) Put(t *testing.T, n int, prefix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const workers = 8
	errs := make(chan error, workers)
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if _, err := c.cli.Put(ctx, fmt.Sprintf("%s%06d", prefix, i), fmt.Sprintf("value-%d", i)); err != nil {
					errs <- fmt.Errorf("put %s%06d: %w", prefix, i, err)
					return
				}
			}
		})
	}
	func() {
		defer close(next)
		for i := range n {
			select {
			case next <- i:
			case err := <-errs:
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	if err := errors.Join(drainErrors(errs)...); err != nil {
		t.Fatal(err)
	}
}

// drainErrors collects everything left in errs.
func drainErrors(errs <-chan error) []error {
	var out []error
	for err := range errs {
		out = append(out, err)
	}
	return out
}

// close stops every member still running and the Put client.
func (c *testCluster) close() {
	if c.cli != nil {
		c.cli.Close()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.Members {
		if i < len(c.stopped) && c.stopped[i] {
			continue
		}
		if i < len(c.stopped) {
			c.stopped[i] = true
		}
		e.Close()
	}
	os.RemoveAll(c.Dir)
}

// freePorts returns n distinct loopback TCP ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("reserve a loopback port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// target is a ClusterTarget for c through all of its client URLs.
func (c *testCluster) target() ClusterTarget {
	return ClusterTarget{Endpoints: c.ClientURLs, Creds: c.Creds(), Timeout: checkTimeout}
}

// memberID returns the etcd member id of member i.
func (c *testCluster) memberID(i int) uint64 { return uint64(c.Members[i].Server.MemberID()) }

// leaderIndex returns the index of the member the cluster reports as leader.
func (c *testCluster) leaderIndex(t *testing.T) int {
	t.Helper()
	for i, e := range c.Members {
		if c.stopped[i] {
			continue
		}
		lead := uint64(e.Server.Leader())
		for j := range c.Members {
			if c.memberID(j) == lead {
				return j
			}
		}
	}
	t.Fatal("no member knows a leader")
	return -1
}
