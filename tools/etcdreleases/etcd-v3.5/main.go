// Command etcd-v3.5 writes testdata/etcd-v3.5.snapshot.db with the etcd release its go.mod pins; see
// tools/etcdreleases/regenerate.
package main

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"
	"go.uber.org/zap"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/etcdreleases"
)

func main() {
	// etcd v3.5's client has no SaveWithVersion; its server reports no storage version.
	etcdreleases.Main(func(ctx context.Context, lg *zap.Logger, cfg clientv3.Config, path string) (string, error) {
		return "", snapshot.Save(ctx, lg, cfg, path)
	})
}
