package e2e

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// restoredKeys restores a snapshot file with the rig's etcdutl into a new data dir, starts an embedded
// etcd on it and returns every key under prefix with its value, and the restored store's revision:
// what a user restoring this snapshot would get back.
func restoredKeys(t *testing.T, ctx context.Context, r *rig.Rig, file, prefix string) (map[string]string, int64) {
	t.Helper()
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	peer := url.URL{Scheme: "http", Host: freeAddr(t)}
	client := url.URL{Scheme: "http", Host: freeAddr(t)}
	const name = "e2e-restore"
	cmd := exec.CommandContext(ctx, filepath.Join(r.BinDir, "etcdutl"), "snapshot", "restore", file,
		"--data-dir="+dataDir,
		"--name="+name,
		"--initial-cluster="+name+"="+peer.String(),
		"--initial-advertise-peer-urls="+peer.String(),
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("etcdutl snapshot restore %s: %v\n%s", file, err, out)
	}

	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dataDir
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.InitialCluster = name + "=" + peer.String()
	cfg.UnsafeNoFsync = true
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start etcd on the restored snapshot: %v", err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatalf("etcd on the restored snapshot: %v", err)
	case <-ctx.Done():
		t.Fatalf("etcd on the restored snapshot not ready: %v", ctx.Err())
	}

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client.String()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("read %s* from the restored snapshot: %v", prefix, err)
	}
	kvs := map[string]string{}
	for _, kv := range resp.Kvs {
		kvs[string(kv.Key)] = string(kv.Value)
	}
	return kvs, resp.Header.Revision
}

// freeAddr returns a loopback host:port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprintf("127.0.0.1:%d", l.Addr().(*net.TCPAddr).Port)
}
