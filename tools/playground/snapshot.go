package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/driver"
	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
)

// takeSnapshot runs the user workflow on the rig: sample data, the example classes, a
// VolumeGroupSnapshot of the etcd cluster's PVCs, and the driver's record of it. The result is
// returned whenever the VolumeGroupSnapshot exists, so the table shows how far it got.
func takeSnapshot(ctx context.Context, r *rig.Rig, o options) (*result, error) {
	res := &result{name: snapshotName, wrote: o.keys}
	say("writing %d keys under %s into etcd cluster %q (%d members, TLS)", o.keys, sampleKeyPrefix, rig.EtcdClusterName, r.EtcdSet.Members())
	var err error
	if res.wroteRevision, err = r.WriteSampleData(ctx, sampleKeyPrefix, o.keys); err != nil {
		return nil, fmt.Errorf("writing sample data: %w (member logs: %s/etcd-%s-*.log)", err, r.Logs(), rig.EtcdClusterName)
	}
	say("installing the example classes of %s", rig.ExamplesDir)
	if err := r.InstallExampleClasses(ctx); err != nil {
		return nil, fmt.Errorf("installing the example classes: %w", err)
	}

	say("creating VolumeGroupSnapshot %s/%s and waiting for readyToUse (at most %s)", r.Namespace, res.name, o.wait)
	begin := time.Now()
	if _, err := r.CreateGroupSnapshot(ctx, res.name); err != nil {
		return nil, err
	}
	// A record the driver marked Failed is final; stop waiting then rather than at -wait.
	waitCtx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	waitCtx, cancel := context.WithTimeoutCause(waitCtx, o.wait, fmt.Errorf("not readyToUse within %s (-wait)", o.wait))
	defer cancel()
	go func() {
		if failed := failedGroupRecord(waitCtx, r); failed != nil {
			fail(failed)
		}
	}()
	res.vgs, err = r.WaitGroupSnapshotReady(waitCtx, res.name)
	res.took = time.Since(begin)
	if err != nil {
		// The cause says why the wait ended (a failed record or -wait); err what the objects showed.
		if cause := context.Cause(waitCtx); cause != nil && ctx.Err() == nil {
			return res, fmt.Errorf("%w\n%v", cause, err)
		}
		return res, err
	}
	if res.rec, err = r.GroupSnapshotRecord(ctx, res.vgs); err != nil {
		return res, err
	}
	if res.file, err = r.SnapshotFilePath(ctx, res.rec); err != nil {
		return res, err
	}
	return res, nil
}

// driverFailure is a group snapshot record in phase Failed.
type driverFailure struct{ rec *driver.Record }

func (f *driverFailure) Error() string {
	return fmt.Sprintf("the driver failed the snapshot: %v", f.rec.Err())
}

// failedGroupRecord watches the driver's metadata ConfigMaps until a group record is Failed and returns
// it, or nil when ctx ends or the watch fails (the wait for readyToUse goes on regardless). The rig is
// new and holds one VolumeGroupSnapshot, so a failed group record is the playground's.
func failedGroupRecord(ctx context.Context, r *rig.Rig) *driverFailure {
	client := r.Kube.CoreV1().ConfigMaps(rig.DriverNamespace)
	selector := rig.ManagedByLabel + "=" + rig.ManagedByValue
	lw := cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = selector
			return client.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return client.Watch(ctx, o)
		},
	}, r.Kube) // a fake clientset in tests has no streaming lists
	var failed *driverFailure
	watchtools.UntilWithSync(ctx, lw, &corev1.ConfigMap{}, nil, func(ev watch.Event) (bool, error) {
		cm, ok := ev.Object.(*corev1.ConfigMap)
		if !ok || ev.Type == watch.Deleted {
			return false, nil
		}
		var rec driver.Record
		if json.Unmarshal([]byte(cm.Data[rig.RecordKey]), &rec) != nil {
			return false, nil
		}
		if rec.Group && rec.Phase == driver.PhaseFailed {
			failed = &driverFailure{&rec}
			return true, nil
		}
		return false, nil
	})
	return failed
}

// say prints one progress line of the playground.
func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "playground: "+format+"\n", args...)
}
