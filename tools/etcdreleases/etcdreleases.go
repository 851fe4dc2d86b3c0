// Package etcdreleases writes the shared snapshot fixtures in testdata/: one per etcd minor release,
// each saved by a real etcd of that release. Every release has its own module below this one
// (etcd-v3.5/, etcd-v3.6/, etcd-v3.7/) pinning that release; its main calls Main with the release's
// snapshot save function. The workload and the facts recorded beside each snapshot live here once, so
// the three files differ only in the etcd that wrote them.
//
// This module requires the oldest release it supports; each release module's pins select the newer
// etcd it runs.
package etcdreleases

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// SaveFunc saves a snapshot of the member cfg names into path, as the release's
// go.etcd.io/etcd/client/v3/snapshot does, and returns the storage version the server reports ("" for
// releases that report none).
type SaveFunc func(ctx context.Context, lg *zap.Logger, cfg clientv3.Config, path string) (string, error)

// Facts is what etcd itself served when the snapshot was saved; it is written beside the snapshot
// (etcd-v3.X.snapshot.json) for the tests to compare with.
type Facts struct {
	// EtcdVersion is the server version the member reported (Status).
	EtcdVersion string `json:"etcdVersion"`
	// StorageVersion is what the snapshot stream reported; empty before etcd v3.6.
	StorageVersion string `json:"storageVersion,omitempty"`
	// Revision is the store revision when the snapshot was saved.
	Revision int64 `json:"revision"`
	// CompactRevision is the revision the workload compacted at.
	CompactRevision int64 `json:"compactRevision"`
	// Keys is the number of keys a range over the whole key space counted.
	Keys int64 `json:"keys"`
	// Leases is the number of leases the member listed.
	Leases int `json:"leases"`
	// LeaseKeys is the number of keys attached to the lease that outlives the workload.
	LeaseKeys int `json:"leaseKeys"`
}

// Main parses -out and -facts, runs the workload on an embedded etcd in a temp dir, saves its
// snapshot with save and prints the testdata/README.md table row. It exits non-zero on any failure.
func Main(save SaveFunc) {
	out := flag.String("out", "", "snapshot file to write (testdata/etcd-v3.X.snapshot.db)")
	factsPath := flag.String("facts", "", "JSON file to write what etcd served (testdata/etcd-v3.X.snapshot.json)")
	flag.Parse()
	if *out == "" || *factsPath == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: go run . -out FILE.snapshot.db -facts FILE.snapshot.json")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	facts, err := generate(ctx, save, *out)
	if err == nil {
		err = writeFacts(*factsPath, facts)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcdreleases: %v\n", err)
		os.Exit(1)
	}
	info, err := os.Stat(*out)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcdreleases: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("| %s | %s | %d | %d | %d | %d | %d |\n", filepath.Base(*out), facts.EtcdVersion, facts.Keys,
		facts.Revision, facts.CompactRevision, facts.Leases, info.Size())
}

// generate starts the member, runs the workload and saves the snapshot into out.
func generate(ctx context.Context, save SaveFunc, out string) (*Facts, error) {
	dir, err := os.MkdirTemp("", "etcdreleases-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	e, clientURL, err := startEtcd(dir)
	if err != nil {
		return nil, err
	}
	defer e.Close()

	cfg := clientv3.Config{Endpoints: []string{clientURL}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	facts, err := runWorkload(ctx, cli)
	if err != nil {
		return nil, fmt.Errorf("workload: %w", err)
	}
	st, err := cli.Status(ctx, clientURL)
	if err != nil {
		return nil, err
	}
	facts.EtcdVersion = st.Version
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return nil, err
	}
	if facts.StorageVersion, err = save(ctx, zap.NewNop(), cfg, out); err != nil {
		return nil, fmt.Errorf("snapshot save: %w", err)
	}
	// The snapshot is the member's state at the end of the workload: nothing wrote since.
	after, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil, err
	}
	if after.Header.Revision != facts.Revision {
		return nil, fmt.Errorf("revision moved from %d to %d while saving", facts.Revision, after.Header.Revision)
	}
	return facts, nil
}

// startEtcd starts a one-member etcd with its data in dir on free loopback ports and returns it with
// its client URL once it serves.
func startEtcd(dir string) (*embed.Etcd, string, error) {
	var lastErr error
	// A probed free port may be taken before etcd binds it; another pair of ports is tried then.
	for attempt := range 3 {
		ports, err := freePorts(2)
		if err != nil {
			return nil, "", err
		}
		peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
		client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}
		cfg := embed.NewConfig()
		cfg.Name = "etcdreleases"
		cfg.Dir = filepath.Join(dir, fmt.Sprintf("attempt-%d", attempt))
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		cfg.InitialCluster = cfg.Name + "=" + peer.String()
		cfg.InitialClusterToken = "etcdreleases"
		// Closing the member logs its listeners' shutdown as errors; failures come back as errors.
		cfg.LogLevel = "fatal"
		cfg.UnsafeNoFsync = true
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			lastErr = err
			continue
		}
		select {
		case <-e.Server.ReadyNotify():
			return e, client.String(), nil
		case err := <-e.Err():
			lastErr = err
		case <-time.After(time.Minute):
			lastErr = errors.New("not ready after 1m")
		}
		e.Close()
	}
	return nil, "", fmt.Errorf("start etcd: %w", lastErr)
}

// freePorts returns n distinct loopback TCP ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Workload sizes: a few hundred keys laid out like a Kubernetes cluster's, with values from empty to
// a few KiB.
const (
	configMaps = 240
	events     = 20
	nodeLeases = 6
	apiLeases  = 4
	leaseTTL   = 24 * 60 * 60 // seconds; outlives any regeneration, restore or test
)

// valueSizes cycle over the config maps so every page holds a mix of small and large values.
var valueSizes = []int{0, 16, 100, 500, 1500}

// value is the deterministic content of key at its gen-th write, size bytes long.
func value(key string, gen, size int) string {
	if size == 0 {
		return ""
	}
	unit := fmt.Sprintf("%s@%d;", key, gen)
	return strings.Repeat(unit, size/len(unit)+1)[:size]
}

func configMapKey(i int) string { return fmt.Sprintf("/registry/configmaps/ns-%d/cm-%03d", i%4, i) }

// runWorkload writes what a real cluster's store holds, one request at a time so every run assigns
// the same revisions: creates, keys overwritten into several revisions, a physical compaction,
// deletes and a range delete, a lease with keys attached that outlives the workload and one revoked
// with its keys, a multi-operation transaction, and writes after the compaction.
func runWorkload(ctx context.Context, cli *clientv3.Client) (*Facts, error) {
	put := func(key, val string, opts ...clientv3.OpOption) error {
		_, err := cli.Put(ctx, key, val, opts...)
		return err
	}
	for i := range configMaps {
		if err := put(configMapKey(i), value(configMapKey(i), 0, valueSizes[i%len(valueSizes)])); err != nil {
			return nil, err
		}
	}
	// Every third config map gets two more revisions.
	for gen := 1; gen <= 2; gen++ {
		for i := 0; i < configMaps; i += 3 {
			if err := put(configMapKey(i), value(configMapKey(i), gen, valueSizes[(i+gen)%len(valueSizes)])); err != nil {
				return nil, err
			}
		}
	}
	head, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil, err
	}
	compactRev := head.Header.Revision
	if _, err := cli.Compact(ctx, compactRev, clientv3.WithCompactPhysical()); err != nil {
		return nil, fmt.Errorf("compact at %d: %w", compactRev, err)
	}
	for i := 0; i < configMaps; i += 8 {
		if _, err := cli.Delete(ctx, configMapKey(i)); err != nil {
			return nil, err
		}
	}
	for i := range events {
		k := fmt.Sprintf("/registry/events/default/e-%02d", i)
		if err := put(k, value(k, 0, 200)); err != nil {
			return nil, err
		}
	}
	if _, err := cli.Delete(ctx, "/registry/events/", clientv3.WithPrefix()); err != nil {
		return nil, err
	}

	// Lease IDs are fixed so every run writes the same lease bucket.
	leases := pb.NewLeaseClient(cli.ActiveConnection())
	const nodeLeaseID, apiLeaseID = 0x6574636472656c01, 0x6574636472656c02
	for _, id := range []int64{nodeLeaseID, apiLeaseID} {
		if resp, err := leases.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: leaseTTL}); err != nil {
			return nil, err
		} else if resp.Error != "" {
			return nil, errors.New(resp.Error)
		}
	}
	for i := range nodeLeases {
		k := fmt.Sprintf("/registry/leases/kube-node-lease/node-%d", i)
		if err := put(k, value(k, 0, 300), clientv3.WithLease(nodeLeaseID)); err != nil {
			return nil, err
		}
	}
	for i := range apiLeases {
		k := fmt.Sprintf("/registry/masterleases/10.0.0.%d", i)
		if err := put(k, value(k, 0, 64), clientv3.WithLease(apiLeaseID)); err != nil {
			return nil, err
		}
	}
	// Revoking deletes the lease's keys in one revision.
	if _, err := cli.Revoke(ctx, apiLeaseID); err != nil {
		return nil, err
	}

	txn, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Version(configMapKey(1)), ">", 0)).
		Then(
			clientv3.OpPut("/registry/ranges/serviceips", value("serviceips", 0, 120)),
			clientv3.OpPut("/registry/ranges/servicenodeports", value("servicenodeports", 0, 90)),
			clientv3.OpDelete(configMapKey(9)),
		).Commit()
	if err != nil {
		return nil, err
	}
	if !txn.Succeeded {
		return nil, errors.New("transaction compare failed")
	}
	for i := 1; i <= 10; i++ {
		if err := put(configMapKey(i), value(configMapKey(i), 3, valueSizes[(i+3)%len(valueSizes)])); err != nil {
			return nil, err
		}
	}

	all, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil, err
	}
	listed, err := cli.Leases(ctx)
	if err != nil {
		return nil, err
	}
	attached, err := cli.TimeToLive(ctx, nodeLeaseID, clientv3.WithAttachedKeys())
	if err != nil {
		return nil, err
	}
	return &Facts{
		Revision:        all.Header.Revision,
		CompactRevision: compactRev,
		Keys:            all.Count,
		Leases:          len(listed.Leases),
		LeaseKeys:       len(attached.Keys),
	}, nil
}

// writeFacts writes facts as indented JSON.
func writeFacts(path string, facts *Facts) error {
	b, err := json.MarshalIndent(facts, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
