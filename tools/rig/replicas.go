package rig

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
)

// The rig's leader election timings, for the driver's Lease and the sidecars': short, so a test that
// kills a leader sees the standby take over within seconds (the shipped defaults are 15s, 10s, 2s).
const (
	rigLeaseDuration = "4s"
	rigRenewDeadline = "3s"
	rigRetryPeriod   = "500ms"
)

// driverReplica is one pod of the driver's Deployment as the rig runs it: the driver and its
// csi-snapshotter on a socket of their own.
type driverReplica struct {
	index       int
	driver      *process
	snapshotter *process
	socket      string
	httpAddr    string
	sidecarAddr string
}

// replicaPodName is the pod name replica i has in the driver's Lease (POD_NAME).
func replicaPodName(i int) string { return fmt.Sprintf("etcd-snapshot-driver-%d", i) }

// DriverReplicas is how many driver replicas run (Options.DriverReplicas).
func (r *Rig) DriverReplicas() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.replicas)
}

func (r *Rig) replica(i int) (*driverReplica, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i < 0 || i >= len(r.replicas) {
		return nil, fmt.Errorf("rig: no driver replica %d (%d running)", i, len(r.replicas))
	}
	return r.replicas[i], nil
}

// KillDriverReplica kills replica i's driver with SIGKILL, like a crashed pod; its sidecar exits at its
// next call and is started again, waiting for the socket.
func (r *Rig) KillDriverReplica(i int) error {
	rep, err := r.replica(i)
	if err != nil {
		return err
	}
	rep.driver.kill()
	return nil
}

// StartDriverReplica starts replica i's driver again after KillDriverReplica and waits until it is
// ready (as a standby it serves CSI, but its sidecar does not lead).
func (r *Rig) StartDriverReplica(i int) error {
	rep, err := r.replica(i)
	if err != nil {
		return err
	}
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return fmt.Errorf("rig: stopped")
	}
	err = rep.driver.start()
	r.mu.Unlock()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.life, 2*time.Minute)
	defer cancel()
	return r.waitReplicaReady(ctx, rep)
}

// DriverReplicaRunning reports whether replica i's driver process is alive.
func (r *Rig) DriverReplicaRunning(i int) bool {
	rep, err := r.replica(i)
	if err != nil {
		return false
	}
	alive, _ := rep.driver.running()
	return alive
}

// LeaderReplica returns the replica holding the driver's leader Lease (driver.DefaultLeaseName), or an
// error while no live replica holds it.
func (r *Rig) LeaderReplica(ctx context.Context) (int, error) {
	lease, err := r.Kube.CoordinationV1().Leases(DriverNamespace).Get(ctx, driver.DefaultLeaseName, metav1.GetOptions{})
	if err != nil {
		return -1, fmt.Errorf("rig: leader Lease: %w", err)
	}
	holder := ptr.Deref(lease.Spec.HolderIdentity, "")
	pod, _, _ := strings.Cut(holder, "_")
	i, err := strconv.Atoi(strings.TrimPrefix(pod, "etcd-snapshot-driver-"))
	if err != nil || !strings.HasPrefix(pod, "etcd-snapshot-driver-") {
		return -1, fmt.Errorf("rig: leader Lease held by %q, not a rig replica", holder)
	}
	if _, err := r.replica(i); err != nil {
		return -1, err
	}
	return i, nil
}

// DriverPIDs are the process ids of the driver replicas, by replica index (0 for one not running).
func (r *Rig) DriverPIDs() []int {
	r.mu.Lock()
	reps := append([]*driverReplica(nil), r.replicas...)
	r.mu.Unlock()
	pids := make([]int, len(reps))
	for i, rep := range reps {
		if alive, _ := rep.driver.running(); alive {
			pids[i] = rep.driver.pid()
		}
	}
	return pids
}
