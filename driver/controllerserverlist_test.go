package driver

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// listRecord builds the metadata of a snapshot named name over volumes, in phase.
func listRecord(name string, group bool, phase Phase, volumes ...string) *Record {
	id := snapshotID(name, group)
	r := &Record{ID: id, Name: name, Group: group, Phase: phase, Namespace: fxNS, Cluster: fxCluster,
		CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	for _, v := range volumes {
		sid := id
		if group {
			sid = memberSnapshotID(id, v)
		}
		r.Sources = append(r.Sources, SourceRecord{VolumeID: v, PVC: v[strings.LastIndex(v, "/")+1:], SnapshotID: sid})
	}
	switch phase {
	case PhaseReady:
		r.SizeBytes = 4096
	case PhaseFailed:
		r.Error, r.ErrorCode = "etcd cluster etcd-test/main has no quorum", codes.FailedPrecondition.String()
		r.CleanedUp = true
	}
	return r
}

// listWorld stores records as the engine would and returns them for the fake clientset, with the
// unfinished Job of each Running record (the engine fails a Running record whose Job is gone).
func listWorld(t *testing.T, records ...*Record) []runtime.Object {
	t.Helper()
	var objs []runtime.Object
	for _, r := range records {
		cm, err := encodeRecord(fxMetaNS, r)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, cm)
		if r.Phase == PhaseRunning {
			objs = append(objs, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: r.ID, Namespace: r.Namespace, Labels: objectLabels(r.ID, r.Cluster)}})
		}
	}
	return objs
}

// verifyingPod is the pod of rec's Job once `etcdctl snapshot save` exited 0 and verify still runs:
// the snapshot is cut but not verified yet.
func verifyingPod(rec *Record, name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: rec.Namespace, Labels: objectLabels(rec.ID, rec.Cluster)},
		Status:     savedStatus(),
	}
}

// savedStatus is a pod status whose save container succeeded and whose verify container runs.
func savedStatus() corev1.PodStatus {
	return corev1.PodStatus{
		Phase: corev1.PodRunning,
		InitContainerStatuses: []corev1.ContainerStatus{{Name: saveContainer,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: verifyContainer,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}},
	}
}

// savingPod is the pod of rec's Job while save runs, or after it failed (exit code 1) and a retry is due.
func savingPod(rec *Record, name string, failed bool) *corev1.Pod {
	st := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	phase := corev1.PodPending
	if failed {
		st = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Message: "connection refused"}}
		phase = corev1.PodFailed
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: rec.Namespace, Labels: objectLabels(rec.ID, rec.Cluster)},
		Status: corev1.PodStatus{Phase: phase, InitContainerStatuses: []corev1.ContainerStatus{{Name: saveContainer, State: st}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: verifyContainer, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}}},
	}
}

// listIDs lists the snapshot ids of a ListSnapshots answer, in order.
func listIDs(resp *csi.ListSnapshotsResponse) []string {
	var ids []string
	for _, e := range resp.GetEntries() {
		ids = append(ids, e.GetSnapshot().GetSnapshotId())
	}
	return ids
}

// TestListSnapshots checks the answers ListSnapshots gives from stored records: member and single
// snapshots by id in every phase, the filters, the CSI rules for unknown ids and for snapshots not cut
// yet (CSI spec: ListSnapshots SHALL NOT list them), and paging.
func TestListSnapshots(t *testing.T) {
	v0, v1, v2 := fxNS+"/data-main-0", fxNS+"/data-main-1", pvHandle(fxNS, fxCluster, 2)
	ready := listRecord("g-ready", true, PhaseReady, v0, v1)
	running := listRecord("g-running", true, PhaseRunning, v0, v1, v2)
	saved := listRecord("g-saved", true, PhaseRunning, v0, v2)
	retrying := listRecord("g-retrying", true, PhaseRunning, v1)
	failed := listRecord("g-failed", true, PhaseFailed, v0)
	single := listRecord("s-ready", false, PhaseReady, v1)
	singleRunning := listRecord("s-running", false, PhasePending, v2)
	world := listWorld(t, ready, running, saved, retrying, failed, single, singleRunning)
	// g-running's pod is still saving; g-saved's save exited 0 in a second pod after a first failed;
	// g-retrying's only save failed and its retry has not started.
	world = append(world, savingPod(running, running.ID+"-a", false),
		savingPod(saved, saved.ID+"-a", true), verifyingPod(saved, saved.ID+"-b"), savingPod(retrying, retrying.ID+"-a", true))
	e := startCSI(t, world)
	ctx := context.Background()

	created := timestamppb.New(ready.CreatedAt)
	readyMember := &csi.Snapshot{SnapshotId: ready.Sources[1].SnapshotID, SourceVolumeId: v1, CreationTime: created,
		SizeBytes: 4096, ReadyToUse: true, GroupSnapshotId: ready.ID}
	runningMember := running.Sources[2].SnapshotID
	savedMember := &csi.Snapshot{SnapshotId: saved.Sources[1].SnapshotID, SourceVolumeId: v2, CreationTime: created,
		GroupSnapshotId: saved.ID}
	readySingle := &csi.Snapshot{SnapshotId: single.ID, SourceVolumeId: v1, CreationTime: created, SizeBytes: 4096, ReadyToUse: true}
	// Every cut snapshot (ready, or saved and being verified), ordered by id.
	allCut := sortedCopy([]string{ready.Sources[0].SnapshotID, ready.Sources[1].SnapshotID, single.ID,
		saved.Sources[0].SnapshotID, saved.Sources[1].SnapshotID})
	verifying := map[string]bool{saved.Sources[0].SnapshotID: true, saved.Sources[1].SnapshotID: true}

	cases := []struct {
		name string
		req  *csi.ListSnapshotsRequest
		want []*csi.Snapshot // exact entries, when set
		ids  []string        // entry ids in order, when want is nil
		next string
		code codes.Code
		msg  []string
	}{
		{name: "member of a ready group", req: &csi.ListSnapshotsRequest{SnapshotId: readyMember.SnapshotId}, want: []*csi.Snapshot{readyMember}},
		{name: "member of a group still saving is not cut yet", req: &csi.ListSnapshotsRequest{SnapshotId: runningMember},
			code: codes.Aborted, msg: []string{runningMember, "not cut yet", "snapshot save", "retry"}},
		{name: "member of a group whose save failed once is not cut yet", req: &csi.ListSnapshotsRequest{SnapshotId: retrying.Sources[0].SnapshotID},
			code: codes.Aborted, msg: []string{retrying.Sources[0].SnapshotID, "not cut yet"}},
		{name: "member of a saved group being verified is not ready", req: &csi.ListSnapshotsRequest{SnapshotId: savedMember.SnapshotId}, want: []*csi.Snapshot{savedMember}},
		{name: "member of a failed group is its final error", req: &csi.ListSnapshotsRequest{SnapshotId: failed.Sources[0].SnapshotID},
			code: codes.FailedPrecondition, msg: []string{failed.ID, "no quorum"}},
		{name: "single snapshot", req: &csi.ListSnapshotsRequest{SnapshotId: single.ID}, want: []*csi.Snapshot{readySingle}},
		{name: "pending single snapshot is not cut yet", req: &csi.ListSnapshotsRequest{SnapshotId: singleRunning.ID},
			code: codes.Aborted, msg: []string{singleRunning.ID, "not cut yet"}},
		{name: "not cut yet and other source", req: &csi.ListSnapshotsRequest{SnapshotId: runningMember, SourceVolumeId: v0}},
		{name: "id and matching source", req: &csi.ListSnapshotsRequest{SnapshotId: readyMember.SnapshotId, SourceVolumeId: v1}, want: []*csi.Snapshot{readyMember}},
		{name: "id and other source", req: &csi.ListSnapshotsRequest{SnapshotId: readyMember.SnapshotId, SourceVolumeId: v0}},
		{name: "group id is not a snapshot id", req: &csi.ListSnapshotsRequest{SnapshotId: ready.ID}},
		{name: "member id not in its group", req: &csi.ListSnapshotsRequest{SnapshotId: memberSnapshotID(ready.ID, v2)}},
		{name: "member of an unknown group", req: &csi.ListSnapshotsRequest{SnapshotId: memberSnapshotID(snapshotID("nope", true), v0)}},
		{name: "unknown single id", req: &csi.ListSnapshotsRequest{SnapshotId: snapshotID("nope", false)}},
		{name: "not an id of this driver", req: &csi.ListSnapshotsRequest{SnapshotId: "none-exist-id"}},
		{name: "everything lists cut snapshots only", req: &csi.ListSnapshotsRequest{}, ids: allCut},
		{name: "by source volume", req: &csi.ListSnapshotsRequest{SourceVolumeId: v1}, ids: sortedCopy([]string{readyMember.SnapshotId, single.ID})},
		{name: "by a source with only unfinished snapshots", req: &csi.ListSnapshotsRequest{SourceVolumeId: fxNS + "/data-other"}},
		{name: "by a source with a saved snapshot", req: &csi.ListSnapshotsRequest{SourceVolumeId: v2}, want: []*csi.Snapshot{savedMember}},
		{name: "by unknown source", req: &csi.ListSnapshotsRequest{SourceVolumeId: "fake-vol-id"}},
		{name: "first page", req: &csi.ListSnapshotsRequest{MaxEntries: 2}, ids: allCut[:2], next: allCut[1]},
		{name: "next page", req: &csi.ListSnapshotsRequest{StartingToken: allCut[1]}, ids: allCut[2:]},
		{name: "page that fits exactly has no token", req: &csi.ListSnapshotsRequest{MaxEntries: int32(len(allCut))}, ids: allCut},
		{name: "token after the last entry", req: &csi.ListSnapshotsRequest{StartingToken: allCut[len(allCut)-1]}},
		{name: "token of a snapshot that is gone", req: &csi.ListSnapshotsRequest{StartingToken: memberSnapshotID(ready.ID, v2), MaxEntries: 1},
			ids: firstAfter(allCut, memberSnapshotID(ready.ID, v2)), next: nextTokenAfter(allCut, memberSnapshotID(ready.ID, v2))},
		{name: "id with a token past it", req: &csi.ListSnapshotsRequest{SnapshotId: single.ID, StartingToken: single.ID}},
		{name: "negative max_entries", req: &csi.ListSnapshotsRequest{MaxEntries: -1}, code: codes.InvalidArgument, msg: []string{"max_entries", "-1"}},
		{name: "foreign starting_token", req: &csi.ListSnapshotsRequest{StartingToken: "page-2"}, code: codes.Aborted, msg: []string{"starting_token", "page-2"}},
		{name: "group id as starting_token", req: &csi.ListSnapshotsRequest{StartingToken: ready.ID}, code: codes.Aborted, msg: []string{ready.ID}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.ctrl.ListSnapshots(ctx, tc.req)
			if tc.code != codes.OK {
				wantCode(t, err, tc.code, tc.msg...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetNextToken() != tc.next {
				t.Errorf("next_token %q, want %q", resp.GetNextToken(), tc.next)
			}
			if tc.want != nil {
				want := &csi.ListSnapshotsResponse{NextToken: tc.next}
				for _, s := range tc.want {
					want.Entries = append(want.Entries, &csi.ListSnapshotsResponse_Entry{Snapshot: s})
				}
				if !proto.Equal(resp, want) {
					t.Fatalf("ListSnapshots(%v) =\n%v\nwant\n%v", tc.req, resp, want)
				}
				return
			}
			if got := listIDs(resp); strings.Join(got, ",") != strings.Join(tc.ids, ",") {
				t.Fatalf("ListSnapshots(%v) ids %q, want %q", tc.req, got, tc.ids)
			}
			for _, en := range resp.GetEntries() {
				s := en.GetSnapshot()
				if verifying[s.GetSnapshotId()] {
					if s.GetReadyToUse() || s.GetSizeBytes() != 0 || s.GetSourceVolumeId() == "" || !proto.Equal(s.GetCreationTime(), created) {
						t.Errorf("listed snapshot %v, want not ready (being verified) with source and creation time", s)
					}
				} else if !s.GetReadyToUse() || s.GetSizeBytes() != 4096 || s.GetSourceVolumeId() == "" || !proto.Equal(s.GetCreationTime(), created) {
					t.Errorf("listed snapshot %v, want ready with size, source and creation time", s)
				}
				if IsMemberSnapshotID(s.GetSnapshotId()) != (s.GetGroupSnapshotId() == GroupIDOfMember(s.GetSnapshotId()) && s.GetGroupSnapshotId() != "") {
					t.Errorf("listed snapshot %s has group_snapshot_id %q", s.GetSnapshotId(), s.GetGroupSnapshotId())
				}
			}
		})
	}

	t.Run("paging walks every cut snapshot once", func(t *testing.T) {
		var got []string
		token := ""
		for range 10 {
			resp, err := e.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{MaxEntries: 1, StartingToken: token})
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, listIDs(resp)...)
			if token = resp.GetNextToken(); token == "" {
				break
			}
		}
		if strings.Join(got, ",") != strings.Join(allCut, ",") {
			t.Fatalf("pages gave %q, want %q", got, allCut)
		}
	})

	if w := e.writes(); len(w) > 0 {
		t.Fatalf("ListSnapshots wrote to the API: %v", w)
	}
}

// firstAfter returns the first id of sorted ids greater than token, as a one-element list (nil if none).
func firstAfter(ids []string, token string) []string {
	for _, id := range ids {
		if id > token {
			return []string{id}
		}
	}
	return nil
}

// nextTokenAfter is the next_token of a one-entry page after token: that entry's id when more follow.
func nextTokenAfter(ids []string, token string) string {
	for i, id := range ids {
		if id > token {
			if i+1 < len(ids) {
				return id
			}
			return ""
		}
	}
	return ""
}

// TestListSnapshotsBeforeSync checks that listing everything waits for the metadata cache: a retryable
// code rather than a list that misses snapshots.
func TestListSnapshotsBeforeSync(t *testing.T) {
	rec := listRecord("g", true, PhaseReady, fxNS+"/data-main-0")
	hang, unblock := hangMetadataList(t)
	e := startCSIUnready(t, listWorld(t, rec), hang)
	ctx := context.Background()
	_, err := e.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{})
	wantCode(t, err, codes.Unavailable, "retry")
	unblock()
	e.waitReady()
	resp, err := e.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{})
	if err != nil || strings.Join(listIDs(resp), ",") != rec.Sources[0].SnapshotID {
		t.Fatalf("ListSnapshots after sync = %v, %v; want %s", resp, err, rec.Sources[0].SnapshotID)
	}
}

// TestListSnapshotsFollowsTheJob takes a real group snapshot of a TLS etcd cluster and checks that a
// member's ListSnapshots answer is what the CSI spec and the csi-snapshotter need: a retryable "not cut
// yet" until `etcdctl snapshot save` has exited 0, then not ready while verify runs, ready with size
// once it is verified, always the same snapshot GetVolumeGroupSnapshot and GetSnapshot report.
func TestListSnapshotsFollowsTheJob(t *testing.T) {
	e, tc := startCSIWithEtcd(t)
	tc.Put(t, 10, "k")
	ctx := context.Background()
	sources := []string{pvHandle(fxNS, fxCluster, 0), pvHandle(fxNS, fxCluster, 1), pvHandle(fxNS, fxCluster, 2)}
	resp, err := e.group.CreateVolumeGroupSnapshot(ctx, &csi.CreateVolumeGroupSnapshotRequest{Name: "vgs-list", SourceVolumeIds: sources, Secrets: secretsOf(tc)})
	if err != nil {
		t.Fatal(err)
	}
	g := resp.GetGroupSnapshot()
	member := func(s *csi.Snapshot) (*csi.Snapshot, error) {
		l, err := e.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{SnapshotId: s.GetSnapshotId()})
		if err != nil {
			return nil, err
		}
		if len(l.GetEntries()) != 1 || l.GetNextToken() != "" {
			return nil, fmt.Errorf("ListSnapshots(%s) = %v, want exactly one entry", s.GetSnapshotId(), l)
		}
		return l.GetEntries()[0].GetSnapshot(), nil
	}
	for _, s := range g.GetSnapshots() {
		_, err := member(s)
		wantCode(t, err, codes.Aborted, s.GetSnapshotId(), "not cut yet")
		got, err := e.ctrl.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: s.GetSnapshotId()})
		if err != nil || !proto.Equal(got.GetSnapshot(), s) || got.GetSnapshot().GetReadyToUse() {
			t.Fatalf("GetSnapshot of a member before the save = %v, %v; want %v (not ready)", got, err, s)
		}
	}
	if l, err := e.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{}); err != nil || len(l.GetEntries()) != 0 {
		t.Fatalf("listing everything while the Job saves = %v, %v; want nothing (not cut yet)", l, err)
	}

	// The kubelet reports the save container done; verify runs.
	job, err := e.admin.BatchV1().Jobs(fxNS).Get(ctx, g.GetGroupSnapshotId(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: job.Name + "-saved", Namespace: fxNS, Labels: job.Spec.Template.Labels},
		Spec: job.Spec.Template.Spec, Status: savedStatus()}
	if _, err := e.admin.CoreV1().Pods(fxNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range g.GetSnapshots() {
		var got *csi.Snapshot
		eventually(t, "member listed once saved", func() error {
			got, err = member(s)
			return err
		})
		if !proto.Equal(got, s) || got.GetReadyToUse() {
			t.Fatalf("member while verify runs = %v, want %v (not ready)", got, s)
		}
	}
	if l, err := e.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{}); err != nil || len(l.GetEntries()) != len(g.GetSnapshots()) {
		t.Fatalf("listing everything while verify runs = %v, %v; want the %d members, not ready", l, err, len(g.GetSnapshots()))
	}

	e.finishJob(g.GetGroupSnapshotId(), g.GetGroupSnapshotId()+"-abcde", verifiedPod(8192), batchv1.JobCondition{Type: batchv1.JobComplete})
	var final *csi.VolumeGroupSnapshot
	eventually(t, "group ready", func() error {
		r, err := e.group.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: g.GetGroupSnapshotId()})
		if err != nil {
			return err
		}
		if final = r.GetGroupSnapshot(); !final.GetReadyToUse() {
			return fmt.Errorf("not ready yet")
		}
		return nil
	})
	var listed []string
	for _, s := range final.GetSnapshots() {
		got, err := member(s)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, s) || !got.GetReadyToUse() || got.GetSizeBytes() != 8192 || got.GetGroupSnapshotId() != g.GetGroupSnapshotId() {
			t.Fatalf("member after the Job = %v, want %v (ready, 8192 bytes)", got, s)
		}
		listed = append(listed, s.GetSnapshotId())
	}
	l, err := e.ctrl.ListSnapshots(ctx, &csi.ListSnapshotsRequest{})
	if err != nil || strings.Join(listIDs(l), ",") != strings.Join(sortedCopy(listed), ",") {
		t.Fatalf("listing everything after the Job = %v, %v; want the members %q", l, err, sortedCopy(listed))
	}
}
