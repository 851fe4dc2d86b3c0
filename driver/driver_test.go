package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	snapfake "github.com/kubernetes-csi/external-snapshotter/client/v8/clientset/versioned/fake"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const csiTestDriverName = "etcd-snapshot.csi.io"

// csiEnv is a Driver running its real Run (gRPC on a unix socket, HTTP on a loopback port) over a
// fake clientset, with gRPC clients connected through the socket.
type csiEnv struct {
	t        *testing.T
	kube     *fake.Clientset
	driver   *Driver
	socket   string
	httpURL  string
	conn     *grpc.ClientConn
	identity csi.IdentityClient
	group    csi.GroupControllerClient
	ctrl     csi.ControllerClient
	ctx      context.Context

	cancel  context.CancelFunc
	runErr  chan error
	stopped sync.Once
}

// csiEnvOption adjusts an environment before its driver runs.
type csiEnvOption func(*csiEnv)

// withKubeReactor prepends a reactor to the fake clientset before the driver starts.
func withKubeReactor(verb, resource string, fn k8stesting.ReactionFunc) csiEnvOption {
	return func(e *csiEnv) { e.kube.PrependReactor(verb, resource, fn) }
}

// csiConfig is a valid Config for a driver serving on socket over kube.
func csiConfig(socket string, kube *fake.Clientset) Config {
	return Config{
		DriverName:  csiTestDriverName,
		Version:     "v0.0.0-test",
		Endpoint:    "unix://" + socket,
		HTTPAddress: "127.0.0.1:0",
		Snapshots:   snapfake.NewSimpleClientset(),
		Engine: EngineConfig{
			Kube: kube, MetadataNamespace: fxMetaNS, ClusterLabel: fxClusterLabel,
			EtcdImage: fxEtcdImage, DriverImage: fxDriverImage, HealthTimeout: 15 * time.Second,
			// The records these tests store are dated long ago (listRecord): the sweeper, tested on its
			// own (sweeper_test.go), must not take their Pending ones away mid-test.
			SweepGrace: 100 * 365 * 24 * time.Hour,
		},
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
func startCSI(t *testing.T, objs []runtime.Object, opts ...csiEnvOption) *csiEnv {
	t.Helper()
	e := startCSIUnready(t, objs, opts...)
	e.waitReady()
	return e
}

// startCSIUnready runs a driver and connects to it without waiting for the engine to sync.
func startCSIUnready(t *testing.T, objs []runtime.Object, opts ...csiEnvOption) *csiEnv {
	t.Helper()
	e := &csiEnv{t: t, kube: fake.NewClientset(objs...), socket: filepath.Join(shortTempDir(t), "csi.sock"), runErr: make(chan error, 1)}
	for _, o := range opts {
		o(e)
	}
	d, err := New(csiConfig(e.socket, e.kube))
	if err != nil {
		t.Fatal(err)
	}
	e.driver = d
	e.ctx, e.cancel = context.WithCancel(context.Background())
	go func() { e.runErr <- d.Run(e.ctx) }()
	t.Cleanup(e.stop)

	waitCtx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	addr := d.HTTPAddr(waitCtx)
	if addr == "" {
		t.Fatal("driver did not bind its listeners within 10s")
	}
	e.httpURL = "http://" + addr
	e.conn, err = grpc.NewClient("unix://"+e.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	e.identity = csi.NewIdentityClient(e.conn)
	e.group = csi.NewGroupControllerClient(e.conn)
	e.ctrl = csi.NewControllerClient(e.conn)
	return e
}

// stop ends Run and checks it stopped cleanly and removed its socket.
func (e *csiEnv) stop() {
	e.stopped.Do(func() {
		if e.conn != nil {
			e.conn.Close()
		}
		e.cancel()
		select {
		case err := <-e.runErr:
			if err != nil {
				e.t.Errorf("Run returned %v after cancellation, want nil", err)
			}
		case <-time.After(30 * time.Second):
			e.t.Error("Run did not return within 30s of cancellation")
			return
		}
		if _, err := os.Lstat(e.socket); !errors.Is(err, os.ErrNotExist) {
			e.t.Errorf("socket %s still exists after Run returned (stat: %v)", e.socket, err)
		}
	})
}

// waitReady waits until Probe reports ready.
func (e *csiEnv) waitReady() {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := e.identity.Probe(e.ctx, &csi.ProbeRequest{})
		if err == nil && resp.GetReady().GetValue() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatal("driver not ready within 20s")
}

// get fetches an HTTP path of the driver and returns status and body.
func (e *csiEnv) get(path string) (int, string) {
	e.t.Helper()
	resp, err := http.Get(e.httpURL + path)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// exists reports whether an object of kind (Job, Secret, PersistentVolumeClaim, ConfigMap) exists.
func (e *csiEnv) exists(kind, ns, name string) bool {
	e.t.Helper()
	var err error
	ctx := context.Background()
	switch kind {
	case "Job":
		_, err = e.kube.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
	case "Secret":
		_, err = e.kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	case "PersistentVolumeClaim":
		_, err = e.kube.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	case "ConfigMap":
		_, err = e.kube.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	default:
		e.t.Fatalf("unknown kind %s", kind)
	}
	if err != nil && !apierrors.IsNotFound(err) {
		e.t.Fatal(err)
	}
	return err == nil
}

// objectsOf lists which of the Job, Secret, PVC and metadata ConfigMap of snapshot id exist, as
// "Kind=true|false" in a fixed order, for readable comparisons.
func (e *csiEnv) objectsOf(id string) string {
	return fmt.Sprintf("Job=%t Secret=%t PersistentVolumeClaim=%t ConfigMap=%t",
		e.exists("Job", fxNS, id), e.exists("Secret", fxNS, tlsSecretName(id)),
		e.exists("PersistentVolumeClaim", fxNS, id), e.exists("ConfigMap", fxMetaNS, id))
}

// jobCreates counts Job create calls the driver made for name (every name when name is "").
func (e *csiEnv) jobCreates(name string) int {
	n := 0
	for _, a := range e.kube.Actions() {
		c, ok := a.(k8stesting.CreateAction)
		if !ok || a.GetVerb() != "create" || a.GetResource().Resource != "jobs" {
			continue
		}
		if j, ok := c.GetObject().(*batchv1.Job); ok && (name == "" || j.Name == name) {
			n++
		}
	}
	return n
}

// writes lists the create, update, patch and delete calls the driver sent to the fake API.
func (e *csiEnv) writes() []string {
	var out []string
	for _, a := range e.kube.Actions() {
		switch a.GetVerb() {
		case "create", "update", "patch", "delete":
			out = append(out, a.GetVerb()+" "+a.GetResource().Resource)
		}
	}
	return out
}

// finishJob plays the Job controller and kubelet for snapshot id: a pod with the given status, then
// the Job's terminal condition.
func (e *csiEnv) finishJob(id, podName string, podStatus corev1.PodStatus, cond batchv1.JobCondition) {
	e.t.Helper()
	ctx := context.Background()
	job, err := e.kube.BatchV1().Jobs(fxNS).Get(ctx, id, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: fxNS, Labels: job.Spec.Template.Labels, CreationTimestamp: metav1.Now()},
		Spec:       job.Spec.Template.Spec,
		Status:     podStatus,
	}
	if _, err := e.kube.CoreV1().Pods(fxNS).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	cond.Status = corev1.ConditionTrue
	job.Status.Conditions = append(job.Status.Conditions, cond)
	if cond.Type == batchv1.JobComplete {
		job.Status.Succeeded = 1
	} else {
		job.Status.Failed = *job.Spec.BackoffLimit + 1
	}
	if _, err := e.kube.BatchV1().Jobs(fxNS).UpdateStatus(ctx, job, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// eventually retries check every 20ms for up to 20s and fails with its last complaint.
func eventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = check(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}

// wantCode fails unless err is a gRPC status with code and a message containing every fragment.
func wantCode(t *testing.T, err error, code codes.Code, fragments ...string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a gRPC status", err)
	}
	if st.Code() != code {
		t.Fatalf("code %s (%q), want %s", st.Code(), st.Message(), code)
	}
	for _, f := range fragments {
		if !strings.Contains(st.Message(), f) {
			t.Fatalf("message %q does not mention %q", st.Message(), f)
		}
	}
}

func TestNewConfigErrors(t *testing.T) {
	valid := func() Config { return csiConfig("/run/csi/csi.sock", fake.NewClientset()) }
	cases := []struct {
		name    string
		mutate  func(*Config)
		wantErr []string // fragments; nil means New succeeds
	}{
		{"valid", func(*Config) {}, nil},
		{"endpoint as plain path", func(c *Config) { c.Endpoint = "/run/csi/csi.sock" }, nil},
		{"endpoint unix:/path", func(c *Config) { c.Endpoint = "unix:/run/csi/csi.sock" }, nil},
		{"everything missing", func(c *Config) { *c = Config{} },
			[]string{"DriverName is required", "Version is required", "Endpoint is required", "HTTPAddress is required",
				"Snapshots client is required", "Kube client is required", "MetadataNamespace (-metadata-namespace) is required"}},
		{"driver name with underscore", func(c *Config) { c.DriverName = "etcd_snapshot" }, []string{`DriverName "etcd_snapshot" is not a valid CSI plugin name`}},
		{"driver name too long", func(c *Config) { c.DriverName = strings.Repeat("a", 64) }, []string{"is not a valid CSI plugin name"}},
		{"driver name ends with dot", func(c *Config) { c.DriverName = "etcd.csi." }, []string{"is not a valid CSI plugin name"}},
		{"tcp endpoint", func(c *Config) { c.Endpoint = "tcp://127.0.0.1:10000" }, []string{"only unix sockets are supported"}},
		{"relative socket", func(c *Config) { c.Endpoint = "csi.sock" }, []string{"must be absolute"}},
		{"missing http address", func(c *Config) { c.HTTPAddress = "" }, []string{"HTTPAddress is required"}},
		{"missing snapshot client", func(c *Config) { c.Snapshots = nil }, []string{"Snapshots client is required"}},
		{"engine config checked", func(c *Config) { c.Engine.EtcdImage = "" }, []string{"EtcdImage (-etcd-image) is required"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid()
			tc.mutate(&cfg)
			d, err := New(cfg)
			if tc.wantErr == nil {
				if err != nil || d == nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("New succeeded, want an error")
			}
			for _, f := range tc.wantErr {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("error %q does not mention %q", err, f)
				}
			}
		})
	}
}

func TestDriverRunServesCSIAndHTTP(t *testing.T) {
	e := startCSI(t, nil)
	ctx := context.Background()

	info, err := e.identity.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	if err != nil || info.GetName() != csiTestDriverName || info.GetVendorVersion() != "v0.0.0-test" {
		t.Fatalf("GetPluginInfo = %v, %v", info, err)
	}
	caps, err := e.identity.GetPluginCapabilities(ctx, &csi.GetPluginCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var services []string
	for _, c := range caps.GetCapabilities() {
		services = append(services, c.GetService().GetType().String())
	}
	if got := strings.Join(services, ","); got != "CONTROLLER_SERVICE,GROUP_CONTROLLER_SERVICE" {
		t.Errorf("plugin capabilities %s", got)
	}
	gcaps, err := e.group.GroupControllerGetCapabilities(ctx, &csi.GroupControllerGetCapabilitiesRequest{})
	if err != nil || len(gcaps.GetCapabilities()) != 1 ||
		gcaps.GetCapabilities()[0].GetRpc().GetType() != csi.GroupControllerServiceCapability_RPC_CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT {
		t.Errorf("GroupControllerGetCapabilities = %v, %v", gcaps, err)
	}
	ccaps, err := e.ctrl.ControllerGetCapabilities(ctx, &csi.ControllerGetCapabilitiesRequest{})
	var rpcs []string
	for _, c := range ccaps.GetCapabilities() {
		rpcs = append(rpcs, c.GetRpc().GetType().String())
	}
	if got := strings.Join(rpcs, ","); err != nil || got != "CREATE_DELETE_SNAPSHOT,LIST_SNAPSHOTS,GET_SNAPSHOT" {
		t.Errorf("ControllerGetCapabilities = %v, %v", ccaps, err)
	}

	// Everything else is UNIMPLEMENTED, including whole services the driver does not register.
	_, err = e.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "v"})
	wantCode(t, err, codes.Unimplemented)
	_, err = e.ctrl.ListVolumes(ctx, &csi.ListVolumesRequest{})
	wantCode(t, err, codes.Unimplemented)
	_, err = csi.NewNodeClient(e.conn).NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	wantCode(t, err, codes.Unimplemented)

	if code, body := e.get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := e.get("/ready"); code != http.StatusOK {
		t.Errorf("/ready = %d %q", code, body)
	}
	code, metrics := e.get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		`etcd_snapshot_driver_rpc_total{code="OK",method="GetPluginInfo"}`,
		`etcd_snapshot_driver_rpc_total{code="Unimplemented",method="CreateVolume"}`,
		`etcd_snapshot_driver_rpc_duration_seconds_count{method="GetPluginCapabilities"}`,
		"go_goroutines",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// A removed socket (a wiped emptyDir) fails liveness.
	if err := os.Remove(e.socket); err != nil {
		t.Fatal(err)
	}
	if code, body := e.get("/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "gone") {
		t.Errorf("/healthz without socket = %d %q", code, body)
	}

	e.stop()
	if _, err := http.Get(e.httpURL + "/healthz"); err == nil {
		t.Error("HTTP server still answers after Run returned")
	}
}

func TestDriverNotReadyUntilSynced(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	// The metadata informer's first list hangs, as against an unreachable API server.
	e := startCSIUnready(t, nil, withKubeReactor("list", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		select {
		case <-release:
		case <-time.After(30 * time.Second):
		}
		return false, nil, nil
	}))
	ctx := context.Background()
	resp, err := e.identity.Probe(ctx, &csi.ProbeRequest{})
	if err != nil || resp.GetReady() == nil || resp.GetReady().GetValue() {
		t.Fatalf("Probe before sync = %v, %v; want ready=false", resp, err)
	}
	if code, _ := e.get("/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/ready before sync = %d, want 503", code)
	}
	if code, _ := e.get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz before sync = %d, want 200 (liveness must not depend on the API)", code)
	}
	// Create is refused with a retryable code rather than answered from empty caches.
	_, err = e.group.CreateVolumeGroupSnapshot(ctx, &csi.CreateVolumeGroupSnapshotRequest{Name: "g", SourceVolumeIds: []string{"etcd-test/data-main-0"}})
	wantCode(t, err, codes.Unavailable)

	unblock()
	e.waitReady()
	if code, _ := e.get("/ready"); code != http.StatusOK {
		t.Errorf("/ready after sync = %d, want 200", code)
	}
}

func TestDriverSocketFile(t *testing.T) {
	t.Run("stale socket is replaced", func(t *testing.T) {
		socket := filepath.Join(shortTempDir(t), "csi.sock")
		l, err := net.Listen("unix", socket)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
		d, err := New(csiConfig(socket, fake.NewClientset()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		waitCtx, waitCancel := context.WithTimeout(ctx, 10*time.Second)
		defer waitCancel()
		if d.HTTPAddr(waitCtx) == "" {
			t.Fatal("Run did not start over a stale socket")
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket left behind: %v", err)
		}
	})
	t.Run("other file is not replaced", func(t *testing.T) {
		path := filepath.Join(shortTempDir(t), "csi.sock")
		if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
			t.Fatal(err)
		}
		d, err := New(csiConfig(path, fake.NewClientset()))
		if err != nil {
			t.Fatal(err)
		}
		err = d.Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), "is not a socket") {
			t.Fatalf("Run = %v, want a refusal to replace a regular file", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "precious" {
			t.Errorf("file content changed to %q", b)
		}
		if err := d.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "Run called twice") {
			t.Errorf("second Run = %v", err)
		}
	})
}
