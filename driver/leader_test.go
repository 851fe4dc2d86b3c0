package driver

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

func testElection(identity string) *LeaderElectionConfig {
	return &LeaderElectionConfig{Namespace: "kube-system", Name: DefaultLeaseName, Identity: identity,
		LeaseDuration: 1500 * time.Millisecond, RenewDeadline: time.Second, RetryPeriod: 100 * time.Millisecond}
}

func TestLeaderElectionConfigCheck(t *testing.T) {
	cases := []struct {
		name    string
		mutate  func(*LeaderElectionConfig)
		wantErr string
	}{
		{name: "fine", mutate: func(*LeaderElectionConfig) {}},
		{name: "no identity", mutate: func(c *LeaderElectionConfig) { c.Identity = "" }, wantErr: "identity"},
		{name: "lease not longer than renew", mutate: func(c *LeaderElectionConfig) { c.LeaseDuration = c.RenewDeadline }, wantErr: "-leader-election-lease-duration"},
		{name: "renew too close to retry", mutate: func(c *LeaderElectionConfig) { c.RetryPeriod = c.RenewDeadline }, wantErr: "-leader-election-renew-deadline"},
		{name: "zero retry", mutate: func(c *LeaderElectionConfig) { c.RetryPeriod = 0 }, wantErr: "must be positive"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := testElection("a")
			tc.mutate(c)
			err := c.check()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("check() = %v, want it to mention %q", err, tc.wantErr)
			}
		})
	}
	if _, err := New(Config{LeaderElection: &LeaderElectionConfig{}}); err == nil || !strings.Contains(err.Error(), "leader election") {
		t.Errorf("New with an empty LeaderElection = %v, want the leader election refused", err)
	}
}

// TestRunElectedOneLeaderAtATime runs two replicas against one API: exactly one runs the controllers,
// and when it stops (releasing the Lease) the other takes over.
func TestRunElectedOneLeaderAtATime(t *testing.T) {
	kube := fake.NewClientset()
	var leading, maxLeading atomic.Int32
	var led [2]atomic.Bool
	lead := func(i int) func(context.Context) {
		return func(ctx context.Context) {
			n := leading.Add(1)
			for {
				m := maxLeading.Load()
				if n <= m || maxLeading.CompareAndSwap(m, n) {
					break
				}
			}
			led[i].Store(true)
			<-ctx.Done()
			leading.Add(-1)
		}
	}
	ctxs := make([]context.Context, 2)
	cancels := make([]context.CancelFunc, 2)
	done := make([]chan error, 2)
	for i, id := range []string{"replica-a", "replica-b"} {
		ctxs[i], cancels[i] = context.WithCancel(context.Background())
		defer cancels[i]()
		done[i] = make(chan error, 1)
		go func() { done[i] <- runElected(ctxs[i], kube, testElection(id), lead(i)) }()
	}
	eventually(t, "one replica leading", func() error {
		if leading.Load() != 1 {
			return errors.New("no leader yet")
		}
		return nil
	})
	first := 0
	if led[1].Load() {
		first = 1
	}
	other := 1 - first
	cancels[first]()
	if err := <-done[first]; err != nil {
		t.Fatalf("the leader stopped by its context returned %v, want nil", err)
	}
	eventually(t, "the standby taking over", func() error {
		if !led[other].Load() {
			return errors.New("the standby has not led yet")
		}
		return nil
	})
	if m := maxLeading.Load(); m != 1 {
		t.Fatalf("%d replicas led at once", m)
	}
	lease, err := kube.CoordinationV1().Leases("kube-system").Get(context.Background(), DefaultLeaseName, metav1.GetOptions{})
	if err != nil || !strings.HasPrefix(ptr.Deref(lease.Spec.HolderIdentity, ""), "replica-") || ptr.Deref(lease.Spec.HolderIdentity, "") == []string{"replica-a", "replica-b"}[first] {
		t.Errorf("Lease after the take-over: %+v, %v", lease, err)
	}
}

// TestRunElectedReportsLostLease: a leader that cannot renew its Lease (the API refuses, as when the
// apiserver is unreachable or another holder took it) stops its controllers within the renew deadline
// and returns errLostLease, so the process exits and starts afresh.
func TestRunElectedReportsLostLease(t *testing.T) {
	kube := fake.NewClientset()
	var refuse atomic.Bool
	kube.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if refuse.Load() {
			return true, nil, apierrors.NewServiceUnavailable("apiserver unreachable")
		}
		return false, nil, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stopped atomic.Bool
	done := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		done <- runElected(ctx, kube, testElection("replica-a"), func(ctx context.Context) {
			close(started)
			<-ctx.Done()
			stopped.Store(true)
		})
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("never became leader")
	}
	refuse.Store(true)
	select {
	case err := <-done:
		if !errors.Is(err, errLostLease) {
			t.Fatalf("runElected after losing the Lease = %v, want errLostLease", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the leader did not notice it lost its Lease")
	}
	eventually(t, "the controllers stopped", func() error {
		if !stopped.Load() {
			return errors.New("still running")
		}
		return nil
	})
}
