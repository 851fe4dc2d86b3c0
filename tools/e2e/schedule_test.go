package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	groupsnapshotv1 "github.com/kubernetes-csi/external-snapshotter/client/v8/apis/volumegroupsnapshot/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// scheduleLabel is the label the driver puts on every VolumeGroupSnapshot of a schedule.
const scheduleLabel = "snapshot.etcd.io/schedule"

// scheduleTimeout bounds a schedule test: several runs of 10 s each, each a real snapshot on a loaded
// machine, plus clean-up.
const scheduleTimeout = 6 * time.Minute

// scheduleSetup is setup with the longer timeout schedule tests need.
func scheduleSetup(t *testing.T) (*rig.Rig, context.Context) {
	t.Helper()
	r, _ := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), scheduleTimeout)
	t.Cleanup(cancel)
	return r, ctx
}

// kubectl runs the rig's kubectl as the admin and returns its output (or the error text).
func kubectl(ctx context.Context, r *rig.Rig, args ...string) string {
	cmd := exec.CommandContext(ctx, filepath.Join(r.BinDir, "kubectl"), append([]string{"--kubeconfig", r.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s(kubectl %s: %v)", out, strings.Join(args, " "), err)
	}
	return string(out)
}

// logScheduleState prints what a user would look at: the schedules and the schedule's
// VolumeGroupSnapshots, through kubectl.
func logScheduleState(t *testing.T, ctx context.Context, r *rig.Rig, name, when string) {
	t.Helper()
	t.Logf("%s:\n$ kubectl get etcdsnapshotschedules -n %s\n%s\n$ kubectl get volumegroupsnapshots -n %s -l %s=%s\n%s",
		when, r.Namespace, kubectl(ctx, r, "get", "etcdsnapshotschedules", "-n", r.Namespace),
		r.Namespace, scheduleLabel, name, kubectl(ctx, r, "get", "volumegroupsnapshots", "-n", r.Namespace, "-l", scheduleLabel+"="+name))
}

// createSchedule creates an EtcdSnapshotSchedule of the cluster under test with the example class.
// Clean-up deletes the schedule, then every VolumeGroupSnapshot it made (and waits for their objects to
// go); the kubectl view is printed at the end in -v mode and on failure.
func createSchedule(t *testing.T, ctx context.Context, r *rig.Rig, name string, spec map[string]any) {
	t.Helper()
	class, err := r.GroupSnapshotClassName()
	if err != nil {
		t.Fatal(err)
	}
	full := map[string]any{
		"source":                       map[string]any{"cluster": rig.EtcdClusterName},
		"volumeGroupSnapshotClassName": class,
	}
	for k, v := range spec {
		full[k] = v
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": driver.ScheduleGVR.GroupVersion().String(),
		"kind":       "EtcdSnapshotSchedule",
		"metadata":   map[string]any{"name": name, "namespace": r.Namespace},
		"spec":       full,
	}}
	if _, err := r.Dynamic.Resource(driver.ScheduleGVR).Namespace(r.Namespace).Create(ctx, u, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create EtcdSnapshotSchedule %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx := cleanupContext(t)
		if t.Failed() || testing.Verbose() {
			logScheduleState(t, ctx, r, name, "at the end of "+t.Name())
		}
		err := r.Dynamic.Resource(driver.ScheduleGVR).Namespace(r.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("clean-up: delete schedule %s: %v", name, err)
		}
		// Once the driver's cache shows the schedule gone it starts nothing more; give it a moment.
		_ = wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
			_, err := scheduleObject(ctx, r, name)
			return apierrors.IsNotFound(err), nil
		})
		time.Sleep(time.Second)
		runs, err := scheduleRuns(ctx, r, name)
		if err != nil {
			t.Errorf("clean-up: %v", err)
		}
		for _, v := range runs {
			deleteGroup(t, ctx, r, v.Name)
		}
	})
}

// scheduleRuns lists the schedule's VolumeGroupSnapshots, oldest first.
func scheduleRuns(ctx context.Context, r *rig.Rig, name string) ([]groupsnapshotv1.VolumeGroupSnapshot, error) {
	list, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshots(r.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: labels.Set{scheduleLabel: name}.String(),
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	return list.Items, nil
}

func isReady(v *groupsnapshotv1.VolumeGroupSnapshot) bool {
	return v.Status != nil && ptr.Deref(v.Status.ReadyToUse, false)
}

// scheduleObject reads a schedule.
func scheduleObject(ctx context.Context, r *rig.Rig, name string) (*unstructured.Unstructured, error) {
	return r.Dynamic.Resource(driver.ScheduleGVR).Namespace(r.Namespace).Get(ctx, name, metav1.GetOptions{})
}

// scheduleCondition returns status, reason and message of a condition of the schedule.
func scheduleCondition(u *unstructured.Unstructured, condType string) (string, string, string) {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == condType {
			return fmt.Sprint(m["status"]), fmt.Sprint(m["reason"]), fmt.Sprint(m["message"])
		}
	}
	return "", "", ""
}

func patchSchedule(t *testing.T, ctx context.Context, r *rig.Rig, name, patch string) {
	t.Helper()
	_, err := r.Dynamic.Resource(driver.ScheduleGVR).Namespace(r.Namespace).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		t.Fatalf("patch schedule %s with %s: %v", name, patch, err)
	}
}

// scheduleEvents returns the reasons of the events on a schedule.
func scheduleEvents(ctx context.Context, r *rig.Rig, name string) (map[string]int, error) {
	list, err := r.Kube.CoreV1().Events(r.Namespace).List(ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.kind=EtcdSnapshotSchedule,involvedObject.name=" + name,
	})
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, e := range list.Items {
		out[e.Reason] += int(max(e.Count, 1))
	}
	return out, nil
}

// runObjects follows a schedule's runs while a test waits, remembering for each VolumeGroupSnapshot
// its content and group snapshot id, so that after pruning the test can check they are gone.
type runObjects struct {
	content, id map[string]string
	seen        map[string]bool
}

func newRunObjects() *runObjects {
	return &runObjects{content: map[string]string{}, id: map[string]string{}, seen: map[string]bool{}}
}

func (o *runObjects) observe(ctx context.Context, r *rig.Rig, runs []groupsnapshotv1.VolumeGroupSnapshot) {
	for _, v := range runs {
		o.seen[v.Name] = true
		if v.Status == nil || v.Status.BoundVolumeGroupSnapshotContentName == nil || o.id[v.Name] != "" {
			continue
		}
		content := *v.Status.BoundVolumeGroupSnapshotContentName
		o.content[v.Name] = content
		if c, err := r.Snap.GroupsnapshotV1().VolumeGroupSnapshotContents().Get(ctx, content, metav1.GetOptions{}); err == nil && c.Status != nil {
			o.id[v.Name] = ptr.Deref(c.Status.VolumeGroupSnapshotHandle, "")
		}
	}
}

// TestE2EScheduleRunsAndPrunes: "@every 10s" with keep 2 takes real group snapshots; after at least
// four runs exactly the two newest Ready ones remain, and the pruned ones' contents, PVCs, Jobs and
// records are gone.
func TestE2EScheduleRunsAndPrunes(t *testing.T) {
	r, ctx := scheduleSetup(t)
	name := uniqueName("e2e-sched")
	createSchedule(t, ctx, r, name, map[string]any{
		"schedule":  "@every 10s",
		"retention": map[string]any{"keep": int64(2), "keepFailed": int64(1)},
	})
	objs := newRunObjects()
	var runs []groupsnapshotv1.VolumeGroupSnapshot
	err := wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		var err error
		if runs, err = scheduleRuns(ctx, r, name); err != nil {
			return false, err
		}
		objs.observe(ctx, r, runs)
		ready := 0
		for i := range runs {
			if isReady(&runs[i]) {
				ready++
			}
		}
		return len(objs.seen) >= 4 && ready >= 2 && len(objs.seen) > len(runs), nil
	})
	if err != nil {
		t.Fatalf("fewer than 4 runs with 2 ready and one pruned (seen %d, now %d): %v", len(objs.seen), len(runs), err)
	}
	// Stop further runs, let the one in flight finish, and look at what retention left.
	patchSchedule(t, ctx, r, name, `{"spec":{"suspend":true}}`)
	err = wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		var err error
		if runs, err = scheduleRuns(ctx, r, name); err != nil {
			return false, err
		}
		objs.observe(ctx, r, runs)
		for i := range runs {
			if !isReady(&runs[i]) {
				return false, nil
			}
		}
		return len(runs) == 2, nil
	})
	if err != nil {
		var states []string
		for i := range runs {
			states = append(states, fmt.Sprintf("%s ready=%v", runs[i].Name, isReady(&runs[i])))
		}
		t.Fatalf("after suspending, want exactly 2 Ready VolumeGroupSnapshots of %s, have %v: %v", name, states, err)
	}
	logScheduleState(t, ctx, r, name, fmt.Sprintf("after %d runs", len(objs.seen)))
	kept := map[string]bool{runs[0].Name: true, runs[1].Name: true}
	var all []string
	for n := range objs.seen {
		all = append(all, n)
	}
	sort.Strings(all)
	if len(all) < 4 {
		t.Fatalf("only %d runs: %v", len(all), all)
	}
	if want := all[len(all)-2:]; !kept[want[0]] || !kept[want[1]] {
		t.Errorf("kept %v, want the two newest %v", runs, want)
	}
	for _, n := range all {
		if kept[n] {
			continue
		}
		if c := objs.content[n]; c != "" {
			waitGroupContentGone(t, ctx, r, c)
		}
		if id := objs.id[n]; id != "" {
			if err := waitSnapshotObjectsGone(ctx, r, id); err != nil {
				t.Errorf("pruned %s: %v", n, err)
			}
		} else {
			t.Errorf("pruned %s was never seen bound to a group snapshot, so its objects cannot be checked", n)
		}
	}
	u, err := scheduleObject(ctx, r, name)
	if err != nil {
		t.Fatal(err)
	}
	if n, _, _ := unstructured.NestedInt64(u.Object, "status", "readySnapshots"); n != 2 {
		t.Errorf("status.readySnapshots %d, want 2", n)
	}
	events, err := scheduleEvents(ctx, r, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("events on the schedule: %v", events)
	for _, reason := range []string{"SnapshotCreated", "SnapshotReady", "SnapshotPruned"} {
		if events[reason] == 0 {
			t.Errorf("no %s event on the schedule (events %v)", reason, events)
		}
	}
	// One SnapshotCreated per run and at most one SnapshotReady per run: nothing reported twice.
	if events["SnapshotCreated"] != len(all) || events["SnapshotReady"] > len(all) {
		t.Errorf("events %v for %d runs: each run is created and reported ready once", events, len(all))
	}
}

// TestE2EScheduleSuspendAndDelete: suspending stops runs; deleting the schedule keeps its snapshots.
func TestE2EScheduleSuspendAndDelete(t *testing.T) {
	r, ctx := scheduleSetup(t)
	name := uniqueName("e2e-suspend")
	createSchedule(t, ctx, r, name, map[string]any{"schedule": "@every 10s", "retention": map[string]any{"keep": int64(5)}})
	var runs []groupsnapshotv1.VolumeGroupSnapshot
	err := wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		var err error
		runs, err = scheduleRuns(ctx, r, name)
		return err == nil && len(runs) > 0 && isReady(&runs[0]), nil
	})
	if err != nil {
		t.Fatalf("no ready run: %v", err)
	}
	patchSchedule(t, ctx, r, name, `{"spec":{"suspend":true}}`)
	var u *unstructured.Unstructured
	err = wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		var err error
		if u, err = scheduleObject(ctx, r, name); err != nil {
			return false, err
		}
		_, reason, _ := scheduleCondition(u, "Ready")
		_, hasNext, _ := unstructured.NestedString(u.Object, "status", "nextScheduleTime")
		return reason == "Suspended" && !hasNext, nil
	})
	if err != nil {
		t.Fatalf("status does not show the suspension: %v", err)
	}
	before, err := scheduleRuns(ctx, r, name)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing can signal "no run happened": watch three intervals.
	time.Sleep(30 * time.Second)
	after, err := scheduleRuns(ctx, r, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("runs while suspended: %d before, %d after 30s", len(before), len(after))
	}
	logScheduleState(t, ctx, r, name, "suspended")

	if err := r.Dynamic.Resource(driver.ScheduleGVR).Namespace(r.Namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		_, err := scheduleObject(ctx, r, name)
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("schedule not deleted: %v", err)
	}
	// The garbage collector would act within seconds if anything were owned by the schedule.
	time.Sleep(5 * time.Second)
	left, err := scheduleRuns(ctx, r, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != len(after) || len(left) == 0 {
		t.Fatalf("after deleting the schedule %d of its %d snapshots remain", len(left), len(after))
	}
	for i := range left {
		if len(left[i].OwnerReferences) != 0 || left[i].DeletionTimestamp != nil {
			t.Errorf("%s: owners %v, deleting %v", left[i].Name, left[i].OwnerReferences, left[i].DeletionTimestamp)
		}
	}
	t.Logf("after deleting the schedule:\n$ kubectl get volumegroupsnapshots -n %s -l %s=%s\n%s", r.Namespace, scheduleLabel, name,
		kubectl(ctx, r, "get", "volumegroupsnapshots", "-n", r.Namespace, "-l", scheduleLabel+"="+name))
}

// TestE2EScheduleValidation: the API server refuses what the CRD's schema and CEL rules forbid, with
// the rule's message.
func TestE2EScheduleValidation(t *testing.T) {
	r, ctx := setup(t)
	cases := []struct {
		name string
		spec map[string]any
		want string
	}{
		{"both sources", map[string]any{"schedule": "@hourly", "source": map[string]any{"cluster": "main",
			"selector": map[string]any{"matchLabels": map[string]any{"etcd.io/cluster": "main"}}}}, "exactly one of spec.source.selector and spec.source.cluster"},
		{"no source", map[string]any{"schedule": "@hourly", "source": map[string]any{}}, "exactly one of spec.source.selector and spec.source.cluster"},
		{"keep 0", map[string]any{"schedule": "@hourly", "retention": map[string]any{"keep": int64(0)}}, "spec.retention.keep"},
		{"TZ in schedule", map[string]any{"schedule": "CRON_TZ=UTC 0 2 * * *"}, "set spec.timeZone"},
		{"six fields", map[string]any{"schedule": "0 0 2 * * *"}, "must have 5 fields"},
		{"bad maxAge", map[string]any{"schedule": "@hourly", "retention": map[string]any{"maxAge": "7d"}}, "positive duration"},
	}
	class, err := r.GroupSnapshotClassName()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := map[string]any{"source": map[string]any{"cluster": "main"}, "volumeGroupSnapshotClassName": class}
			for k, v := range tc.spec {
				spec[k] = v
			}
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": driver.ScheduleGVR.GroupVersion().String(), "kind": "EtcdSnapshotSchedule",
				"metadata": map[string]any{"name": uniqueName("e2e-invalid"), "namespace": r.Namespace},
				"spec":     spec,
			}}
			_, err := r.Dynamic.Resource(driver.ScheduleGVR).Namespace(r.Namespace).Create(ctx, u, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("create: %v; want Invalid mentioning %q", err, tc.want)
			}
		})
	}
	// And a valid one passes (dry run), defaults filled in.
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": driver.ScheduleGVR.GroupVersion().String(), "kind": "EtcdSnapshotSchedule",
		"metadata": map[string]any{"name": uniqueName("e2e-valid"), "namespace": r.Namespace},
		"spec":     map[string]any{"schedule": "30 2 * * *", "timeZone": "Europe/Berlin", "source": map[string]any{"cluster": "main"}, "volumeGroupSnapshotClassName": class},
	}}
	out, err := r.Dynamic.Resource(driver.ScheduleGVR).Namespace(r.Namespace).Create(ctx, u, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Fatalf("valid schedule refused: %v", err)
	}
	keep, _, _ := unstructured.NestedInt64(out.Object, "spec", "retention", "keep")
	keepFailed, _, _ := unstructured.NestedInt64(out.Object, "spec", "retention", "keepFailed")
	if keep != 7 || keepFailed != 1 {
		t.Errorf("defaults: keep %d keepFailed %d, want 7 and 1", keep, keepFailed)
	}
}

// metricValue scrapes one sample of the driver's metrics for a schedule; ok is false when absent.
func metricValue(ctx context.Context, r *rig.Rig, name string, lbls map[string]string) (float64, bool, error) {
	samples, err := scrape(ctx, r)
	if err != nil {
		return 0, false, err
	}
	got := find(samples, name, lbls)
	if len(got) != 1 {
		return 0, false, nil
	}
	return got[0].value, true, nil
}

// TestE2EScheduleStaleWhenClusterDown: with quorum lost, runs fail, BackupStale turns True and
// schedule_last_success_timestamp_seconds stops moving; with the members back, a run succeeds, the
// condition clears and the metric moves on.
func TestE2EScheduleStaleWhenClusterDown(t *testing.T) {
	r, ctx := scheduleSetup(t)
	name := uniqueName("e2e-stale")
	series := map[string]string{"namespace": r.Namespace, "schedule": name}
	// Registered before the schedule's clean-up, so the members come back after its snapshots are
	// deleted (as TestE2EQuorumLost does).
	down := map[int]bool{}
	t.Cleanup(func() {
		for i := range down {
			if err := r.Etcd.StartMember(i); err != nil {
				t.Errorf("clean-up: restart etcd member %d: %v", i, err)
			}
		}
	})
	createSchedule(t, ctx, r, name, map[string]any{
		"schedule":  "@every 10s",
		"retention": map[string]any{"keep": int64(2), "keepFailed": int64(2)},
	})
	var lastSuccess float64
	err := wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		v, ok, err := metricValue(ctx, r, "etcd_snapshot_driver_schedule_last_success_timestamp_seconds", series)
		lastSuccess = v
		return err == nil && ok, nil
	})
	if err != nil {
		t.Fatalf("no schedule_last_success_timestamp_seconds for %s: %v", name, err)
	}
	t.Logf("first success at %s", time.Unix(int64(lastSuccess), 0).UTC().Format(time.RFC3339))

	for _, i := range []int{1, 2} {
		if err := r.Etcd.StopMember(i); err != nil {
			t.Fatal(err)
		}
		down[i] = true
	}
	stoppedAt := time.Now()
	var u *unstructured.Unstructured
	var staleMsg, lastErr string
	err = wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		var err error
		if u, err = scheduleObject(ctx, r, name); err != nil {
			return false, err
		}
		var status string
		status, _, staleMsg = scheduleCondition(u, "BackupStale")
		lastErr, _, _ = unstructured.NestedString(u.Object, "status", "lastSnapshot", "error")
		return status == "True" && lastErr != "", nil
	})
	if err != nil {
		t.Fatalf("BackupStale not True with a failed run after quorum loss (BackupStale: %q, last error %q): %v", staleMsg, lastErr, err)
	}
	t.Logf("%s after stopping 2 of 3 members: BackupStale: %s; last run error: %s", time.Since(stoppedAt).Round(time.Second), staleMsg, lastErr)
	if !mentionsQuorum(lastErr) {
		t.Errorf("the failed run's error does not name quorum: %q", lastErr)
	}
	logScheduleState(t, ctx, r, name, "with quorum lost")
	failures, _, err := metricValue(ctx, r, "etcd_snapshot_driver_schedule_runs_total", map[string]string{"namespace": r.Namespace, "schedule": name, "result": "failure"})
	if err != nil || failures < 1 {
		t.Errorf("schedule_runs_total{result=failure} = %v (%v), want >= 1", failures, err)
	}
	if v, _, err := metricValue(ctx, r, "etcd_snapshot_driver_schedule_last_success_timestamp_seconds", series); err != nil || v != lastSuccess {
		t.Errorf("last success moved while quorum was lost: %v -> %v (%v)", lastSuccess, v, err)
	}
	events, err := scheduleEvents(ctx, r, name)
	if err != nil || events["SnapshotFailed"] == 0 {
		t.Errorf("no SnapshotFailed event: %v %v", events, err)
	}

	for i := range down {
		if err := r.Etcd.StartMember(i); err != nil {
			t.Fatal(err)
		}
		delete(down, i)
	}
	restartedAt := time.Now()
	err = wait.PollUntilContextCancel(ctx, pollInterval, true, func(ctx context.Context) (bool, error) {
		var err error
		if u, err = scheduleObject(ctx, r, name); err != nil {
			return false, err
		}
		status, _, msg := scheduleCondition(u, "BackupStale")
		staleMsg = msg
		v, _, err := metricValue(ctx, r, "etcd_snapshot_driver_schedule_last_success_timestamp_seconds", series)
		return err == nil && status == "False" && v > lastSuccess, nil
	})
	if err != nil {
		t.Fatalf("no recovery after restarting the members (BackupStale: %q): %v", staleMsg, err)
	}
	t.Logf("recovered %s after restarting the members", time.Since(restartedAt).Round(time.Second))
	logScheduleState(t, ctx, r, name, "recovered")
}
