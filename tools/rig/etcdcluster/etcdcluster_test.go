package etcdcluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/procfs"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig/provisioner"
)

// binDir returns the directory of the rig's upstream binaries: RIG_BIN_DIR when set, else what the
// rig-build command builds or finds in .cache/rig (a subprocess, since package rig imports this one).
func binDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("RIG_BIN_DIR")
	if dir == "" {
		out, err := exec.Command("go", "run", "../cmd/rig-build", "-upstream-only").CombinedOutput()
		if err != nil {
			t.Fatalf("building the rig's upstream binaries: %v\n%s", err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if d, ok := strings.CutPrefix(line, "upstream binaries: "); ok {
				dir = d
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "etcd")); err != nil {
		t.Fatalf("no etcd binary in %q (RIG_BIN_DIR or the rig-build output): %v", dir, err)
	}
	return dir
}

func startCluster(t *testing.T, ctx context.Context, members int) (*Cluster, Config) {
	t.Helper()
	cfg := Config{BinDir: binDir(t), Dir: t.TempDir(), Name: "main", Members: members, LogDir: t.TempDir()}
	start := time.Now()
	c, err := Start(ctx, cfg)
	if err != nil {
		dumpLogs(t, cfg)
		t.Fatal(err)
	}
	t.Logf("%d members healthy after %s", members, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			dumpLogs(t, cfg)
		}
	})
	return c, cfg
}

func dumpLogs(t *testing.T, cfg Config) {
	logs, _ := filepath.Glob(filepath.Join(cfg.LogDir, "*.log"))
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		t.Logf("--- %s (tail)\n%s", l, data)
	}
}

// memberClient talks to member i only.
func memberClient(t *testing.T, c *Cluster, i int) *clientv3.Client {
	t.Helper()
	cli, err := c.newClient([]string{c.ClientURLs()[i]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func put(t *testing.T, cli *clientv3.Client, prefix string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err := cli.Put(ctx, fmt.Sprintf("%s%03d", prefix, i), "v")
		cancel()
		if err != nil {
			t.Fatalf("put %s%03d: %v", prefix, i, err)
		}
	}
}

func count(t *testing.T, cli *clientv3.Client, prefix string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatalf("count %s: %v", prefix, err)
	}
	return resp.Count
}

// leader returns the index of the leading member.
func leader(t *testing.T, c *Cluster, cli *clientv3.Client) int {
	t.Helper()
	for i, u := range c.ClientURLs() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := cli.Status(ctx, u)
		cancel()
		if err == nil && st.Header.MemberId == st.Leader {
			return i
		}
	}
	t.Fatal("no member is leader")
	return -1
}

// running reports whether a process of the group led by pid is alive (zombies aside).
func running(pid int) bool {
	procs, _ := procfs.AllProcs()
	for _, p := range procs {
		if st, err := p.Stat(); err == nil && st.PGRP == pid && st.State != "Z" {
			return true
		}
	}
	return false
}

func TestClusterQuorumAndRestart(t *testing.T) {
	c, cfg := startCluster(t, context.Background(), 3)
	cli, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	ml, err := cli.MemberList(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if len(ml.Members) != 3 {
		t.Fatalf("%d members, want 3", len(ml.Members))
	}
	names := map[string]string{}
	for _, m := range ml.Members {
		names[m.Name] = strings.Join(m.ClientURLs, ",")
	}
	for i := 0; i < 3; i++ {
		if names[c.MemberName(i)] != c.ClientURLs()[i] {
			t.Errorf("member %s advertises %q, want %s", c.MemberName(i), names[c.MemberName(i)], c.ClientURLs()[i])
		}
		if _, err := os.Stat(filepath.Join(cfg.Dir, fmt.Sprintf("main-%d", i), "data", "member", "wal")); err != nil {
			t.Errorf("member %d data dir: %v", i, err)
		}
		if c.MemberDir(i) != filepath.Join(cfg.Dir, fmt.Sprintf("main-%d", i)) {
			t.Errorf("MemberDir(%d) = %s", i, c.MemberDir(i))
		}
	}
	put(t, cli, "before/", 10)

	// Plaintext and unauthenticated TLS clients are refused: client-cert-auth is on.
	anon := c.tlsConfig.Clone()
	anon.Certificates = nil
	anonCli, err := clientv3.New(clientv3.Config{Endpoints: c.ClientURLs()[:1], TLS: anon, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err = anonCli.Get(ctx, "before/")
		cancel()
		anonCli.Close()
	}
	if err == nil {
		t.Error("a client without a certificate could read")
	}

	// Stop the leader: the other two keep quorum and elect a new one.
	l := leader(t, c, cli)
	stopped := time.Now()
	if err := c.StopMember(l); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped leader %s in %s", c.MemberName(l), time.Since(stopped).Round(time.Millisecond))
	put(t, cli, "during/", 10)
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Second)
	_, err = cli.Status(ctx, c.ClientURLs()[l])
	cancel()
	if err == nil {
		t.Errorf("stopped member %d still answers", l)
	}
	if err := c.StopMember(l); err != nil {
		t.Errorf("second StopMember: %v", err)
	}

	restarted := time.Now()
	if err := c.StartMember(l); err != nil {
		t.Fatal(err)
	}
	t.Logf("member %s rejoined in %s", c.MemberName(l), time.Since(restarted).Round(time.Millisecond))
	if err := c.StartMember(l); err == nil {
		t.Error("StartMember of a running member succeeded")
	}
	if got := count(t, memberClient(t, c, l), ""); got != 20 {
		t.Errorf("restarted member serves %d keys, want 20", got)
	}

	var pids []int
	c.mu.Lock()
	for _, m := range c.members {
		pids = append(pids, m.proc.cmd.Process.Pid)
	}
	c.mu.Unlock()
	c.Stop()
	c.Stop()
	for _, pid := range pids {
		if running(pid) {
			t.Errorf("etcd process group %d survived Stop", pid)
		}
	}
	for i := 0; i < 3; i++ {
		if fi, err := os.Stat(filepath.Join(cfg.LogDir, fmt.Sprintf("etcd-main-%d.log", i))); err != nil || fi.Size() == 0 {
			t.Errorf("log of member %d: %v", i, err)
		}
	}
	if err := c.StartMember(0); err == nil {
		t.Error("StartMember after Stop succeeded")
	}
}

func TestClusterStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c, _ := startCluster(t, ctx, 1)
	c.mu.Lock()
	pid := c.members[0].proc.cmd.Process.Pid
	c.mu.Unlock()
	cancel()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 15*time.Second, true, func(context.Context) (bool, error) {
		return !running(pid), nil
	})
	if err != nil {
		t.Fatalf("etcd %d still runs after its context ended: %v", pid, err)
	}
}

// TestRegister checks the objects Register creates, against the fake clientset. The fake has no PV
// controller, so a reactor binds each claim as it is created; binding by the real controller is the
// rig's smoke test.
func TestRegister(t *testing.T) {
	c, _ := startCluster(t, context.Background(), 3)
	kube := fake.NewClientset()
	kube.PrependReactor("create", "persistentvolumeclaims", func(a k8stesting.Action) (bool, runtime.Object, error) {
		pvc := a.(k8stesting.CreateAction).GetObject().(*v1.PersistentVolumeClaim)
		pvc.Status.Phase = v1.ClaimBound
		return false, nil, nil
	})
	ctx := context.Background()
	if err := c.Register(ctx, kube, "etcd-test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Register(ctx, kube, "etcd-test"); err != nil {
		t.Fatalf("second Register: %v", err)
	}
	if _, err := kube.CoreV1().Namespaces().Get(ctx, "etcd-test", metav1.GetOptions{}); err != nil {
		t.Error(err)
	}
	for i := 0; i < 3; i++ {
		pvc, err := kube.CoreV1().PersistentVolumeClaims("etcd-test").Get(ctx, fmt.Sprintf("data-main-%d", i), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if pvc.Labels[ClusterLabel] != "main" || pvc.Spec.VolumeName == "" {
			t.Errorf("PVC %s: labels %v volumeName %q", pvc.Name, pvc.Labels, pvc.Spec.VolumeName)
		}
		pv, err := kube.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != provisioner.DriverName || pv.Spec.CSI.VolumeHandle != c.MemberDir(i) {
			t.Errorf("PV %s source %+v, want %s handle %s", pv.Name, pv.Spec.PersistentVolumeSource, provisioner.DriverName, c.MemberDir(i))
		}
		if ref := pv.Spec.ClaimRef; ref == nil || ref.Namespace != "etcd-test" || ref.Name != pvc.Name {
			t.Errorf("PV %s claimRef %+v", pv.Name, ref)
		}
		if pv.Spec.PersistentVolumeReclaimPolicy != v1.PersistentVolumeReclaimRetain || pv.Spec.StorageClassName != *pvc.Spec.StorageClassName {
			t.Errorf("PV %s reclaim %s class %q (claim class %q)", pv.Name, pv.Spec.PersistentVolumeReclaimPolicy, pv.Spec.StorageClassName, *pvc.Spec.StorageClassName)
		}
	}
	svc, err := kube.CoreV1().Services("etcd-test").Get(ctx, "main-client", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	port := strings.TrimPrefix(c.ClientURLs()[0], "https://127.0.0.1:")
	if svc.Labels[ClusterLabel] != "main" || svc.Spec.Type != v1.ServiceTypeExternalName || svc.Spec.ExternalName != "localhost" ||
		len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "client" || strconv.Itoa(int(svc.Spec.Ports[0].Port)) != port {
		t.Errorf("Service = %+v %+v, want ExternalName localhost, port client=%s", svc.Labels, svc.Spec, port)
	}
	sec, err := kube.CoreV1().Secrets("etcd-test").Get(ctx, "main-client-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ca, cert, key := c.Creds()
	if !bytes.Equal(sec.Data["ca.crt"], ca) || !bytes.Equal(sec.Data["tls.crt"], cert) || !bytes.Equal(sec.Data["tls.key"], key) {
		t.Error("Secret main-client-tls does not hold the cluster's client credentials")
	}
	// The credentials in the Secret work against the cluster through the Service's host name.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(sec.Data["ca.crt"])
	pair, err := tls.X509KeyPair(sec.Data["tls.crt"], sec.Data["tls.key"])
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"https://" + svc.Spec.ExternalName + ":" + port},
		TLS:         &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if got := count(t, cli, ""); got != 0 {
		t.Errorf("fresh cluster has %d keys", got)
	}
}
