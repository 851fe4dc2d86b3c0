package driver

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// memberIDs lists the snapshot ids of a group snapshot.
func memberIDs(g *csi.VolumeGroupSnapshot) []string {
	var ids []string
	for _, s := range g.GetSnapshots() {
		ids = append(ids, s.GetSnapshotId())
	}
	return ids
}

// checkGroupShape checks the CSI rules for a group snapshot answer: exactly one snapshot per source,
// source_volume_id as passed in, group id on every member, distinct member ids.
func checkGroupShape(t *testing.T, g *csi.VolumeGroupSnapshot, sources []string, ready bool) {
	t.Helper()
	if !groupIDPattern.MatchString(g.GetGroupSnapshotId()) {
		t.Fatalf("group_snapshot_id %q is not a group id", g.GetGroupSnapshotId())
	}
	if g.GetReadyToUse() != ready || g.GetCreationTime() == nil || g.GetCreationTime().AsTime().IsZero() {
		t.Fatalf("group ready_to_use=%t creation_time=%v, want ready %t and a creation time", g.GetReadyToUse(), g.GetCreationTime(), ready)
	}
	var got []string
	seen := map[string]bool{}
	for _, s := range g.GetSnapshots() {
		got = append(got, s.GetSourceVolumeId())
		if s.GetGroupSnapshotId() != g.GetGroupSnapshotId() {
			t.Errorf("member %s has group_snapshot_id %q, want %q", s.GetSnapshotId(), s.GetGroupSnapshotId(), g.GetGroupSnapshotId())
		}
		if !strings.HasPrefix(s.GetSnapshotId(), g.GetGroupSnapshotId()+"-") || seen[s.GetSnapshotId()] {
			t.Errorf("member snapshot id %q is not a distinct member of %s", s.GetSnapshotId(), g.GetGroupSnapshotId())
		}
		seen[s.GetSnapshotId()] = true
		if s.GetReadyToUse() != ready || !proto.Equal(s.GetCreationTime(), g.GetCreationTime()) {
			t.Errorf("member %s ready_to_use=%t creation_time=%v", s.GetSnapshotId(), s.GetReadyToUse(), s.GetCreationTime())
		}
	}
	if !sameIDs(got, sources) {
		t.Fatalf("source_volume_ids %q, want exactly one snapshot for each of %q", got, sources)
	}
}

// verifiedPod is the pod status of a successful snapshot Job: save done, verify wrote its result.
func verifiedPod(size int64) corev1.PodStatus {
	result := fmt.Sprintf(`{"file":%q,"size":%d,"sha256":%q,"hashChecked":true,"revision":42,"compactRevision":0,"keys":30,"totalKeys":30,"hash":12345}`,
		snapshotFilePath, size, strings.Repeat("ab", 32))
	return corev1.PodStatus{
		Phase: corev1.PodSucceeded,
		InitContainerStatuses: []corev1.ContainerStatus{{Name: saveContainer,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}}},
		ContainerStatuses: []corev1.ContainerStatus{{Name: verifyContainer,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", Message: result}}}},
	}
}

// TestGroupSnapshotLifecycle drives CreateVolumeGroupSnapshot, Get and Delete over the unix socket
// against a real etcd cluster and the fake Kubernetes API.
func TestGroupSnapshotLifecycle(t *testing.T) {
	e, tc := startCSIWithEtcd(t)
	tc.Put(t, 30, "k")
	ctx := context.Background()
	secrets := secretsOf(tc)
	// Both id forms the driver accepts: PV handles (what the upstream sidecar passes) and namespace/pvc.
	sources := []string{pvHandle(fxNS, fxCluster, 0), fxNS + "/data-main-1", pvHandle(fxNS, fxCluster, 2)}

	create := func(name string, ids []string) (*csi.CreateVolumeGroupSnapshotResponse, error) {
		return e.group.CreateVolumeGroupSnapshot(ctx, &csi.CreateVolumeGroupSnapshotRequest{Name: name, SourceVolumeIds: ids, Secrets: secrets})
	}

	first, err := create("vgs-1", sources)
	if err != nil {
		t.Fatalf("CreateVolumeGroupSnapshot: %v", err)
	}
	g1 := first.GetGroupSnapshot()
	checkGroupShape(t, g1, sources, false)
	id1 := g1.GetGroupSnapshotId()

	t.Run("create twice gives the same answer and one Job", func(t *testing.T) {
		again, err := create("vgs-1", []string{sources[2], sources[0], sources[1]})
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(again, first) {
			t.Fatalf("second Create answered\n%v\nfirst answered\n%v", again, first)
		}
		if n := e.jobCreates(""); n != 1 {
			t.Fatalf("%d Job creations, want exactly 1", n)
		}
		if !e.exists("Job", fxNS, id1) {
			t.Fatalf("Job %s/%s missing", fxNS, id1)
		}
	})

	t.Run("same name other sources is ALREADY_EXISTS", func(t *testing.T) {
		_, err := create("vgs-1", sources[:2])
		wantCode(t, err, codes.AlreadyExists, "vgs-1")
		if n := e.jobCreates(""); n != 1 {
			t.Fatalf("%d Job creations after the refused Create, want 1", n)
		}
	})

	t.Run("same name other parameters is ALREADY_EXISTS", func(t *testing.T) {
		_, err := e.group.CreateVolumeGroupSnapshot(ctx, &csi.CreateVolumeGroupSnapshotRequest{
			Name: "vgs-1", SourceVolumeIds: sources, Secrets: secrets, Parameters: map[string]string{paramSnapshotMinSize: "2Gi"}})
		wantCode(t, err, codes.AlreadyExists, "vgs-1")
	})

	t.Run("get", func(t *testing.T) {
		got, err := e.group.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: id1, SnapshotIds: memberIDs(g1)})
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got.GetGroupSnapshot(), g1) {
			t.Fatalf("Get answered %v, Create %v", got.GetGroupSnapshot(), g1)
		}
		reversed := slices.Clone(memberIDs(g1))
		slices.Reverse(reversed)
		if _, err := e.group.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: id1, SnapshotIds: reversed}); err != nil {
			t.Fatalf("Get with member ids in another order: %v", err)
		}
	})

	t.Run("get with wrong snapshot_ids is INVALID_ARGUMENT", func(t *testing.T) {
		for _, ids := range [][]string{
			memberIDs(g1)[:2],
			append(memberIDs(g1)[:2:2], id1+"-00000000"),
			append(memberIDs(g1), id1+"-00000000"),
		} {
			_, err := e.group.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: id1, SnapshotIds: ids})
			wantCode(t, err, codes.InvalidArgument, "snapshot_ids", id1)
		}
	})

	t.Run("get unknown is NOT_FOUND before snapshot_ids are looked at", func(t *testing.T) {
		for _, id := range []string{groupIDPrefix + strings.Repeat("0", 32), "fake-vol-id", id1 + "-00000000", "etcds-" + strings.Repeat("0", 32)} {
			_, err := e.group.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: id, SnapshotIds: []string{"not-a-member"}})
			wantCode(t, err, codes.NotFound, id)
		}
	})

	// A second group of the same cluster, to prove deletion leaves it alone.
	second, err := create("vgs-2", []string{fxNS + "/data-main-0", fxNS + "/data-main-1"})
	if err != nil {
		t.Fatal(err)
	}
	id2 := second.GetGroupSnapshot().GetGroupSnapshotId()
	all := "Job=true Secret=true PersistentVolumeClaim=true ConfigMap=true"
	none := "Job=false Secret=false PersistentVolumeClaim=false ConfigMap=false"

	t.Run("delete with wrong snapshot_ids is INVALID_ARGUMENT and deletes nothing", func(t *testing.T) {
		_, err := e.group.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: id1, SnapshotIds: memberIDs(second.GetGroupSnapshot())})
		wantCode(t, err, codes.InvalidArgument, "snapshot_ids")
		if got := e.objectsOf(id1).String(); got != all {
			t.Fatalf("after refused delete: %s", got)
		}
	})

	t.Run("delete removes this group's objects and nothing of another group", func(t *testing.T) {
		if got := e.objectsOf(id2).String(); got != all {
			t.Fatalf("second group before delete: %s", got)
		}
		if _, err := e.group.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: id1, SnapshotIds: memberIDs(g1)}); err != nil {
			t.Fatal(err)
		}
		if got := e.objectsOf(id1).String(); got != none {
			t.Fatalf("deleted group: %s", got)
		}
		if got := e.objectsOf(id2).String(); got != all {
			t.Fatalf("other group after delete: %s", got)
		}
		// Records are read from an informer cache, which learns of the deletion shortly after.
		eventually(t, "Get after Delete", func() error {
			_, err := e.group.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: id1})
			if status.Code(err) != codes.NotFound {
				return fmt.Errorf("Get of a deleted group = %v, want NotFound", err)
			}
			return nil
		})
	})

	t.Run("delete unknown is OK", func(t *testing.T) {
		for _, id := range []string{id1, groupIDPrefix + strings.Repeat("0", 32), "fake-vol-id"} {
			if _, err := e.group.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: id, SnapshotIds: []string{"x"}}); err != nil {
				t.Errorf("Delete %q: %v", id, err)
			}
		}
		if got := e.objectsOf(id2).String(); got != all {
			t.Fatalf("other group after deleting unknown ids: %s", got)
		}
	})

	t.Run("verified Job makes the group ready", func(t *testing.T) {
		e.finishJob(id2, id2+"-abcde", verifiedPod(8192), batchv1.JobCondition{Type: batchv1.JobComplete})
		var got *csi.VolumeGroupSnapshot
		eventually(t, "group ready", func() error {
			resp, err := e.group.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: id2})
			if err != nil {
				return err
			}
			if got = resp.GetGroupSnapshot(); !got.GetReadyToUse() {
				return fmt.Errorf("not ready: %v", got)
			}
			return nil
		})
		checkGroupShape(t, got, []string{fxNS + "/data-main-0", fxNS + "/data-main-1"}, true)
		for _, s := range got.GetSnapshots() {
			if s.GetSizeBytes() != 8192 {
				t.Errorf("member %s size_bytes %d, want 8192", s.GetSnapshotId(), s.GetSizeBytes())
			}
		}
		if !proto.Equal(got.GetCreationTime(), second.GetGroupSnapshot().GetCreationTime()) {
			t.Errorf("creation_time moved from %v to %v", second.GetGroupSnapshot().GetCreationTime(), got.GetCreationTime())
		}
		// The sidecar keeps calling Create until ready; that answer must now be ready as well.
		again, err := create("vgs-2", []string{fxNS + "/data-main-1", fxNS + "/data-main-0"})
		if err != nil || !proto.Equal(again.GetGroupSnapshot(), got) {
			t.Fatalf("Create after ready = %v, %v; want %v", again, err, got)
		}
		if n := e.jobCreates(id2); n != 1 {
			t.Fatalf("%d Job creations for %s, want 1", n, id2)
		}
	})

	t.Run("failed Job gives the pod's reason as a final error and cleans up", func(t *testing.T) {
		resp, err := create("vgs-3", sources)
		if err != nil {
			t.Fatal(err)
		}
		id3 := resp.GetGroupSnapshot().GetGroupSnapshotId()
		reason := "Error: context deadline exceeded while reading from member m0"
		e.finishJob(id3, id3+"-xyz12", corev1.PodStatus{
			Phase: corev1.PodFailed,
			InitContainerStatuses: []corev1.ContainerStatus{{Name: saveContainer,
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: reason}}}},
		}, batchv1.JobCondition{Type: batchv1.JobFailed, Reason: batchv1.JobReasonBackoffLimitExceeded, Message: "Job has reached the specified backoff limit"})

		var final error
		eventually(t, "recorded failure", func() error {
			_, final = e.group.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{GroupSnapshotId: id3})
			if final == nil {
				return fmt.Errorf("Get still succeeds")
			}
			return nil
		})
		code := status.Code(final)
		if retryable(code) {
			t.Fatalf("failure code %s is one the sidecar retries; want a final code", code)
		}
		wantCode(t, final, code, reason, `"save"`, id3)
		eventually(t, "cleanup", func() error {
			if got := e.objectsOf(id3).String(); got != "Job=false Secret=false PersistentVolumeClaim=false ConfigMap=true" {
				return fmt.Errorf("objects: %s", got)
			}
			return nil
		})
		// The sidecar's next Create gets the same final error and no new Job.
		_, err = create("vgs-3", sources)
		wantCode(t, err, code, reason)
		if n := e.jobCreates(id3); n != 1 {
			t.Fatalf("%d Job creations for %s, want 1", n, id3)
		}
		// Deleting the failed group removes its record.
		if _, err := e.group.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{GroupSnapshotId: id3}); err != nil {
			t.Fatal(err)
		}
		if got := e.objectsOf(id3).String(); got != none {
			t.Fatalf("after delete: %s", got)
		}
	})
}

// retryable reports the codes the upstream csi-snapshotter retries instead of recording a failure.
func retryable(c codes.Code) bool {
	switch c {
	case codes.Unavailable, codes.Aborted, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Canceled:
		return true
	}
	return false
}

// TestCreateRequestValidation checks that malformed and mismatched requests are INVALID_ARGUMENT
// naming what is wrong, and that none of them creates anything.
func TestCreateRequestValidation(t *testing.T) {
	objs := append(etcdPVCs(fxNS, fxCluster, 3), etcdPVCs(fxNS, "other", 1)...)
	objs = append(objs, etcdPVCs("etcd-b", fxCluster, 1)...)
	objs = append(objs, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "unlabelled", Namespace: fxNS}})
	e := startCSI(t, objs)
	ctx := context.Background()
	long := strings.Repeat("x", maxStringBytes+1)
	ok := []string{fxNS + "/data-main-0"}

	cases := []struct {
		name    string
		req     *csi.CreateVolumeGroupSnapshotRequest
		code    codes.Code
		mention []string
	}{
		{"empty name", &csi.CreateVolumeGroupSnapshotRequest{SourceVolumeIds: ok}, codes.InvalidArgument, []string{"name", "required"}},
		{"name over 128 bytes", &csi.CreateVolumeGroupSnapshotRequest{Name: long, SourceVolumeIds: ok}, codes.InvalidArgument, []string{"name", "129 bytes"}},
		{"name with control character", &csi.CreateVolumeGroupSnapshotRequest{Name: "a\x01b", SourceVolumeIds: ok}, codes.InvalidArgument, []string{"name", "U+0001"}},
		{"no source volumes", &csi.CreateVolumeGroupSnapshotRequest{Name: "g"}, codes.InvalidArgument, []string{"source_volume_ids", "required"}},
		{"empty source volume id", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: []string{ok[0], ""}}, codes.InvalidArgument, []string{"source_volume_ids[1]"}},
		{"source volume id over 128 bytes", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: []string{long}}, codes.InvalidArgument, []string{"source_volume_ids[0]", "129 bytes"}},
		{"duplicate source volume", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: []string{ok[0], ok[0]}}, codes.InvalidArgument, []string{ok[0], "twice"}},
		{"malformed id without namespace", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: []string{"data-main-0"}}, codes.InvalidArgument, []string{`"data-main-0"`}},
		{"malformed namespace", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: []string{"Etcd_Test/data-main-0"}}, codes.InvalidArgument, []string{`"Etcd_Test/data-main-0"`}},
		{"malformed empty pvc name", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: []string{"etcd-test/"}}, codes.InvalidArgument, []string{`"etcd-test/"`}},
		{"malformed extra slash", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: []string{"etcd-test/data/main"}}, codes.InvalidArgument, []string{`"etcd-test/data/main"`}},
		{"unknown PVC", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: []string{"etcd-test/nope"}}, codes.NotFound, []string{`"etcd-test/nope"`}},
		{"PVCs of two clusters", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: []string{ok[0], fxNS + "/data-other-0"}}, codes.InvalidArgument, []string{`"etcd-test/data-other-0"`, "cluster"}},
		{"PVCs of two namespaces", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: []string{ok[0], "etcd-b/data-main-0"}}, codes.InvalidArgument, []string{`"etcd-b/data-main-0"`, "namespace"}},
		{"PVC without cluster label", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: []string{fxNS + "/unlabelled"}}, codes.InvalidArgument, []string{`"etcd-test/unlabelled"`, fxClusterLabel}},
		{"parameters over 4 KiB", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: ok, Parameters: map[string]string{paramEndpoints: strings.Repeat("a", maxMapBytes)}}, codes.InvalidArgument, []string{"parameters", "4096"}},
		{"parameter key over 128 bytes", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: ok, Parameters: map[string]string{long: "v"}}, codes.InvalidArgument, []string{"parameters", "129 bytes"}},
		{"unknown parameter", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: ok, Parameters: map[string]string{"endpoint": "https://x:2379"}}, codes.InvalidArgument, []string{`"endpoint"`}},
		{"secrets over 64 KiB", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: ok, Secrets: map[string]string{secretKeyKey: strings.Repeat("k", maxSecretsBytes)}}, codes.InvalidArgument, []string{"secrets", "65536"}},
		{"partial credentials", &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: ok, Secrets: map[string]string{secretKeyCA: "x"}}, codes.InvalidArgument, []string{secretKeyCert, secretKeyKey}},
	}
	for _, tc := range cases {
		t.Run("group/"+tc.name, func(t *testing.T) {
			_, err := e.group.CreateVolumeGroupSnapshot(ctx, tc.req)
			wantCode(t, err, tc.code, tc.mention...)
		})
	}

	single := []struct {
		name    string
		req     *csi.CreateSnapshotRequest
		mention []string
	}{
		{"empty name", &csi.CreateSnapshotRequest{SourceVolumeId: ok[0]}, []string{"name"}},
		{"no source volume", &csi.CreateSnapshotRequest{Name: "s"}, []string{"source_volume_id", "required"}},
		{"source volume id over 128 bytes", &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: long}, []string{"source_volume_id", "129 bytes"}},
		{"malformed id", &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: "not a volume"}, []string{`"not a volume"`}},
		{"parameters over 4 KiB", &csi.CreateSnapshotRequest{Name: "s", SourceVolumeId: ok[0], Parameters: map[string]string{"a": strings.Repeat("b", maxMapBytes)}}, []string{"parameters"}},
	}
	for _, tc := range single {
		t.Run("single/"+tc.name, func(t *testing.T) {
			_, err := e.ctrl.CreateSnapshot(ctx, tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.mention...)
		})
	}

	t.Run("missing ids on get and delete", func(t *testing.T) {
		_, err := e.group.GetVolumeGroupSnapshot(ctx, &csi.GetVolumeGroupSnapshotRequest{})
		wantCode(t, err, codes.InvalidArgument, "group_snapshot_id")
		_, err = e.group.DeleteVolumeGroupSnapshot(ctx, &csi.DeleteVolumeGroupSnapshotRequest{})
		wantCode(t, err, codes.InvalidArgument, "group_snapshot_id")
		_, err = e.ctrl.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{})
		wantCode(t, err, codes.InvalidArgument, "snapshot_id")
	})

	if w := e.writes(); len(w) > 0 {
		t.Fatalf("invalid requests wrote to the API: %v", w)
	}
}
