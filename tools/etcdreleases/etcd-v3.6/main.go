// Command etcd-v3.6 writes testdata/etcd-v3.6.snapshot.db with the etcd release its go.mod pins; see
// tools/etcdreleases/regenerate.
package main

import (
	"go.etcd.io/etcd/client/v3/snapshot"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/etcdreleases"
)

func main() {
	etcdreleases.Main(snapshot.SaveWithVersion)
}
