package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etcd-snapshot-driver/etcd-snapshot-driver/tools/rig"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The fill writes objects shaped like a Kubernetes API server's: keys /registry/<resource>/<ns>/<name>,
// JSON values with repetitive metadata and managedFields (compressible, as real objects are) and a
// data part that is partly random, so that no two values are alike and nothing compresses to nothing.
const (
	// fillBatchBytes and fillBatchOps keep a transaction below etcd's default --max-request-bytes
	// (1.5 MiB) and --max-txn-ops (128).
	fillBatchBytes = 1 << 20
	fillBatchOps   = 100
	fillWriters    = 4
	// FillPrefix is where the benchmark's objects live in the cluster under test.
	fillPrefix = "/registry/"
)

var fillResources = []string{"configmaps", "secrets", "pods", "events", "leases", "deployments", "services", "endpointslices"}

var fillWords = strings.Fields(`kubernetes io app name component instance part-of managed-by version controller
	revision hash template spec status metadata labels annotations container image pull policy always
	resources requests limits cpu memory ephemeral storage volume mount path readonly secret config map
	service account token node selector affinity toleration effect schedule priority restart policy
	termination grace period seconds dns cluster first host network ready condition transition reason`)

// objectGen makes the fill's keys and values; each writer has its own.
type objectGen struct {
	rnd *rand.Rand
	buf strings.Builder
}

func newObjectGen(seed uint64) *objectGen {
	return &objectGen{rnd: rand.New(rand.NewPCG(seed, seed*0x9e3779b97f4a7c15+1))}
}

// next returns the key and value of object i: values from about 500 bytes to 12 KiB, 3 KiB on average.
func (g *objectGen) next(i int64) (string, string) {
	res := fillResources[i%int64(len(fillResources))]
	ns := "ns-" + strconv.Itoa(int(i/977%200))
	name := fmt.Sprintf("%s-%s-%08d", strings.TrimSuffix(res, "s"), fillWords[g.rnd.IntN(len(fillWords))], i)
	key := fillPrefix + res + "/" + ns + "/" + name

	// Mostly small objects with a tail of large ones, as in a real cluster.
	dataLen := 200 + g.rnd.IntN(1800)
	if g.rnd.IntN(8) == 0 {
		dataLen = 4000 + g.rnd.IntN(8000)
	}
	b := &g.buf
	b.Reset()
	fmt.Fprintf(b, `{"kind":"%s","apiVersion":"v1","metadata":{"name":"%s","namespace":"%s","uid":"%08x-%04x-%04x-%04x-%012x",`,
		res, name, ns, g.rnd.Uint32(), g.rnd.Uint32()&0xffff, g.rnd.Uint32()&0xffff, g.rnd.Uint32()&0xffff, g.rnd.Uint64()&0xffffffffffff)
	fmt.Fprintf(b, `"resourceVersion":"%d","creationTimestamp":"%s","labels":{"app.kubernetes.io/name":"%s","app.kubernetes.io/instance":"%s"},`,
		1000+i, time.Unix(1700000000+i, 0).UTC().Format(time.RFC3339), fillWords[g.rnd.IntN(len(fillWords))], ns)
	b.WriteString(`"managedFields":[{"manager":"kube-controller-manager","operation":"Update","apiVersion":"v1","fieldsType":"FieldsV1","fieldsV1":{"f:metadata":{"f:labels":{".":{},"f:app.kubernetes.io/name":{}}}}}]},"data":{"payload":"`)
	for b.Len() < dataLen {
		if g.rnd.IntN(4) == 0 {
			fmt.Fprintf(b, "%016x", g.rnd.Uint64())
		} else {
			b.WriteString(fillWords[g.rnd.IntN(len(fillWords))])
			b.WriteByte(' ')
		}
	}
	b.WriteString(`"}}`)
	return key, b.String()
}

// fill writes objects until size bytes of keys and values are in the cluster and returns how many.
func fill(ctx context.Context, cli *clientv3.Client, size int64, progress func(string, ...any)) (int64, error) {
	var (
		written atomic.Int64 // bytes
		next    atomic.Int64 // object index
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	begin := time.Now()
	stop := rig.Heartbeat(10*time.Second, func() {
		progress("fill: %s of %s written (%.0f MB/s)", mib(written.Load()), mib(size), float64(written.Load())/1e6/time.Since(begin).Seconds())
	})
	for w := range fillWriters {
		wg.Go(func() {
			gen := newObjectGen(uint64(w) + 1)
			for written.Load() < size && ctx.Err() == nil {
				var ops []clientv3.Op
				batch := 0
				for len(ops) < fillBatchOps && batch < fillBatchBytes-16<<10 && written.Load()+int64(batch) < size {
					k, v := gen.next(next.Add(1) - 1)
					ops = append(ops, clientv3.OpPut(k, v))
					batch += len(k) + len(v)
				}
				if len(ops) == 0 {
					return
				}
				tctx, tcancel := context.WithTimeout(ctx, time.Minute)
				_, err := cli.Txn(tctx).Then(ops...).Commit()
				tcancel()
				if err != nil {
					errOnce.Do(func() { first = fmt.Errorf("fill: writing %d objects: %w", len(ops), err); cancel() })
					return
				}
				written.Add(int64(batch))
			}
		})
	}
	wg.Wait()
	stop()
	if first != nil {
		return 0, first
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	progress("fill: %s in %d objects in %s (%.0f MB/s)", mib(written.Load()), next.Load(), time.Since(begin).Round(time.Second),
		float64(written.Load())/1e6/time.Since(begin).Seconds())
	return next.Load(), nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
