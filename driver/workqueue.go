package driver

import (
	"context"
	"errors"
	"time"

	"github.com/golang/glog"
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

// noRequeue adapts a sync that never asks to be looked at again by time.
func noRequeue(sync func(context.Context, string) error) func(context.Context, string) (time.Duration, error) {
	return func(ctx context.Context, key string) (time.Duration, error) { return 0, sync(ctx, key) }
}
