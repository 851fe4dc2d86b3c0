package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// concurrentTimeout bounds TestE2EConcurrentSnapshots: two StatefulSet clusters to start and twenty
// snapshots at once on a shared 2-core machine.
const concurrentTimeout = 10 * time.Minute

// markerPrefix holds one key per cluster in TestE2EConcurrentSnapshots, whose value names the cluster.
const markerPrefix = "/e2e/concurrent/"

// etcdCluster is one cluster TestE2EConcurrentSnapshots snapshots.
type etcdCluster struct {
	namespace, name string
	client          func() (*clientv3.Client, error)
	create          func(ctx context.Context, name string) (*groupsnapshotv1.VolumeGroupSnapshot, error)
}

func (c *etcdCluster) String() string { return c.namespace + "/" + c.name }

// TestE2EConcurrentSnapshots creates 20 VolumeGroupSnapshots at once across three etcd clusters in
// three namespaces (the cluster under test and two StatefulSet clusters, each with its own CA and
// credentials): all become ready, each record names its own cluster, namespace, PVCs and members (as
// the cluster's MemberList has them), and each saved file holds its own cluster's data: `etcdutl
// hashkv` of the file equals the live cluster's HashKV at the record's revision, and the file restored
// holds that cluster's marker key and no other's.
func TestE2EConcurrentSnapshots(t *testing.T) {
	r, _ := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), concurrentTimeout)
	defer cancel()

	clusters := []*etcdCluster{{
		namespace: r.Namespace, name: rig.EtcdClusterName, client: r.EtcdClient,
		create: r.CreateGroupSnapshot,
	}}
	begin := time.Now()
	statefulSets := make([]*rig.EtcdStatefulSet, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range statefulSets {
		wg.Go(func() {
			name := fmt.Sprintf("conc-%c", 'b'+i)
			statefulSets[i], errs[i] = r.StartEtcdStatefulSet(ctx, name, "etcd-"+name, 3)
		})
	}
	wg.Wait()
	for i, s := range statefulSets {
		if errs[i] != nil {
			continue
		}
		t.Cleanup(func() {
			if err := s.Delete(cleanupContext(t)); err != nil {
				t.Errorf("clean-up: %v", err)
			}
		})
	}
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range statefulSets {
		if err := s.InstallSnapshotClasses(ctx); err != nil {
			t.Fatal(err)
		}
		clusters = append(clusters, &etcdCluster{namespace: s.Namespace(), name: s.Name(), client: s.Client, create: s.CreateGroupSnapshot})
	}
	t.Logf("two 3-member StatefulSet clusters up in %s", time.Since(begin).Round(100*time.Millisecond))

	// The marker of each cluster, under the same key everywhere so that a file from the wrong cluster
	// shows the wrong value.
	for _, c := range clusters {
		cli, err := c.client()
		if err != nil {
			t.Fatal(err)
		}
		_, err = cli.Put(ctx, markerPrefix+"marker", c.String())
		cli.Close()
		if err != nil {
			t.Fatalf("write the marker of cluster %s: %v", c, err)
		}
	}
	t.Cleanup(func() { // the shared cluster under test outlives this test; the others are deleted
		cli, err := r.EtcdClient()
		if err == nil {
			_, err = cli.Delete(cleanupContext(t), markerPrefix, clientv3.WithPrefix())
			cli.Close()
		}
		if err != nil {
			t.Errorf("clean-up: delete %s*: %v", markerPrefix, err)
		}
	})

	before, err := r.DriverObjects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	type snap struct {
		cluster *etcdCluster
		name    string
		vgs     *groupsnapshotv1.VolumeGroupSnapshot
		took    time.Duration
		err     error
	}
	snaps := make([]*snap, n)
	for i := range snaps {
		snaps[i] = &snap{cluster: clusters[i%len(clusters)], name: uniqueName(fmt.Sprintf("conc-%02d", i))}
	}
	// Clean-up: every VolumeGroupSnapshot at once, then nothing of the driver's may be left of them.
	t.Cleanup(func() {
		ctx := cleanupContext(t)
		var wg sync.WaitGroup
		for _, s := range snaps {
			wg.Go(func() {
				if err := r.DeleteGroupSnapshotIn(ctx, s.cluster.namespace, s.name); err != nil {
					t.Errorf("clean-up: %v", err)
				}
			})
		}
		wg.Wait()
		left, err := r.WaitNoLeaks(ctx, before, pollInterval)
		if err != nil {
			t.Errorf("clean-up: %v", err)
		} else if len(left) > 0 {
			t.Errorf("clean-up: after deleting the %d VolumeGroupSnapshots these remain: %s", n, left)
		}
	})

	begin = time.Now()
	for _, s := range snaps {
		wg.Go(func() {
			if _, s.err = s.cluster.create(ctx, s.name); s.err != nil {
				return
			}
			s.vgs, s.err = r.WaitGroupSnapshotReadyIn(ctx, s.cluster.namespace, s.name)
			s.took = time.Since(begin)
		})
	}
	wg.Wait()
	var slowest time.Duration
	for _, s := range snaps {
		if s.err != nil {
			t.Errorf("%s/%s: %v", s.cluster.namespace, s.name, s.err)
		}
		slowest = max(slowest, s.took)
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d VolumeGroupSnapshots across %d clusters all ready %s after they were created at once", n, len(clusters), slowest.Round(100*time.Millisecond))

	// What each cluster says of itself, to hold each record against.
	type truth struct {
		pvcs    []string
		members map[string]driver.MemberRecord // by name
		cli     *clientv3.Client
	}
	truths := map[*etcdCluster]*truth{}
	for _, c := range clusters {
		tr := &truth{members: map[string]driver.MemberRecord{}}
		list, err := r.Kube.CoreV1().PersistentVolumeClaims(c.namespace).List(ctx, metav1.ListOptions{
			LabelSelector: labels.Set{rig.ClusterLabel: c.name}.String(),
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range list.Items {
			tr.pvcs = append(tr.pvcs, p.Name)
		}
		if tr.cli, err = c.client(); err != nil {
			t.Fatal(err)
		}
		defer tr.cli.Close()
		resp, err := tr.cli.MemberList(ctx)
		if err != nil {
			t.Fatalf("cluster %s: MemberList: %v", c, err)
		}
		for _, m := range resp.Members {
			tr.members[m.Name] = driver.MemberRecord{ID: fmt.Sprintf("%x", m.ID), Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs}
		}
		truths[c] = tr
	}

	ids := map[string]string{}
	recs := map[*snap]*driver.Record{}
	for _, s := range snaps {
		c, tr := s.cluster, truths[s.cluster]
		what := fmt.Sprintf("%s/%s (cluster %s)", c.namespace, s.name, c)
		rec, err := r.GroupSnapshotRecord(ctx, s.vgs)
		if err != nil {
			t.Fatal(err)
		}
		if other, ok := ids[rec.ID]; ok {
			t.Errorf("%s and %s share snapshot id %s", other, what, rec.ID)
		}
		ids[rec.ID] = what
		if rec.Phase != driver.PhaseReady || rec.Namespace != c.namespace || rec.Cluster != c.name {
			t.Errorf("%s: record %s is %s of cluster %s/%s", what, rec.ID, rec.Phase, rec.Namespace, rec.Cluster)
		}
		var pvcs []string
		for _, src := range rec.Sources {
			pvcs = append(pvcs, src.PVC)
		}
		if !sameSet(pvcs, tr.pvcs) {
			t.Errorf("%s: record %s covers PVCs %v, the cluster has %v", what, rec.ID, pvcs, tr.pvcs)
		}
		got := map[string]driver.MemberRecord{}
		for _, m := range rec.Members {
			got[m.Name] = m
		}
		if !maps.EqualFunc(got, tr.members, sameMember) {
			t.Errorf("%s: record %s lists members %+v, the cluster's MemberList says %+v", what, rec.ID, rec.Members, slices.Collect(maps.Values(tr.members)))
		}
		if sm := rec.SourceMember; sm == nil || !slices.Contains(tr.members[sm.Name].ClientURLs, sm.Endpoint) || tr.members[sm.Name].ID != sm.ID {
			t.Errorf("%s: record %s was saved from %+v, not a member of this cluster", what, rec.ID, rec.SourceMember)
		}
		recs[s] = rec
	}
	// The files, two at a time (-parallel is GOMAXPROCS): each is hashed and restored.
	t.Run("files", func(t *testing.T) {
		for _, s := range snaps {
			t.Run(recs[s].ID, func(t *testing.T) {
				t.Parallel()
				checkFileOfCluster(t, ctx, r, recs[s], s.cluster, clusters, func(c *etcdCluster) *clientv3.Client { return truths[c].cli })
			})
		}
	})
}

func sameMember(a, b driver.MemberRecord) bool {
	return a.ID == b.ID && a.Name == b.Name && sameSet(a.PeerURLs, b.PeerURLs) && sameSet(a.ClientURLs, b.ClientURLs)
}

// hashKV is the JSON output of `etcdutl hashkv -w json`.
type hashKV struct {
	Hash            uint32 `json:"hash"`
	HashRevision    int64  `json:"hashRevision"`
	CompactRevision int64  `json:"compactRevision"`
}

// checkFileOfCluster checks that the file of rec holds the data of cluster own: its KV hash (etcdutl
// hashkv) is own's live HashKV at the record's revision and no other cluster's, and restored it holds
// own's marker and nothing else under markerPrefix.
func checkFileOfCluster(t *testing.T, ctx context.Context, r *rig.Rig, rec *driver.Record, own *etcdCluster, all []*etcdCluster, client func(*etcdCluster) *clientv3.Client) {
	t.Helper()
	file, err := r.SnapshotFilePath(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	// etcdutl hashkv opens the file as a database and writes to it (the sha256 trailer no longer
	// matches afterwards): it gets a copy.
	cp := filepath.Join(t.TempDir(), "snapshot.db")
	if err := rig.CopyFile(file, cp); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(r.BinDir, "etcdutl"), "hashkv", cp, fmt.Sprintf("--rev=%d", rec.Revision), "-w", "json").Output()
	if err != nil {
		t.Fatalf("etcdutl hashkv %s: %v %s", file, err, exitStderr(err))
	}
	var fh hashKV
	if err := json.Unmarshal(out, &fh); err != nil {
		t.Fatalf("etcdutl hashkv %s: %v in %q", file, err, out)
	}
	if fh.HashRevision != rec.Revision {
		t.Errorf("snapshot %s: etcdutl hashkv hashed up to revision %d, want the record's %d", rec.ID, fh.HashRevision, rec.Revision)
	}
	for _, c := range all {
		cli := client(c)
		live, err := cli.HashKV(ctx, cli.Endpoints()[0], rec.Revision)
		if c != own {
			if err == nil && live.Hash == fh.Hash {
				t.Errorf("snapshot %s of cluster %s: its KV hash %d at revision %d is also cluster %s's", rec.ID, own, fh.Hash, rec.Revision, c)
			}
			continue
		}
		if err != nil {
			t.Fatalf("cluster %s: HashKV at revision %d: %v", c, rec.Revision, err)
		}
		if live.Hash != fh.Hash || live.CompactRevision != fh.CompactRevision {
			t.Errorf("snapshot %s of cluster %s: file KV hash %d (compacted at %d), the cluster's at revision %d is %d (compacted at %d)",
				rec.ID, own, fh.Hash, fh.CompactRevision, rec.Revision, live.Hash, live.CompactRevision)
		}
	}
	kvs, _ := restoredKeys(t, ctx, r, file, markerPrefix)
	if want := map[string]string{markerPrefix + "marker": own.String()}; !maps.Equal(kvs, want) {
		t.Errorf("snapshot %s of cluster %s restored holds %v under %s, want %v", rec.ID, own, kvs, markerPrefix, want)
	}
}

// exitStderr is the standard error of a failed exec.Cmd.Output, if it kept any.
func exitStderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// sameSet reports whether a and b list the same distinct strings, in any order.
func sameSet(a, b []string) bool {
	return len(a) == len(b) && sets.New(a...).Equal(sets.New(b...)) && sets.New(a...).Len() == len(a)
}
