package driver

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const csiTestDriverName = "etcd-snapshot.csi.io"

// fixture is the engine under a test, over a fake API server that refuses what the driver's RBAC
// refuses: either the Engine alone (newEngineFixture, startFixtureEngine), or the Driver that holds
// it, running its real Run (gRPC on a unix socket, HTTP on a loopback port) with gRPC clients
// connected through the socket (startCSI).
type fixture struct {
	t *testing.T
	// kube is the driver's client: its Actions() are the driver's calls alone.
	kube *fake.Clientset
	// admin is the rest of the cluster (the test, controllers, users) on the same objects, unrestricted.
	admin  *fake.Clientset
	engine *Engine
	ctx    context.Context
	cancel context.CancelFunc

	// The rest is set by startCSI only.
	driver   *Driver
	socket   string
	httpURL  string
	conn     *grpc.ClientConn
	identity csi.IdentityClient
	group    csi.GroupControllerClient
	ctrl     csi.ControllerClient
	runErr   chan error
	stopped  sync.Once
}

// fixtureOption adjusts a fixture's fake API server before its driver runs.
type fixtureOption func(*fixture)

// withKubeReactor prepends a reactor to the fake clientset before the driver starts.
func withKubeReactor(verb, resource string, fn k8stesting.ReactionFunc) fixtureOption {
	return func(f *fixture) { f.kube.PrependReactor(verb, resource, fn) }
}

// hangMetadataList makes the metadata informer's first list hang, as against an unreachable API
// server, until unblock is called (or 30s pass, or t ends).
func hangMetadataList(t *testing.T) (hang fixtureOption, unblock func()) {
	release := make(chan struct{})
	var once sync.Once
	unblock = func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	return withKubeReactor("list", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		select {
		case <-release:
		case <-time.After(30 * time.Second):
		}
		return false, nil, nil
	}), unblock
}

// fixtureEngineConfig is the engine configuration of every fixture, over kube.
func fixtureEngineConfig(kube *fake.Clientset) EngineConfig {
	return EngineConfig{
		Kube: kube, MetadataNamespace: fxMetaNS, ClusterLabel: fxClusterLabel,
		EtcdImage: fxEtcdImage, DriverImage: fxDriverImage, HealthTimeout: 15 * time.Second,
	}
}

// newFakeAPI is a fake API server holding objs that refuses what the driver's RBAC refuses
// (fakeapi_test.go); starting a fixture on it adds resourceVersions, after the test's own reactors.
func newFakeAPI(t *testing.T, objs ...runtime.Object) *fake.Clientset {
	kube := fake.NewClientset(objs...)
	enforceDriverRBAC(t, kube)
	return kube
}

// newEngineFixture starts an Engine over a fake clientset holding objs, limited to the driver's RBAC.
func newEngineFixture(t *testing.T, objs ...runtime.Object) *fixture {
	t.Helper()
	return startFixtureEngine(t, newFakeAPI(t, objs...))
}

// startFixtureEngine starts a (new) Engine over an existing fake clientset, as a restarted driver would.
func startFixtureEngine(t *testing.T, kube *fake.Clientset) *fixture {
	t.Helper()
	return startFixtureEngineWith(t, kube, nil)
}

// startFixtureEngineWith is startFixtureEngine with the engine configuration adjusted by tweak.
func startFixtureEngineWith(t *testing.T, kube *fake.Clientset, tweak func(*EngineConfig)) *fixture {
	t.Helper()
	cfg := fixtureEngineConfig(kube)
	if tweak != nil {
		tweak(&cfg)
	}
	e, err := NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	enforceResourceVersions(kube, kube.Tracker())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, kube: kube, admin: adminClient(kube), engine: e, ctx: ctx, cancel: cancel}
}

// startEngineWithEtcd runs a 3-member TLS etcd cluster and an Engine whose fake Kubernetes holds the
// cluster's world (etcdWorld).
func startEngineWithEtcd(t *testing.T) (*fixture, *testCluster) {
	t.Helper()
	tc := startTestCluster(t, 3)
	return newEngineFixture(t, etcdWorld(t, tc)...), tc
}

// create is Engine.Create that fails the test on an error.
func (f *fixture) create(req SnapshotRequest) *Record {
	f.t.Helper()
	rec, err := f.engine.Create(f.ctx, req)
	if err != nil {
		f.t.Fatal(err)
	}
	return rec
}

// csiConfig is a valid Config for a driver serving on socket over kube.
func csiConfig(socket string, kube *fake.Clientset) Config {
	engine := fixtureEngineConfig(kube)
	// The records these tests store are dated long ago (listRecord): the sweeper, tested on its own
	// (sweeper_test.go), must not take their Pending ones away mid-test.
	engine.SweepGrace = 100 * 365 * 24 * time.Hour
	return Config{
		DriverName:  csiTestDriverName,
		Version:     "v0.0.0-test",
		Endpoint:    "unix://" + socket,
		HTTPAddress: "127.0.0.1:0",
		Snapshots:   snapfake.NewSimpleClientset(),
		Engine:      engine,
	}
}

// shortTempDir is a temporary directory with a short path: unix socket paths are limited to 108
// bytes, and t.TempDir() embeds the (sub)test name.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "csi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startCSI runs a driver over a fake clientset holding objs and waits until it is ready.
func startCSI(t *testing.T, objs []runtime.Object, opts ...fixtureOption) *fixture {
	t.Helper()
	f := startCSIUnready(t, objs, opts...)
	f.waitReady()
	return f
}

// startCSIUnready runs a driver and connects to it without waiting for the engine to sync.
func startCSIUnready(t *testing.T, objs []runtime.Object, opts ...fixtureOption) *fixture {
	t.Helper()
	kube := newFakeAPI(t, objs...)
	f := &fixture{t: t, kube: kube, admin: adminClient(kube), socket: filepath.Join(shortTempDir(t), "csi.sock"), runErr: make(chan error, 1)}
	for _, o := range opts {
		o(f)
	}
	enforceResourceVersions(kube, kube.Tracker())
	d, err := New(csiConfig(f.socket, f.kube))
	if err != nil {
		t.Fatal(err)
	}
	f.driver, f.engine = d, d.engine
	f.ctx, f.cancel = context.WithCancel(context.Background())
	go func() { f.runErr <- d.Run(f.ctx) }()
	t.Cleanup(f.stop)

	waitCtx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	addr := d.HTTPAddr(waitCtx)
	if addr == "" {
		t.Fatal("driver did not bind its listeners within 10s")
	}
	f.httpURL = "http://" + addr
	f.conn, err = grpc.NewClient("unix://"+f.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	f.identity = csi.NewIdentityClient(f.conn)
	f.group = csi.NewGroupControllerClient(f.conn)
	f.ctrl = csi.NewControllerClient(f.conn)
	return f
}

// stop ends the fixture as a driver exit would. An Engine alone: once its workers have stopped. A
// Driver: Run must return nil and remove its socket.
func (f *fixture) stop() {
	f.stopped.Do(func() {
		if f.driver == nil {
			f.cancel()
			err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
				return !f.engine.ready.Load() && f.engine.queue.ShuttingDown(), nil
			})
			if err != nil {
				f.t.Errorf("engine workers did not stop within 30s of cancellation: %v", err)
			}
			return
		}
		if f.conn != nil {
			f.conn.Close()
		}
		f.cancel()
		select {
		case err := <-f.runErr:
			if err != nil {
				f.t.Errorf("Run returned %v after cancellation, want nil", err)
			}
		case <-time.After(30 * time.Second):
			f.t.Error("Run did not return within 30s of cancellation")
			return
		}
		if _, err := os.Lstat(f.socket); !errors.Is(err, os.ErrNotExist) {
			f.t.Errorf("socket %s still exists after Run returned (stat: %v)", f.socket, err)
		}
	})
}

// waitReady waits until Probe reports ready.
func (f *fixture) waitReady() {
	f.t.Helper()
	err := wait.PollUntilContextTimeout(f.ctx, 20*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		resp, err := f.identity.Probe(ctx, &csi.ProbeRequest{})
		return err == nil && resp.GetReady().GetValue(), nil
	})
	if err != nil {
		f.t.Fatalf("driver not ready within 20s: %v", err)
	}
}

// get fetches an HTTP path of the driver and returns status and body.
func (f *fixture) get(path string) (int, string) {
	f.t.Helper()
	resp, err := http.Get(f.httpURL + path)
	if err != nil {
		f.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// waitRecord waits until the record of id satisfies ok, both in the API server and in the engine's
// metadata cache (which Create and Get read, and which trails the API server), and returns it.
func (f *fixture) waitRecord(id string, ok func(*Record) bool) *Record {
	f.t.Helper()
	var last, lastCached *Record
	err := wait.PollUntilContextTimeout(f.ctx, 20*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		rec, err := f.engine.meta.getLive(ctx, id)
		if err != nil {
			return false, err
		}
		last = rec
		if rec == nil || !ok(rec) {
			return false, nil
		}
		cached, err := f.engine.meta.get(ctx, id)
		if err != nil {
			return false, err
		}
		lastCached = cached
		return cached != nil && ok(cached), nil
	})
	if err != nil {
		f.t.Fatalf("record %s never reached the expected state (%v); last: %+v; last cached: %+v", id, err, last, lastCached)
	}
	return last
}

// waitCounter waits until the counter read by value has grown from before by at least want (the
// engine bumps its metrics after the write that waitRecord sees), then returns its value; the caller
// checks it for exactly before+want.
func waitCounter(t *testing.T, value func() float64, before, want float64) float64 {
	t.Helper()
	got := value()
	_ = wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		got = value()
		return got >= before+want, nil
	})
	return got
}

// waitFor polls ok every 10ms for up to 20s.
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		return ok(), nil
	})
	if err != nil {
		t.Fatalf("timed out waiting for %s: %v", what, err)
	}
}

// eventually retries check every 20ms for up to 20s and fails with its last complaint.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		last = check()
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("%s: %v", what, last)
	}
}

// startCSIWithEtcd runs a 3-member TLS etcd cluster and a driver whose fake Kubernetes holds the
// cluster's labelled PVCs (bound to PVs of another CSI driver) and its ExternalName client Service.
func startCSIWithEtcd(t *testing.T, extra ...runtime.Object) (*fixture, *testCluster) {
	t.Helper()
	tc := startTestCluster(t, 3)
	return startCSI(t, append(etcdWorld(t, tc), extra...)), tc
}
