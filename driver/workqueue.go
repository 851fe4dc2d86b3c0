package driver

import (
	"context"
	"errors"
	"time"

	"github.com/golang/glog"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// processNextKey is the one worker step of the driver's controllers (Job monitor, dynamic group
// watch, schedules, sweeper): it takes a key off q and hands it to sync. Success forgets the key's
// failures and, when sync asks (after > 0), looks at the key again after that long. An error retries
// it with the queue's backoff, logged at V(4) when it only means "not yet" (one of quiet), else as a
// warning. It returns false once q is shut down.
func processNextKey(ctx context.Context, q workqueue.TypedRateLimitingInterface[string], what string,
	sync func(context.Context, string) (time.Duration, error), quiet ...error) bool {
	key, shutdown := q.Get()
	if shutdown {
		return false
	}
	defer q.Done(key)
	after, err := sync(ctx, key)
	switch {
	case err == nil:
		q.Forget(key)
		if after > 0 {
			q.AddAfter(key, after)
		}
	case isAnyOf(err, quiet):
		glog.V(4).Infof("%s %s: %v; retrying", what, key, err)
		q.AddRateLimited(key)
	default:
		// API trouble: keep trying with backoff, as any controller would.
		glog.Warningf("%s %s: %v; retrying", what, key, err)
		q.AddRateLimited(key)
	}
	return true
}

func isAnyOf(err error, targets []error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// runController is the Run of a queue-driven controller: start (event recording, informers, cache
// sync), then workers running worker until ctx ends. It returns nil on cancellation and start's error
// otherwise; the queue is shut down on return.
func runController(ctx context.Context, q workqueue.TypedRateLimitingInterface[string], name, watching string, workers int,
	start func(context.Context) error, worker func(context.Context)) error {
	defer q.ShutDown()
	if err := start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	glog.V(2).Infof("%s: watching %s", name, watching)
	for range workers {
		go wait.UntilWithContext(ctx, worker, time.Second)
	}
	<-ctx.Done()
	glog.V(2).Infof("%s: stopped", name)
	return nil
}

// noRequeue adapts a sync that never asks to be looked at again by time.
func noRequeue(sync func(context.Context, string) error) func(context.Context, string) (time.Duration, error) {
	return func(ctx context.Context, key string) (time.Duration, error) { return 0, sync(ctx, key) }
}

// keyWorker is the worker loop of a controller: processNextKey until q shuts down.
func keyWorker(q workqueue.TypedRateLimitingInterface[string], what string,
	sync func(context.Context, string) (time.Duration, error), quiet ...error) func(context.Context) {
	return func(ctx context.Context) {
		for processNextKey(ctx, q, what, sync, quiet...) {
		}
	}
}

// enqueueKey queues obj (or a deletion tombstone's object) by its namespace/name key.
func enqueueKey(q workqueue.TypedRateLimitingInterface[string], what string, obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		glog.Errorf("%s: cannot queue %T: %v", what, obj, err)
		return
	}
	q.Add(key)
}
