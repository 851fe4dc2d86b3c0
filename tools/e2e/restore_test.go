package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// readyKey is the key the rig writes to see that a cluster answers (rig.EtcdStatefulSet.Start).
const readyKey = "/rig/ready"

// restoreTimeout bounds one restore test: a StatefulSet cluster, a snapshot, a restore with a scale
// down and up, on a loaded 2-core machine.
const restoreTimeout = 6 * time.Minute

// restoreEnv is a StatefulSet etcd cluster in the rig's namespace with snapshot classes of its own
// (its own client credentials) and a restorer identity bound to manifests/restorer.yaml.
type restoreEnv struct {
	r          *rig.Rig
	ctx        context.Context
	sts        *rig.EtcdStatefulSet
	kubeconfig string // the restorer's
}

func setupRestore(t *testing.T, base string) *restoreEnv {
	t.Helper()
	r, _ := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), restoreTimeout)
	t.Cleanup(cancel)
	name := uniqueName(base)
	sts, err := r.StartEtcdStatefulSet(ctx, name, r.Namespace, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sts.Delete(cleanupContext(t)); err != nil {
			t.Errorf("clean-up: %v", err)
		}
	})
	if err := sts.InstallSnapshotClasses(ctx); err != nil {
		t.Fatal(err)
	}
	e := &restoreEnv{r: r, ctx: ctx, sts: sts}
	e.kubeconfig = restorerKubeconfig(t, ctx, r)
	return e
}

// restorerKubeconfig writes a kubeconfig for a ServiceAccount bound only to the ClusterRole
// etcd-snapshot-driver-restorer of manifests/restorer.yaml, so the tests prove that role suffices.
func restorerKubeconfig(t *testing.T, ctx context.Context, r *rig.Rig) string {
	t.Helper()
	const ns, sa = "default", "etcd-restorer"
	kube := r.Kube
	if _, err := kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "etcd-restorer-e2e"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "etcd-snapshot-driver-restorer"},
	}
	if _, err := kube.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ca := r.RESTConfig.TLSClientConfig.CAData
	if len(ca) == 0 && r.RESTConfig.TLSClientConfig.CAFile != "" {
		if ca, err = os.ReadFile(r.RESTConfig.TLSClientConfig.CAFile); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "restorer.kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: rig, cluster: {server: %q, certificate-authority-data: %q}}]
users: [{name: restorer, user: {token: %q}}]
contexts: [{name: rig, context: {cluster: rig, user: restorer, namespace: %q}}]
current-context: rig
`, r.APIServerURL, base64.StdEncoding.EncodeToString(ca), tr.Status.Token, r.Namespace)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// seed writes the keys prefix<0..n-1> = "v1" into the StatefulSet under restore and returns a client of
// it and what it then holds.
func (e *restoreEnv) seed(t *testing.T, prefix string, n int) (*clientv3.Client, map[string]string) {
	t.Helper()
	cli := stsClient(t, e.sts)
	writeKeys(t, e.ctx, cli, prefix, 0, n, "v1")
	want, _ := dump(t, e.ctx, cli)
	return cli, want
}

// snapshotGroup takes a dynamic VolumeGroupSnapshot of the environment's cluster and waits for it.
func (e *restoreEnv) snapshotGroup(t *testing.T) (*groupsnapshotv1.VolumeGroupSnapshot, *driver.Record) {
	t.Helper()
	name := uniqueName("restore-src")
	if _, err := e.sts.CreateGroupSnapshot(e.ctx, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteGroup(t, cleanupContext(t), e.r, name) })
	ready, err := e.r.WaitGroupSnapshotReady(e.ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := e.r.GroupSnapshotRecord(e.ctx, ready)
	if err != nil {
		t.Fatal(err)
	}
	return ready, rec
}

// restoreCmd is the restore subcommand of the rig's driver binary as the restorer identity.
func (e *restoreEnv) restoreCmd(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"restore", "-kubeconfig=" + e.kubeconfig, "-etcd-image=" + e.r.EtcdImage, "-driver-image=" + e.r.DriverImage, "-timeout=3m"}, args...)
	return exec.CommandContext(ctx, filepath.Join(e.r.DriverBinDir, rig.DriverBinary), full...)
}

// restore runs the command to its end and returns its exit code, stdout and stderr.
func (e *restoreEnv) restore(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := e.restoreCmd(e.ctx, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("run restore: %v", err)
	}
	t.Logf("restore %s: exit %d after %s\n--- stdout\n%s--- stderr\n%s", strings.Join(args, " "), code, time.Since(start).Round(time.Millisecond), stdout.String(), stderr.String())
	return code, stdout.String(), stderr.String()
}

var restoreIDLine = regexp.MustCompile(`restore ([0-9]{8}t[0-9]{6}-[0-9a-f]{4}):`)

func restoreIDOf(t *testing.T, out string) string {
	t.Helper()
	m := restoreIDLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no restore id in the output:\n%s", out)
	}
	return m[1]
}

// dump reads every key and value of the cluster.
func dump(t *testing.T, ctx context.Context, cli *clientv3.Client) (map[string]string, int64) {
	t.Helper()
	resp, err := cli.Get(ctx, "", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out, resp.Header.Revision
}

func writeKeys(t *testing.T, ctx context.Context, cli *clientv3.Client, prefix string, from, to int, value string) {
	t.Helper()
	for i := from; i < to; i++ {
		if _, err := cli.Put(ctx, fmt.Sprintf("%s%03d", prefix, i), fmt.Sprintf("%s-%d", value, i)); err != nil {
			t.Fatal(err)
		}
	}
}

func stsClient(t *testing.T, s *rig.EtcdStatefulSet) *clientv3.Client {
	t.Helper()
	cli, err := s.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// diffKV describes how two key sets differ, at most a few keys of each kind.
func diffKV(got, want map[string]string) string {
	var missing, extra, changed []string
	for k, v := range want {
		g, ok := got[k]
		switch {
		case !ok:
			missing = append(missing, k)
		case g != v:
			changed = append(changed, fmt.Sprintf("%s=%q (want %q)", k, g, v))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			extra = append(extra, k)
		}
	}
	if len(missing)+len(extra)+len(changed) == 0 {
		return ""
	}
	sort.Strings(missing)
	sort.Strings(extra)
	sort.Strings(changed)
	head := func(s []string) []string { return s[:min(len(s), 5)] }
	return fmt.Sprintf("%d missing %v, %d extra %v, %d changed %v", len(missing), head(missing), len(extra), head(extra), len(changed), head(changed))
}

// memberIdentity is each member's name and peer URLs, as MemberList reports them.
func memberIdentity(t *testing.T, ctx context.Context, cli *clientv3.Client) []string {
	t.Helper()
	resp, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range resp.Members {
		out = append(out, m.Name+"="+strings.Join(m.PeerURLs, ","))
	}
	sort.Strings(out)
	return out
}

// treeHash hashes every file's path, mode and content under dir.
func treeHash(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %v\n", rel, info.Mode())
		if d.Type().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(h, f); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// volumeEntries lists the names at the root of member i's volume.
func (e *restoreEnv) volumeEntries(t *testing.T, s *rig.EtcdStatefulSet, i int) (string, []string) {
	t.Helper()
	dir, err := s.HostVolumeDir(e.ctx, i)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, en := range ents {
		names = append(names, en.Name())
	}
	return dir, names
}

func restoreJobs(t *testing.T, ctx context.Context, r *rig.Rig, ns string) []string {
	t.Helper()
	jobs, err := r.Kube.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=etcd-snapshot-driver-restore"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, j := range jobs.Items {
		names = append(names, j.Name)
	}
	return names
}

// newRestoreTarget prepares a new 3-member StatefulSet (not started) in a new namespace, both named
// from the prefixes, removed at clean-up, and returns it with the restore flags that restore into it.
func newRestoreTarget(t *testing.T, ctx context.Context, r *rig.Rig, namespacePrefix, statefulSetPrefix string) (*rig.EtcdStatefulSet, []string) {
	t.Helper()
	target := uniqueName(namespacePrefix)
	name := uniqueName(statefulSetPrefix)
	dst, err := r.PrepareEtcdStatefulSet(ctx, name, target, rig.EtcdStatefulSetOptions{Members: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dst.Delete(cleanupContext(t)); err != nil {
			t.Errorf("clean-up: %v", err)
		}
	})
	var peers []string
	for i, u := range dst.PeerURLs() {
		peers = append(peers, dst.MemberName(i)+"="+u)
	}
	return dst, []string{"-target-namespace=" + target, "-statefulset=" + name,
		"-claim-template=" + rig.EtcdClaimTemplate, "-peer-urls=" + strings.Join(peers, ","), "-data-dir-in-volume=" + dst.DataDirInVolume(),
		fmt.Sprintf("-uid=%d", rig.EtcdUID), fmt.Sprintf("-gid=%d", rig.EtcdUID)}
}

// checkRestored asserts the cluster holds exactly want, at a bumped revision, compacted below it.
func checkRestored(t *testing.T, ctx context.Context, cli *clientv3.Client, want map[string]string, rec *driver.Record, watchFrom int64) {
	t.Helper()
	got, rev := dump(t, ctx, cli)
	if d := diffKV(got, want); d != "" {
		t.Errorf("restored keys differ from the snapshot's: %s", d)
	}
	if rev < rec.Revision+driver.DefaultBumpRevision {
		t.Errorf("revision after restore %d, want >= snapshot revision %d + %d", rev, rec.Revision, driver.DefaultBumpRevision)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	wresp, ok := <-cli.Watch(wctx, "", clientv3.WithFromKey(), clientv3.WithRev(watchFrom))
	if !ok || wresp.Err() == nil || !errors.Is(wresp.Err(), rpctypes.ErrCompacted) {
		t.Errorf("watch from pre-restore revision %d: %v (ok %v), want ErrCompacted", watchFrom, wresp.Err(), ok)
	}
}

func TestE2ERestoreInPlace(t *testing.T) {
	e := setupRestore(t, "rip")
	cli, want := e.seed(t, "/app/k", 60)
	identity := memberIdentity(t, e.ctx, cli)
	vgs, rec := e.snapshotGroup(t)

	// After the snapshot: overwrite 20 keys, delete 20, add 20.
	writeKeys(t, e.ctx, cli, "/app/k", 0, 20, "v2")
	for i := 20; i < 40; i++ {
		if _, err := cli.Delete(e.ctx, fmt.Sprintf("/app/k%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	writeKeys(t, e.ctx, cli, "/app/new", 0, 20, "later")
	_, before := dump(t, e.ctx, cli)
	cli.Close()

	code, stdout, stderr := e.restore(t, "-group-snapshot="+e.r.Namespace+"/"+vgs.Name, "-scale")
	if code != 0 {
		t.Fatalf("restore exited %d", code)
	}
	rid := restoreIDOf(t, stderr)
	for _, col := range []string{"MEMBER", "PVC", "REVISION", "KEYS", "OLD DATA KEPT AT", "TIME", "cluster: healthy"} {
		if !strings.Contains(stdout, col) {
			t.Errorf("the table lacks %q", col)
		}
	}

	cli = stsClient(t, e.sts)
	checkRestored(t, e.ctx, cli, want, rec, before)
	if got := memberIdentity(t, e.ctx, cli); strings.Join(got, " ") != strings.Join(identity, " ") {
		t.Errorf("members after restore %v, want the same names and peer URLs %v", got, identity)
	}
	for i := 0; i < 3; i++ {
		dir, names := e.volumeEntries(t, e.sts, i)
		kept := filepath.Join(dir, e.sts.DataDirInVolume()+".before-restore-"+rid)
		if _, err := os.Stat(filepath.Join(kept, "member", "snap", "db")); err != nil {
			t.Errorf("member %d: old data not kept at %s: %v (volume holds %v)", i, kept, err, names)
		}
		for _, n := range names {
			if strings.Contains(n, ".restore-") && !strings.HasSuffix(n, ".json") {
				t.Errorf("member %d: scratch dir %s left behind", i, n)
			}
		}
	}
	if jobs := restoreJobs(t, e.ctx, e.r, e.r.Namespace); len(jobs) != 0 {
		t.Errorf("restore Jobs left behind: %v", jobs)
	}
	evs, err := e.r.Kube.CoreV1().Events(e.r.Namespace).List(e.ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + vgs.Name + ",reason=Restored"})
	if err != nil || len(evs.Items) == 0 {
		t.Errorf("no Restored Event on VolumeGroupSnapshot %s (err %v)", vgs.Name, err)
	}
}

func TestE2ERestoreSingleSnapshot(t *testing.T) {
	e := setupRestore(t, "rss")
	cli, want := e.seed(t, "/single/k", 30)

	name := uniqueName("restore-single")
	if _, err := e.sts.CreateSnapshot(e.ctx, name, 1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deleteSingle(t, cleanupContext(t), e.r, name)
	})
	ready, err := waitSnapshotReady(e.ctx, e.r, name)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := e.r.SingleSnapshotRecord(e.ctx, ready)
	if err != nil {
		t.Fatal(err)
	}
	writeKeys(t, e.ctx, cli, "/single/k", 0, 30, "v2")
	_, before := dump(t, e.ctx, cli)
	cli.Close()

	if code, _, _ := e.restore(t, "-volume-snapshot="+name, "-scale"); code != 0 {
		t.Fatalf("restore exited %d", code)
	}
	checkRestored(t, e.ctx, stsClient(t, e.sts), want, rec, before)
}

func TestE2ERestoreRefusesMountedClaims(t *testing.T) {
	e := setupRestore(t, "rmc")
	vgs, _ := e.snapshotGroup(t)
	var before [3][]string
	for i := range before {
		_, before[i] = e.volumeEntries(t, e.sts, i)
	}
	code, _, stderr := e.restore(t, "-group-snapshot="+vgs.Name)
	if code != 1 {
		t.Fatalf("restore with running members exited %d, want 1", code)
	}
	for _, want := range []string{"pod " + e.sts.MemberName(0) + " (owned by StatefulSet " + e.sts.StatefulSetName(), "mounts PVC " + e.sts.ClaimName(0),
		"kubectl scale statefulset " + e.sts.StatefulSetName() + " -n " + e.r.Namespace + " --replicas=0", "nothing was changed"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the refusal lacks %q", want)
		}
	}
	if jobs := restoreJobs(t, e.ctx, e.r, e.r.Namespace); len(jobs) != 0 {
		t.Errorf("a refused restore created Jobs %v", jobs)
	}
	for i := range before {
		if _, after := e.volumeEntries(t, e.sts, i); strings.Join(after, ",") != strings.Join(before[i], ",") {
			t.Errorf("member %d volume changed from %v to %v", i, before[i], after)
		}
	}
}

func TestE2ERestoreCorruptSnapshot(t *testing.T) {
	e := setupRestore(t, "rcs")
	vgs, rec := e.snapshotGroup(t)
	file, err := e.r.SnapshotFilePath(e.ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.sts.ScaleAndWait(e.ctx, 0); err != nil {
		t.Fatal(err)
	}
	var before [3]string
	for i := range before {
		dir, _ := e.volumeEntries(t, e.sts, i)
		before[i] = treeHash(t, dir)
	}
	code, _, stderr := e.restore(t, "-group-snapshot="+vgs.Name)
	if code != 1 {
		t.Fatalf("restore of a damaged snapshot exited %d, want 1", code)
	}
	// A flipped byte breaks the file's own sha256 trailer, which verify checks before comparing the
	// whole file with the record (driver/verify_test.go covers a file replaced with a valid one).
	for _, want := range []string{"container \"verify\"", "sha256 mismatch", "no member data was changed"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the refusal lacks %q", want)
		}
	}
	for i := range before {
		dir, _ := e.volumeEntries(t, e.sts, i)
		if after := treeHash(t, dir); after != before[i] {
			t.Errorf("member %d: volume changed by a refused restore", i)
		}
	}
	if jobs := restoreJobs(t, e.ctx, e.r, e.r.Namespace); len(jobs) != 0 {
		t.Errorf("Jobs left behind: %v", jobs)
	}
	if err := e.sts.ScaleAndWait(e.ctx, 3); err != nil {
		t.Fatal(err)
	}
}

func TestE2ERestoreInterrupted(t *testing.T) {
	e := setupRestore(t, "rint")
	cli, want := e.seed(t, "/int/k", 40)
	vgs, rec := e.snapshotGroup(t)
	writeKeys(t, e.ctx, cli, "/int/k", 0, 40, "v2")
	_, before := dump(t, e.ctx, cli)
	cli.Close()

	// First run: killed as soon as one member reports its swap.
	cmd := e.restoreCmd(e.ctx, "-group-snapshot="+vgs.Name, "-scale")
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var first strings.Builder
	sc := bufio.NewScanner(pipe)
	killed := false
	for sc.Scan() {
		line := sc.Text()
		first.WriteString(line + "\n")
		if strings.Contains(line, ": swapped into ") {
			_ = cmd.Process.Kill()
			killed = true
			break
		}
	}
	_ = cmd.Wait()
	t.Logf("first run, killed=%v:\n%s", killed, first.String())
	if !killed {
		t.Fatal("the first run ended before any member swapped")
	}
	rid := restoreIDOf(t, first.String())

	code, _, stderr := e.restore(t, "-group-snapshot="+vgs.Name, "-scale")
	if code != 0 {
		t.Fatalf("rerun exited %d", code)
	}
	if got := restoreIDOf(t, stderr); got != rid || !strings.Contains(stderr, "resuming the interrupted restore") {
		t.Errorf("rerun used restore %s (resumed: %v), want to finish %s", got, strings.Contains(stderr, "resuming"), rid)
	}
	checkRestored(t, e.ctx, stsClient(t, e.sts), want, rec, before)
	for i := 0; i < 3; i++ {
		_, names := e.volumeEntries(t, e.sts, i)
		kept := 0
		for _, n := range names {
			if strings.Contains(n, ".before-restore-") {
				kept++
			}
		}
		if kept != 1 {
			t.Errorf("member %d: %d kept copies of the old data (%v), want exactly 1", i, kept, names)
		}
	}
}

func TestE2ERestoreNewCluster(t *testing.T) {
	e := setupRestore(t, "rnc")
	cli, want := e.seed(t, "/copy/k", 50)
	vgs, rec := e.snapshotGroup(t)
	writeKeys(t, e.ctx, cli, "/copy/after", 0, 10, "source-only")
	sourceKeys, _ := dump(t, e.ctx, cli)
	var sourceVolumes [3][]string
	for i := range sourceVolumes {
		_, sourceVolumes[i] = e.volumeEntries(t, e.sts, i)
	}

	dst, targetArgs := newRestoreTarget(t, e.ctx, e.r, "restored", "copy")
	code, stdout, _ := e.restore(t, append([]string{"-group-snapshot=" + e.r.Namespace + "/" + vgs.Name}, targetArgs...)...)
	if code != 0 {
		t.Fatalf("restore into a new cluster exited %d", code)
	}
	for i := 0; i < 3; i++ {
		if !strings.Contains(stdout, dst.ClaimName(i)) {
			t.Errorf("the table lacks PVC %s", dst.ClaimName(i))
		}
	}
	if err := dst.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	dcli := stsClient(t, dst)
	got, rev := dump(t, e.ctx, dcli)
	// Start proves the new cluster answers by writing readyKey; every other key is the snapshot's.
	delete(got, readyKey)
	delete(want, readyKey)
	if d := diffKV(got, want); d != "" {
		t.Errorf("new cluster's keys differ from the snapshot's: %s", d)
	}
	if rev < rec.Revision+driver.DefaultBumpRevision {
		t.Errorf("new cluster at revision %d, want >= %d + %d", rev, rec.Revision, driver.DefaultBumpRevision)
	}
	// The source cluster is untouched: its later keys are there and no restore touched its volumes.
	if now, _ := dump(t, e.ctx, cli); diffKV(now, sourceKeys) != "" {
		t.Errorf("the source cluster's keys changed: %s", diffKV(now, sourceKeys))
	}
	for i := range sourceVolumes {
		if _, after := e.volumeEntries(t, e.sts, i); strings.Join(after, ",") != strings.Join(sourceVolumes[i], ",") {
			t.Errorf("source member %d volume changed from %v to %v", i, sourceVolumes[i], after)
		}
	}
	if pvs, err := e.r.Kube.CoreV1().PersistentVolumes().List(e.ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=etcd-snapshot-driver-restore"}); err != nil || len(pvs.Items) != 0 {
		t.Errorf("snapshot view PVs left behind: %v (err %v)", len(pvs.Items), err)
	}
}
