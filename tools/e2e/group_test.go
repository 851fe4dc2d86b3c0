package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	snapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumesnapshot/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// TestE2EDynamicGroup takes a dynamic VolumeGroupSnapshot of the cluster under test through the
// upstream controllers and checks the result down to the keys in the snapshot file.
func TestE2EDynamicGroup(t *testing.T) {
	r, ctx := setup(t)
	const n = 250
	prefix := "/e2e/" + uniqueName("dynamic") + "/"
	written, err := r.WriteSampleData(ctx, prefix, n)
	if err != nil {
		t.Fatal(err)
	}

	vgs, rec := readyGroup(t, ctx, r, uniqueName("e2e-dynamic"))
	if vgs.Status.Error != nil {
		t.Errorf("ready VolumeGroupSnapshot still carries status.error %q", ptr.Deref(vgs.Status.Error.Message, ""))
	}
	if vgs.Status.CreationTime == nil {
		t.Errorf("ready VolumeGroupSnapshot has no status.creationTime")
	}

	// The record: a Ready group over every PVC of the cluster, saved after the keys were written.
	pvcs, err := clusterPVCs(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(pvcs) != 3 {
		t.Fatalf("cluster under test has PVCs %v, want 3", pvcs)
	}
	if rec.Phase != driver.PhaseReady || !rec.Group || rec.Error != "" {
		t.Fatalf("record %s: phase %s, group %v, error %q; want a Ready group without error", rec.ID, rec.Phase, rec.Group, rec.Error)
	}
	if rec.Namespace != r.Namespace || rec.Cluster != rig.EtcdClusterName {
		t.Errorf("record %s is of cluster %s/%s, want %s/%s", rec.ID, rec.Namespace, rec.Cluster, r.Namespace, rig.EtcdClusterName)
	}
	var recPVCs []string
	memberIDs := map[string]driver.SourceRecord{}
	for _, s := range rec.Sources {
		recPVCs = append(recPVCs, s.PVC)
		memberIDs[s.SnapshotID] = s
	}
	// The API lists each PVC once: as many sources as PVCs, and the same names, is one source each.
	if len(recPVCs) != len(pvcs) || !sets.New(recPVCs...).Equal(sets.New(pvcs...)) || len(memberIDs) != len(pvcs) {
		t.Errorf("record %s covers PVCs %v with %d distinct member ids, want %v", rec.ID, recPVCs, len(memberIDs), pvcs)
	}
	if rec.Revision < written {
		t.Errorf("record %s has revision %d, before the last sample write at revision %d", rec.ID, rec.Revision, written)
	}

	// The content upstream bound: one snapshot per volume, with our member ids.
	content, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(ctx, *vgs.Status.BoundVolumeGroupSnapshotContentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := ptr.Deref(content.Status.VolumeGroupSnapshotHandle, ""); got != rec.ID {
		t.Errorf("content %s has group handle %q, want %q", content.Name, got, rec.ID)
	}
	if len(content.Status.VolumeSnapshotInfoList) != len(pvcs) {
		t.Errorf("content %s lists %d volume snapshots, want %d", content.Name, len(content.Status.VolumeSnapshotInfoList), len(pvcs))
	}
	for _, info := range content.Status.VolumeSnapshotInfoList {
		src, ok := memberIDs[info.SnapshotHandle]
		if !ok || src.VolumeID != info.VolumeHandle {
			t.Errorf("content %s lists volume %q -> snapshot %q, which the record does not have (%v)", content.Name, info.VolumeHandle, info.SnapshotHandle, rec.Sources)
		}
	}

	// One member VolumeSnapshot per PVC, each bound to a content holding one member id.
	members := waitMembers(t, ctx, r, vgs, len(pvcs))
	seen := map[string]bool{}
	for _, vs := range members {
		vsc, err := r.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, *vs.Status.BoundVolumeSnapshotContentName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		handle := ptr.Deref(vsc.Status.SnapshotHandle, "")
		src, ok := memberIDs[handle]
		if !ok || seen[handle] {
			t.Errorf("member VolumeSnapshot %s: content %s has snapshot handle %q: unknown or repeated (record %v)", vs.Name, vsc.Name, handle, rec.Sources)
			continue
		}
		seen[handle] = true
		if got := ptr.Deref(vsc.Spec.Source.VolumeHandle, ""); got != src.VolumeID {
			t.Errorf("member VolumeSnapshot %s: content %s is of volume %q, the record says %q", vs.Name, vsc.Name, got, src.VolumeID)
		}
	}

	// The file in the snapshot PVC: verified, the same as the record, and holding every key written.
	file, res := verifiedFile(t, ctx, r, rec)
	if !res.HashChecked || res.SHA256 != rec.SHA256 || res.Revision != rec.Revision || res.Keys != rec.Keys {
		t.Errorf("snapshot file %s: sha256 %s (checked %v), revision %d, keys %d; record: sha256 %s, revision %d, keys %d",
			file, res.SHA256, res.HashChecked, res.Revision, res.Keys, rec.SHA256, rec.Revision, rec.Keys)
	}
	if res.Revision < written || res.Keys < n {
		t.Errorf("snapshot file %s: revision %d with %d keys; the test wrote %d keys up to revision %d", file, res.Revision, res.Keys, n, written)
	}
	kvs, restoredRev := restoredKeys(t, ctx, r, file, prefix)
	if restoredRev != res.Revision {
		t.Errorf("restored snapshot is at revision %d, the file says %d", restoredRev, res.Revision)
	}
	missing := 0
	for i := range n {
		k, v := rig.SampleKV(prefix, i)
		if got, ok := kvs[k]; !ok || got != v {
			if missing++; missing <= 5 {
				t.Errorf("restored snapshot: key %s = %q (present %v), want %q", k, got, ok, v)
			}
		}
	}
	if missing > 0 || len(kvs) != n {
		t.Errorf("restored snapshot: %d of %d written keys missing or wrong; %d keys under %s", missing, n, len(kvs), prefix)
	}
}

// waitMembers waits up to memberReadyTimeout until the group has want member VolumeSnapshots, each
// readyToUse and bound to a content that carries a snapshot handle, and returns them.
//
// Without the driver's re-check (driver/dynamicgrouprecheck.go) members would stay readyToUse=false for up
// to the csi-snapshotter's 15-minute resync: snapshot-controller v8.7.0 rewrites their status from
// the group content's first, not-ready volumeSnapshotInfoList until the group is ready, and the
// sidecar ignores status-only changes. The bound catches that regression well before the resync.
func waitMembers(t *testing.T, ctx context.Context, r *rig.Rig, vgs *groupsnapshotv1.VolumeGroupSnapshot, want int) []snapshotv1.VolumeSnapshot {
	t.Helper()
	start := time.Now()
	var members []snapshotv1.VolumeSnapshot
	var lastErr error
	rechecked := 0
	waitCtx, cancel := context.WithTimeout(ctx, memberReadyTimeout)
	defer cancel()
	err := wait.PollUntilContextCancel(waitCtx, pollInterval, true, func(ctx context.Context) (bool, error) {
		members, lastErr = memberSnapshots(ctx, r, vgs)
		if lastErr != nil || len(members) != want || countReady(members) != want {
			return false, nil
		}
		rechecked = 0
		for _, vs := range members {
			if ptr.Deref(vs.Status.BoundVolumeSnapshotContentName, "") == "" {
				return false, nil
			}
			c, err := r.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, *vs.Status.BoundVolumeSnapshotContentName, metav1.GetOptions{})
			if err != nil || c.Status == nil || ptr.Deref(c.Status.SnapshotHandle, "") == "" {
				return false, nil
			}
			if _, ok := c.Annotations[memberCheckAnnotation]; ok {
				rechecked++
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("member VolumeSnapshots of %s: want %d, each readyToUse and bound to a content with a snapshot handle; have %d, %d ready, after %v (list error %v): %v\n%s",
			vgs.Name, want, len(members), countReady(members), time.Since(start).Round(time.Second), lastErr, err, memberContentStates(r, vgs, members))
	}
	t.Logf("all %d member VolumeSnapshots readyToUse %v after the group; the driver asked for a re-check of %d",
		want, time.Since(start).Round(100*time.Millisecond), rechecked)
	for _, vs := range members {
		if src := ptr.Deref(vs.Spec.Source.PersistentVolumeClaimName, ""); src != "" {
			// Upstream finds no PV of our driver for a member volume and leaves the claim name empty;
			// a name here means upstream changed and the member mapping deserves a new look.
			t.Logf("member VolumeSnapshot %s names PVC %q", vs.Name, src)
		}
	}
	return members
}

const (
	// memberReadyTimeout bounds the wait for member readiness after the group is ready.
	memberReadyTimeout = 2 * time.Minute
	// memberCheckAnnotation is the annotation driver/dynamicgrouprecheck.go puts on a member content it
	// asks the csi-snapshotter to re-check.
	memberCheckAnnotation = "snapshot.etcd.io/readiness-check"
)

// memberContentStates describes the member contents and the group content's volumeSnapshotInfoList,
// for a failure message.
func memberContentStates(r *rig.Rig, vgs *groupsnapshotv1.VolumeGroupSnapshot, members []snapshotv1.VolumeSnapshot) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b strings.Builder
	for _, vs := range members {
		name := ""
		if vs.Status != nil {
			name = ptr.Deref(vs.Status.BoundVolumeSnapshotContentName, "")
		}
		if name == "" {
			fmt.Fprintf(&b, "  %s: no content bound\n", vs.Name)
			continue
		}
		c, err := r.Snap.SnapshotV1().VolumeSnapshotContents().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			fmt.Fprintf(&b, "  %s: content %s: %v\n", vs.Name, name, err)
			continue
		}
		st, _ := json.Marshal(c.Status)
		fmt.Fprintf(&b, "  %s: content %s status %s annotations %v\n", vs.Name, name, st, c.Annotations)
	}
	if vgs.Status != nil && vgs.Status.BoundVolumeGroupSnapshotContentName != nil {
		if gc, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(ctx, *vgs.Status.BoundVolumeGroupSnapshotContentName, metav1.GetOptions{}); err == nil {
			st, _ := json.Marshal(gc.Status)
			fmt.Fprintf(&b, "  group content %s status %s\n", gc.Name, st)
		}
	}
	return b.String()
}

func countReady(vss []snapshotv1.VolumeSnapshot) int {
	n := 0
	for _, vs := range vss {
		if vs.Status != nil && ptr.Deref(vs.Status.ReadyToUse, false) {
			n++
		}
	}
	return n
}

func boolString(b *bool) string {
	if b == nil {
		return "unset"
	}
	if *b {
		return "true"
	}
	return "false"
}

// TestE2EStaticImport imports an existing group snapshot by its handles: a VolumeGroupSnapshotContent
// with groupSnapshotHandles (deletionPolicy Retain) and a VolumeGroupSnapshot naming it bind and turn
// ready through the sidecar's GetVolumeGroupSnapshot.
func TestE2EStaticImport(t *testing.T) {
	r, ctx := setup(t)
	_, rec := readyGroup(t, ctx, r, uniqueName("e2e-import-src"))
	class, err := r.GroupSnapshotClassName()
	if err != nil {
		t.Fatal(err)
	}
	var memberIDs []string
	for _, s := range rec.Sources {
		memberIDs = append(memberIDs, s.SnapshotID)
	}

	vgsName := uniqueName("e2e-import")
	contentName := uniqueName("e2e-import-content")
	content := &groupsnapshotv1.VolumeGroupSnapshotContent{
		ObjectMeta: metav1.ObjectMeta{Name: contentName},
		Spec: groupsnapshotv1.VolumeGroupSnapshotContentSpec{
			VolumeGroupSnapshotRef:       corev1.ObjectReference{Name: vgsName, Namespace: r.Namespace},
			DeletionPolicy:               snapshotv1.VolumeSnapshotContentRetain,
			Driver:                       r.DriverName,
			VolumeGroupSnapshotClassName: ptr.To(class),
			Source: groupsnapshotv1.VolumeGroupSnapshotContentSource{
				GroupSnapshotHandles: &groupsnapshotv1.GroupSnapshotHandles{
					VolumeGroupSnapshotHandle: rec.ID,
					VolumeSnapshotHandles:     memberIDs,
				},
			},
		},
	}
	// Clean-up order (last registered runs first): the imported VolumeGroupSnapshot, then the retained
	// contents it leaves (its own and its members'), then (registered by readyGroup) the original
	// group, whose deletion removes the snapshot for real.
	t.Cleanup(func() {
		ctx := cleanupContext(t)
		deleteRetainedContent(t, ctx, r, contentName)
		for _, name := range retainedMemberContents(t, ctx, r, rec.ID) {
			deleteRetainedContent(t, ctx, r, name)
		}
	})
	getsBefore := getGroupCalls(t, ctx, r)
	if _, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Create(ctx, content, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	vgs := &groupsnapshotv1.VolumeGroupSnapshot{
		ObjectMeta: metav1.ObjectMeta{Name: vgsName, Namespace: r.Namespace},
		Spec: groupsnapshotv1.VolumeGroupSnapshotSpec{
			VolumeGroupSnapshotClassName: ptr.To(class),
			Source:                       groupsnapshotv1.VolumeGroupSnapshotSource{VolumeGroupSnapshotContentName: ptr.To(contentName)},
		},
	}
	t.Cleanup(func() {
		ctx := cleanupContext(t)
		if err := r.DeleteGroupSnapshot(ctx, vgsName); err != nil {
			t.Errorf("clean-up: %v", err)
		}
	})
	if _, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshots(r.Namespace).Create(ctx, vgs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	ready, err := r.WaitGroupSnapshotReady(ctx, vgsName)
	if err != nil {
		t.Fatal(err)
	}
	if got := ptr.Deref(ready.Status.BoundVolumeGroupSnapshotContentName, ""); got != contentName {
		t.Fatalf("imported VolumeGroupSnapshot is bound to %q, want %q", got, contentName)
	}
	if ready.Status.Error != nil {
		t.Errorf("imported VolumeGroupSnapshot is ready but carries status.error %q", ptr.Deref(ready.Status.Error.Message, ""))
	}
	imported, err := r.GroupSnapshotRecord(ctx, ready)
	if err != nil {
		t.Fatal(err)
	}
	if imported.ID != rec.ID || imported.Phase != driver.PhaseReady {
		t.Errorf("imported group resolves to record %s (%s), want %s (Ready)", imported.ID, imported.Phase, rec.ID)
	}
	got, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(ctx, contentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := ptr.Deref(got.Status.VolumeGroupSnapshotHandle, ""); h != rec.ID || !ptr.Deref(got.Status.ReadyToUse, false) {
		t.Errorf("imported content status: group handle %q, readyToUse %s; want %s, true", h, boolString(got.Status.ReadyToUse), rec.ID)
	}
	// csi-snapshotter v8.7.0 records no volumeSnapshotInfoList for imported groups (it passes an
	// empty list: pkg/sidecar-controller/groupsnapshot_helper.go, "TODO: Get a reference to snapshot
	// contents"), so there are no member VolumeSnapshots to check here.
	if after := getGroupCalls(t, ctx, r); after <= getsBefore {
		t.Errorf("GetVolumeGroupSnapshot answered OK %v times before the import and %v after; the sidecar should have asked", getsBefore, after)
	}
	// The original snapshot is untouched by the import.
	again, err := r.SnapshotRecord(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if again.Phase != driver.PhaseReady || again.SHA256 != rec.SHA256 {
		t.Errorf("original record %s changed after the import: phase %s sha256 %s", rec.ID, again.Phase, again.SHA256)
	}
}

// groupHandleAnnotation is upstream's annotation naming the group of a member VolumeSnapshotContent
// (pkg/utils/util.go VolumeGroupSnapshotHandleAnnotation).
const groupHandleAnnotation = "groupsnapshot.storage.k8s.io/volumeGroupSnapshotHandle"

// retainedMemberContents returns the VolumeSnapshotContents with deletionPolicy Retain that upstream
// made for members of group id: those of an imported group, which its deletion leaves behind.
func retainedMemberContents(t *testing.T, ctx context.Context, r *rig.Rig, id string) []string {
	t.Helper()
	list, err := r.Snap.SnapshotV1().VolumeSnapshotContents().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Errorf("clean-up: %v", err)
		return nil
	}
	var out []string
	for _, c := range list.Items {
		if c.Annotations[groupHandleAnnotation] == id && c.Spec.DeletionPolicy == snapshotv1.VolumeSnapshotContentRetain {
			out = append(out, c.Name)
		}
	}
	return out
}

// deleteRetainedContent deletes a group or single snapshot content left by a Retain policy and waits
// until it is gone; a missing one is fine.
func deleteRetainedContent(t *testing.T, ctx context.Context, r *rig.Rig, name string) {
	t.Helper()
	gc := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotContents()
	if err := gc.Delete(ctx, name, metav1.DeleteOptions{}); err == nil {
		waitGroupContentGone(t, ctx, r, name)
		return
	} else if !apierrors.IsNotFound(err) {
		t.Errorf("clean-up: delete VolumeGroupSnapshotContent %s: %v", name, err)
		return
	}
	sc := r.Snap.SnapshotV1().VolumeSnapshotContents()
	if err := sc.Delete(ctx, name, metav1.DeleteOptions{}); apierrors.IsNotFound(err) {
		return
	} else if err != nil {
		t.Errorf("clean-up: delete VolumeSnapshotContent %s: %v", name, err)
		return
	}
	err := rig.WaitGone(ctx, "VolumeSnapshotContent "+name, name,
		func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return sc.List(ctx, o) },
		func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) { return sc.Watch(ctx, o) },
		&snapshotv1.VolumeSnapshotContent{})
	if err != nil {
		t.Errorf("clean-up: %v", err)
	}
}

// TestE2EDelete deletes one of two group snapshots: everything the driver made for it goes, the other
// group keeps every object, unchanged.
func TestE2EDelete(t *testing.T) {
	r, ctx := setup(t)
	doomedName, keptName := uniqueName("e2e-delete"), uniqueName("e2e-keep")
	createGroup(t, ctx, r, doomedName)
	createGroup(t, ctx, r, keptName)
	recs := map[string]*driver.Record{}
	for _, name := range []string{doomedName, keptName} {
		vgs, err := r.WaitGroupSnapshotReady(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if recs[name], err = r.GroupSnapshotRecord(ctx, vgs); err != nil {
			t.Fatal(err)
		}
	}
	doomed, kept := recs[doomedName], recs[keptName]
	if doomed.ID == kept.ID {
		t.Fatalf("two VolumeGroupSnapshots share snapshot id %s", doomed.ID)
	}

	before := map[string]map[string]string{}
	for _, rec := range []*driver.Record{doomed, kept} {
		objs, err := snapshotObjects(ctx, r, rec.ID)
		if err != nil {
			t.Fatal(err)
		}
		before[rec.ID] = map[string]string{}
		for k, uid := range objs {
			before[rec.ID][k] = string(uid)
		}
		for _, want := range []string{"Job " + rec.ID, "PersistentVolumeClaim " + rec.ID, "ConfigMap " + rec.ID} {
			if _, ok := objs[want]; !ok {
				t.Fatalf("ready snapshot %s has no %s (has %s)", rec.ID, want, describe(objs))
			}
		}
	}

	if err := r.DeleteGroupSnapshot(ctx, doomedName); err != nil {
		t.Fatal(err)
	}
	if err := waitSnapshotObjectsGone(ctx, r, doomed.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Kube.CoreV1().Secrets(r.Namespace).Get(ctx, doomed.ID+"-tls", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Secret %s-tls of the deleted snapshot: %v, want NotFound", doomed.ID, err)
	}

	objs, err := snapshotObjects(ctx, r, kept.ID)
	if err != nil {
		t.Fatal(err)
	}
	after := map[string]string{}
	for k, uid := range objs {
		after[k] = string(uid)
	}
	// The driver removes a ready snapshot's credentials Secret on its own, possibly after the first
	// look: a Secret may vanish, but nothing else may, and nothing may appear or be replaced.
	for k, uid := range before[kept.ID] {
		if strings.HasPrefix(k, "Secret ") {
			if got, ok := after[k]; ok && got != uid {
				t.Errorf("other group %s: %s replaced (UID %s -> %s)", kept.ID, k, uid, got)
			}
			continue
		}
		if after[k] != uid {
			t.Errorf("other group %s: %s had UID %s, now %q", kept.ID, k, uid, after[k])
		}
	}
	for k := range after {
		if _, ok := before[kept.ID][k]; !ok {
			t.Errorf("other group %s: %s appeared", kept.ID, k)
		}
	}
	rec, err := r.SnapshotRecord(ctx, kept.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Phase != driver.PhaseReady || rec.SHA256 != kept.SHA256 {
		t.Errorf("record of the other group %s: phase %s sha256 %s, want Ready %s", kept.ID, rec.Phase, rec.SHA256, kept.SHA256)
	}
	vgs, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshots(r.Namespace).Get(ctx, keptName, metav1.GetOptions{})
	if err != nil || vgs.Status == nil || !ptr.Deref(vgs.Status.ReadyToUse, false) {
		t.Errorf("the other VolumeGroupSnapshot %s is no longer ready: %v", keptName, err)
	}
}

// getGroupCalls is the driver's count of GetVolumeGroupSnapshot calls answered OK.
func getGroupCalls(t *testing.T, ctx context.Context, r *rig.Rig) float64 {
	t.Helper()
	samples, err := scrape(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, s := range find(samples, "etcd_snapshot_driver_rpc_total", map[string]string{"method": "GetVolumeGroupSnapshot", "code": "OK"}) {
		total += s.value
	}
	return total
}
