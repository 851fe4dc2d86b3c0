package driver

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// TestRestoreStepRestoresReleaseSnapshots restores the snapshot each etcd release saved through the
// restore pod's sequence (prepare, the pinned etcdutl, swap) onto a volume with an old data dir, then
// starts the driver's etcd on the restored member: it serves the keys and leases the saving etcd
// served, at the revision bumped as the restore command bumps it by default.
func TestRestoreStepRestoresReleaseSnapshots(t *testing.T) {
	etcdutl := etcdutlBinary(t)
	bump, err := strconv.ParseInt(testBumpRevision, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	for _, snap := range releaseSnapshots(t) {
		t.Run(snap.Release, func(t *testing.T) {
			const id = "r1"
			v := newRestoreVolume(t, "data", id, false)
			data := filepath.Join(v.vol, v.rel)
			ports, err := freePorts(1)
			if err != nil {
				t.Fatal(err)
			}
			peer := url.URL{Scheme: "https", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}

			code, _, stderr := runRestoreStepCLI(t, stepOptions("prepare", v.vol, v.rel, id))
			if code != 0 {
				t.Fatalf("prepare: exit %d stderr %q", code, stderr)
			}
			if err := etcdutlRestore(etcdutl, snap.Path, data+".restore-"+id, "m0", peer.String()); err != nil {
				t.Fatal(err)
			}
			code, res, stderr := runRestoreStepCLI(t, stepOptions("swap", v.vol, v.rel, id))
			if code != 0 {
				t.Fatalf("swap: exit %d stderr %q", code, stderr)
			}
			f := snap.Facts
			v.checkRestored(t, etcdutl, id, false, &res, f.Keys)
			if res.Revision != f.Revision+bump {
				t.Errorf("swap reports revision %d; etcd %s saved revision %d, bumped by %d", res.Revision, f.EtcdVersion, f.Revision, bump)
			}

			c := startTestClusterWith(t, 1, func(cfg *embed.Config) {
				cfg.Dir = data
				cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
				cfg.InitialCluster = "m0=" + peer.String()
			})
			if count, rev := c.liveKeys(t); count != f.Keys || rev != res.Revision {
				t.Errorf("etcd on the restored dir serves %d keys at revision %d; etcd %s saved %d, swap reports revision %d",
					count, rev, f.EtcdVersion, f.Keys, res.Revision)
			}
			ctx := context.Background()
			leases, err := c.cli.Leases(ctx)
			if err != nil {
				t.Fatal(err)
			}
			attached := 0
			for _, l := range leases.Leases {
				ttl, err := c.cli.TimeToLive(ctx, l.ID, clientv3.WithAttachedKeys())
				if err != nil {
					t.Fatal(err)
				}
				attached += len(ttl.Keys)
			}
			if len(leases.Leases) != f.Leases || attached != f.LeaseKeys {
				t.Errorf("etcd on the restored dir holds %d leases with %d keys attached; etcd %s saved %d with %d",
					len(leases.Leases), attached, f.EtcdVersion, f.Leases, f.LeaseKeys)
			}
		})
	}
}
