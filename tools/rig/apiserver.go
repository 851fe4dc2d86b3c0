package rig

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// RestartAPIServer stops kube-apiserver as a control-plane upgrade or a crash-looping host does
// (SIGTERM, SIGKILL after a grace period), keeps it down for down, and starts it again with the same
// flags, port, certificates and etcd (so every object and resourceVersion survives). It returns once
// the apiserver answers /readyz and enforces the admission policies of manifests/ again. Every other
// component reconnects by itself, as in a cluster; down is how long they see connections refused.
func (r *Rig) RestartAPIServer(ctx context.Context, down time.Duration) error {
	r.mu.Lock()
	p, stopped := r.apiserver, r.stopped
	r.mu.Unlock()
	if p == nil {
		return errors.New("rig: no kube-apiserver to restart")
	}
	if stopped {
		return errors.New("rig: stopped")
	}
	begin := time.Now()
	p.stop(stopGrace)
	stoppedAt := time.Now()
	select {
	case <-time.After(down):
	case <-ctx.Done():
		return fmt.Errorf("rig: kube-apiserver left stopped: %w", ctx.Err())
	}
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return errors.New("rig: stopped while kube-apiserver was down")
	}
	err := p.start()
	r.mu.Unlock()
	if err != nil {
		return err
	}
	if err := r.waitAPIServerReady(ctx, p); err != nil {
		return err
	}
	if err := r.waitAdmissionEnforced(ctx); err != nil {
		return err
	}
	r.logf("rig: kube-apiserver restarted (stopping took %s, down %s in all)",
		stoppedAt.Sub(begin).Round(100*time.Millisecond), time.Since(stoppedAt).Round(100*time.Millisecond))
	return nil
}
