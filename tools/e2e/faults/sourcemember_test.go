package faults

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

const (
	testTimeout  = 8 * time.Minute
	pollInterval = 250 * time.Millisecond

	// The database: large enough that `etcdctl snapshot save` takes seconds, so the kill lands
	// inside it. Values of 1 MiB stay below etcd's default --max-request-bytes (1.5 MiB).
	dbValues     = 256
	dbValueBytes = 1 << 20
	dbQuota      = 2 << 30
	// killAt is how much of the file etcdctl must have written when the member is killed.
	killAt = 32 << 20
)

func TestMain(m *testing.M) { rig.Main(m) }

// TestE2ESourceMemberKilledMidSave fills a 3-member etcd StatefulSet with about 256 MiB, asks for a
// group snapshot, and kills (SIGKILL) the member being saved from as soon as `etcdctl snapshot save`
// has written part of its file. The save fails; the Job retries it (backoffLimit) against the same
// member, whose container the pod runner restarts as the kubelet does; and the snapshot becomes ready
// from that member. The record names it, every attempt of the Job saved from its endpoint, and the
// file on the snapshot PVC is complete: its sha256 is the record's, and etcdutl reads the record's
// revision and every key written from it.
func TestE2ESourceMemberKilledMidSave(t *testing.T) {
	r := rig.ForTestWithOptions(t, rig.Options{EtcdStatefulSet: true, EtcdArgs: []string{fmt.Sprintf("--quota-backend-bytes=%d", dbQuota)}})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	s := r.EtcdSet
	if err := s.InstallSnapshotClasses(ctx); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if err := fillDB(ctx, s, "/e2e-killed-mid-save/", dbValues, dbValueBytes); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d MiB in %s", dbValues*dbValueBytes>>20, time.Since(begin).Round(100*time.Millisecond))

	jobs, err := r.WatchSnapshotJobs(ctx, s.Namespace())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(jobs.Stop)
	const name = "e2e-killed-mid-save"
	if _, err := s.CreateGroupSnapshot(ctx, name); err != nil {
		t.Fatal(err)
	}
	job, err := jobs.WaitFirst(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	id := job.Labels[rig.SnapshotIDLabel]

	// The member the driver chose, and the moment its save has started writing.
	pending, err := r.SnapshotRecord(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if pending.SourceMember == nil {
		t.Fatalf("record %s names no source member", id)
	}
	source := -1
	for i := range s.Members() {
		if s.MemberName(i) == pending.SourceMember.Name {
			source = i
		}
	}
	if source < 0 || pending.SourceMember.Endpoint != s.ClientURLs()[source] {
		t.Fatalf("record %s saves from %s (%s), not a member of %v", id, pending.SourceMember.Name, pending.SourceMember.Endpoint, s.ClientURLs())
	}
	partial, err := waitPartialFile(ctx, r, pending)
	if err != nil {
		t.Fatal(err)
	}
	_, restarts, err := s.KillMember(ctx, source)
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("killed %s while %s had %d of about %d MiB", pending.SourceMember.Name, filepath.Base(partial.path), partial.size>>20, dbValues*dbValueBytes>>20)

	vgs, err := r.WaitGroupSnapshotReadyIn(ctx, s.Namespace(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("readyToUse %s after the kill", time.Since(killed).Round(100*time.Millisecond))
	if err := s.WaitMemberRestarted(ctx, source, restarts); err != nil {
		t.Errorf("the killed member: %v", err)
	}
	rec, err := r.GroupSnapshotRecord(ctx, vgs)
	if err != nil {
		t.Fatal(err)
	}
	if rec.ID != id || rec.Phase != driver.PhaseReady || rec.SourceMember == nil {
		t.Fatalf("record %s: phase %s, source member %+v; want %s Ready", rec.ID, rec.Phase, rec.SourceMember, id)
	}
	if rec.SourceMember.Name != pending.SourceMember.Name || rec.SourceMember.Endpoint != pending.SourceMember.Endpoint {
		t.Errorf("record names %s (%s), the Job saved from %s (%s)", rec.SourceMember.Name, rec.SourceMember.Endpoint, pending.SourceMember.Name, pending.SourceMember.Endpoint)
	}
	checkAttempts(t, ctx, r, rec)
	checkFile(t, ctx, r, rec, dbValues)
	if uids := jobs.UIDs(id); len(uids) != 1 {
		t.Errorf("Job UIDs seen for %s: %v, want one", id, uids)
	}
}

// fillDB writes n values of size bytes under prefix, four writers at once.
func fillDB(ctx context.Context, s *rig.EtcdStatefulSet, prefix string, n, size int) error {
	cli, err := s.Client()
	if err != nil {
		return err
	}
	defer cli.Close()
	const writers = 4
	errs := make([]error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n && errs[w] == nil; i += writers {
				// Distinct values: a page of one must not be a page of another.
				v := strings.Repeat(fmt.Sprintf("%08d", i), size/8)
				if _, err := cli.Put(ctx, fmt.Sprintf("%s%06d", prefix, i), v); err != nil {
					errs[w] = fmt.Errorf("write %s%06d: %w", prefix, i, err)
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

type partialFile struct {
	path string
	size int64
}

// waitPartialFile waits until etcdctl's "<snapshot file>.part" on the snapshot PVC of rec holds at
// least killAt bytes, and fails if the whole file is there first (the save was too quick to be cut).
func waitPartialFile(ctx context.Context, r *rig.Rig, rec *driver.Record) (partialFile, error) {
	var out partialFile
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		file, err := r.SnapshotFilePath(ctx, rec)
		if err != nil {
			return false, nil // the PVC is not bound yet
		}
		if _, err := os.Stat(file); err == nil {
			return false, fmt.Errorf("%s is complete already: the save was over before the member could be killed", file)
		}
		st, err := os.Stat(file + ".part")
		if err != nil || st.Size() < killAt {
			return false, nil
		}
		out = partialFile{path: file + ".part", size: st.Size()}
		return true, nil
	})
	if err != nil {
		return out, fmt.Errorf("the save of %s never started writing: %w", rec.ID, err)
	}
	return out, nil
}

// Names of the snapshot Job's init containers (driver/job.go).
const (
	prepareContainer = "prepare"
	saveContainer    = "save"
)

// checkAttempts checks that the save was cut and retried, and that every attempt saved from the
// member the record names: the pods of the Job, their save container's exit codes and arguments.
func checkAttempts(t *testing.T, ctx context.Context, r *rig.Rig, rec *driver.Record) {
	t.Helper()
	pods, err := r.Kube.CoreV1().Pods(rec.Namespace).List(ctx, metav1.ListOptions{LabelSelector: rig.SnapshotIDLabel + "=" + rec.ID})
	if err != nil {
		t.Fatal(err)
	}
	failed, succeeded := 0, 0
	for _, p := range pods.Items {
		for _, c := range p.Spec.InitContainers {
			if c.Name == saveContainer && !slices.Contains(c.Args, "--endpoints="+rec.SourceMember.Endpoint) {
				t.Errorf("pod %s: container %s saves with %v, not from %s", p.Name, c.Name, c.Args, rec.SourceMember.Endpoint)
			}
		}
		for _, cs := range p.Status.InitContainerStatuses {
			term := cs.State.Terminated
			if cs.Name == prepareContainer {
				// Every attempt starts by clearing what the one before left; it must never fail.
				if term != nil && term.ExitCode != 0 {
					t.Errorf("pod %s: prepare exited %d: %s", p.Name, term.ExitCode, lastLine(term.Message))
				}
				continue
			}
			if cs.Name != saveContainer {
				continue
			}
			if term != nil {
				if term.ExitCode == 0 {
					succeeded++
				} else {
					failed++
					t.Logf("attempt %s: save exited %d: %s", p.Name, term.ExitCode, lastLine(term.Message))
				}
			}
		}
	}
	if failed == 0 || succeeded != 1 {
		t.Errorf("%d pods of Job %s: %d saves failed, %d succeeded; want the cut one failed and one retry succeeded", len(pods.Items), rec.ID, failed, succeeded)
	}
}

// checkFile compares the snapshot file with the record and reads it with etcdutl, the real tool: the
// same sha256 and size, the record's revision, and at least the keys written.
func checkFile(t *testing.T, ctx context.Context, r *rig.Rig, rec *driver.Record, keys int) {
	t.Helper()
	file, err := r.SnapshotFilePath(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	n, err := rig.CheckSnapshotFile(file, rec)
	if err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(file + ".part"); !os.IsNotExist(err) {
		t.Errorf("a partial file is left beside the snapshot: %v", err)
	}
	st, err := rig.EtcdutlSnapshotStatus(ctx, r.BinDir, file)
	if err != nil {
		t.Fatal(err)
	}
	if st.Revision != rec.Revision || st.TotalKey < int64(keys) {
		t.Errorf("etcdutl reads revision %d and %d keys from %s; the record says revision %d, and %d keys were written", st.Revision, st.TotalKey, file, rec.Revision, keys)
	}
	t.Logf("snapshot file: %d MiB, revision %d, %d keys (etcdutl)", n>>20, st.Revision, st.TotalKey)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
