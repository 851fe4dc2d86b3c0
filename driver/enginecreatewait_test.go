package driver

import (
	"context"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// awaitAsync runs AwaitFinished on rec in the background and returns where its answer arrives.
func awaitAsync(ctx context.Context, e *Engine, rec *Record) <-chan *Record {
	out := make(chan *Record, 1)
	go func() { out <- e.AwaitFinished(ctx, rec) }()
	return out
}

// A Create whose Job finishes within the wait answers with the Ready record, as soon as it is Ready.
func TestAwaitFinishedAnswersReadyWhenTheJobFinishes(t *testing.T) {
	tc := startTestCluster(t, 3)
	kube := newFakeAPI(t, etcdWorld(t, tc)...)
	f := startFixtureEngineWith(t, kube, func(c *EngineConfig) { c.CreateWait = time.Minute })
	rec, err := f.engine.Create(f.ctx, groupRequest(tc, "groupsnapshot-await"))
	if err != nil || rec.Phase != PhaseRunning {
		t.Fatalf("Create = %+v, %v; want Running", rec, err)
	}
	answer := awaitAsync(f.ctx, f.engine, rec)
	select {
	case got := <-answer:
		t.Fatalf("AwaitFinished answered %s before the Job finished", got.Phase)
	case <-time.After(300 * time.Millisecond):
	}
	result := takeVerifiedSnapshot(t, tc)
	finished := time.Now()
	f.finishJob(rec.ID, rec.ID+"-abcde", succeededPod(t, result), batchv1.JobCondition{Type: batchv1.JobComplete})
	select {
	case got := <-answer:
		if got.Phase != PhaseReady || got.SHA256 != result.SHA256 || !got.ReadyToUse() {
			t.Fatalf("AwaitFinished = %+v; want the Ready record of sha256 %s", got, result.SHA256)
		}
		if took := time.Since(finished); took > 10*time.Second {
			t.Errorf("AwaitFinished answered %s after the Job finished; want at once", took)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("AwaitFinished did not answer after the record turned Ready")
	}
}

// A Job that outlasts the wait gets the Running record after the wait, as a Create without one would.
func TestAwaitFinishedGivesUpAfterTheWait(t *testing.T) {
	tc := startTestCluster(t, 3)
	kube := newFakeAPI(t, etcdWorld(t, tc)...)
	const wait = 400 * time.Millisecond
	f := startFixtureEngineWith(t, kube, func(c *EngineConfig) { c.CreateWait = wait })
	rec, err := f.engine.Create(f.ctx, groupRequest(tc, "groupsnapshot-await-long"))
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	got := f.engine.AwaitFinished(f.ctx, rec)
	took := time.Since(begin)
	if got.Phase != PhaseRunning || got.ReadyToUse() {
		t.Fatalf("AwaitFinished = %+v; want Running", got)
	}
	if took < wait || took > wait+5*time.Second {
		t.Errorf("AwaitFinished took %s; want about %s", took, wait)
	}

	// The caller's own deadline ends the wait too (the sidecar's CSI timeout).
	ctx, cancel := context.WithTimeout(f.ctx, 50*time.Millisecond)
	defer cancel()
	begin = time.Now()
	if got := <-awaitAsync(ctx, f.engine, rec); got.Phase != PhaseRunning || time.Since(begin) > wait {
		t.Errorf("AwaitFinished under a 50ms deadline = %s after %s; want Running before the %s wait", got.Phase, time.Since(begin), wait)
	}
}

// Without a wait, and for records that are not Running, the answer is the record given.
func TestAwaitFinishedAnswersAtOnce(t *testing.T) {
	tc := startTestCluster(t, 3)
	kube := newFakeAPI(t, etcdWorld(t, tc)...)
	f := startFixtureEngine(t, kube)
	rec, err := f.engine.Create(f.ctx, groupRequest(tc, "groupsnapshot-nowait"))
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	if got := f.engine.AwaitFinished(f.ctx, rec); got != rec || time.Since(begin) > time.Second {
		t.Errorf("AwaitFinished without CreateWait = %+v after %s; want the record given, at once", got, time.Since(begin))
	}
	f2 := startFixtureEngineWith(t, kube, func(c *EngineConfig) { c.CreateWait = time.Minute })
	for _, phase := range []Phase{PhasePending, PhaseReady, PhaseFailed} {
		r := *rec
		r.Phase = phase
		begin := time.Now()
		if got := f2.engine.AwaitFinished(f2.ctx, &r); got != &r || time.Since(begin) > time.Second {
			t.Errorf("AwaitFinished of a %s record = %+v after %s; want it back at once", phase, got, time.Since(begin))
		}
	}
}

// The record turning Ready through another process (the replica that leads and follows the Job)
// reaches the wait through the metadata cache.
func TestAwaitFinishedSeesAnotherReplicasWrite(t *testing.T) {
	tc := startTestCluster(t, 3)
	kube := newFakeAPI(t, etcdWorld(t, tc)...)
	f := startFixtureEngineWith(t, kube, func(c *EngineConfig) { c.CreateWait = time.Minute })
	rec, err := f.engine.Create(f.ctx, groupRequest(tc, "groupsnapshot-await-replica"))
	if err != nil {
		t.Fatal(err)
	}
	answer := awaitAsync(f.ctx, f.engine, rec)
	time.Sleep(200 * time.Millisecond)
	cm, err := f.admin.CoreV1().ConfigMaps(fxMetaNS).Get(f.ctx, rec.ID, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := decodeRecord(cm)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	other.Phase, other.ReadyAt, other.SHA256, other.SizeBytes = PhaseReady, &now, "ab", 42
	next, err := encodeRecord(fxMetaNS, other)
	if err != nil {
		t.Fatal(err)
	}
	next.ResourceVersion = cm.ResourceVersion
	if _, err := f.admin.CoreV1().ConfigMaps(fxMetaNS).Update(f.ctx, next, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-answer:
		if got.Phase != PhaseReady || got.SHA256 != "ab" {
			t.Fatalf("AwaitFinished = %+v; want the other replica's Ready record", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("AwaitFinished did not see the record turn Ready in the cache")
	}
}

// AwaitFinished is called with Create's Running record while the informer cache may still hold the
// Pending one Create wrote before it (the cache trails the API server). A record never goes back from
// Running to Pending, so the wait goes on until the record is Ready or Failed.
func TestAwaitFinishedWaitsThroughAStalePendingCache(t *testing.T) {
	tc := startTestCluster(t, 3)
	kube := newFakeAPI(t, etcdWorld(t, tc)...)
	f := startFixtureEngineWith(t, kube, func(c *EngineConfig) { c.CreateWait = time.Minute })
	rec, err := f.engine.Create(f.ctx, groupRequest(tc, "groupsnapshot-await-stale"))
	if err != nil || rec.Phase != PhaseRunning {
		t.Fatalf("Create = %+v, %v; want a Running record", rec, err)
	}
	// Make the cache show the record as Pending, as it did between Create's two writes.
	update := func(mutate func(*Record)) {
		t.Helper()
		cm, err := f.admin.CoreV1().ConfigMaps(fxMetaNS).Get(f.ctx, rec.ID, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := decodeRecord(cm)
		if err != nil {
			t.Fatal(err)
		}
		mutate(r)
		next, err := encodeRecord(fxMetaNS, r)
		if err != nil {
			t.Fatal(err)
		}
		next.ResourceVersion = cm.ResourceVersion
		if _, err := f.admin.CoreV1().ConfigMaps(fxMetaNS).Update(f.ctx, next, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	update(func(r *Record) { r.Phase = PhasePending })
	deadline := time.Now().Add(30 * time.Second)
	for {
		cur, err := f.engine.meta.get(f.ctx, rec.ID)
		if err == nil && cur != nil && cur.Phase == PhasePending {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cache never showed the Pending record: %+v, %v", cur, err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	answer := awaitAsync(f.ctx, f.engine, rec)
	now := time.Now().UTC()
	update(func(r *Record) { r.Phase, r.ReadyAt, r.SHA256, r.SizeBytes = PhaseReady, &now, "ab", 42 })
	select {
	case got := <-answer:
		if got.Phase != PhaseReady || got.SHA256 != "ab" {
			t.Fatalf("AwaitFinished = %s record; want the Ready one (a Pending cache entry is stale once Create answered Running)", got.Phase)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("AwaitFinished did not see the record turn Ready in the cache")
	}
}
