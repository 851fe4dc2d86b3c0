package driver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/golang/glog"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// DefaultLeaseName is the Lease the driver's replicas elect their leader with.
const DefaultLeaseName = "etcd-snapshot-driver"

// errLostLease ends Run when this replica stops leading: its controllers were cut off mid-work, and a
// fresh process (the Deployment restarts it) starts again from the API's state, as every Kubernetes
// controller manager does.
var errLostLease = errors.New("driver: lost the leader lease")

// LeaderElectionConfig makes the driver's own controllers (Job monitor, dynamic group watch, schedules)
// run only on the replica holding a Lease; every replica serves the CSI services.
type LeaderElectionConfig struct {
	// Namespace and Name of the Lease (coordination.k8s.io/v1).
	Namespace string
	Name      string
	// Identity names this replica in the Lease: unique per process (pod name plus a random suffix).
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's leaderelection timings: a standby
	// takes over at most LeaseDuration after the leader stopped renewing.
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
}

// check refuses timings client-go would panic on, with the flags that set them.
func (c *LeaderElectionConfig) check() error {
	switch {
	case c.Namespace == "" || c.Name == "" || c.Identity == "":
		return errors.New("driver: leader election needs a Lease namespace, name and identity")
	case c.RetryPeriod <= 0 || c.RenewDeadline <= 0 || c.LeaseDuration <= 0:
		return errors.New("driver: -leader-election-lease-duration, -renew-deadline and -retry-period must be positive")
	case c.LeaseDuration <= c.RenewDeadline:
		return fmt.Errorf("driver: -leader-election-lease-duration (%s) must be longer than -leader-election-renew-deadline (%s)", c.LeaseDuration, c.RenewDeadline)
	case float64(c.RenewDeadline) <= leaderelection.JitterFactor*float64(c.RetryPeriod):
		return fmt.Errorf("driver: -leader-election-renew-deadline (%s) must be longer than %.1f times -leader-election-retry-period (%s)", c.RenewDeadline, leaderelection.JitterFactor, c.RetryPeriod)
	}
	return nil
}

// runElected campaigns for the Lease until ctx ends and runs lead while this replica holds it. It
// returns errLostLease once leadership, having been held, is lost, and nil when ctx ends first.
func runElected(ctx context.Context, kube kubernetes.Interface, c *LeaderElectionConfig, lead func(context.Context)) error {
	lost := make(chan struct{})
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: c.Namespace, Name: c.Name},
			Client:     kube.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: c.Identity},
		},
		LeaseDuration:   c.LeaseDuration,
		RenewDeadline:   c.RenewDeadline,
		RetryPeriod:     c.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            c.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				glog.Infof("Leading (Lease %s/%s as %s): starting the driver's controllers", c.Namespace, c.Name, c.Identity)
				leader.Set(1)
				lead(ctx)
			},
			OnStoppedLeading: func() {
				leader.Set(0)
				close(lost)
			},
			OnNewLeader: func(identity string) {
				if identity != c.Identity {
					glog.Infof("Lease %s/%s is held by %s; standing by (the CSI services stay up)", c.Namespace, c.Name, identity)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("driver: leader election: %w", err)
	}
	elector.Run(ctx)
	select {
	case <-lost:
		if ctx.Err() == nil {
			return errLostLease
		}
	default:
	}
	return nil
}
