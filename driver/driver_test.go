package driver

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/kubernetes/fake"
)

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

// checkErr fails t unless err is nil when want is "", or else an error containing want. It reports
// whether an error was wanted, for a table test to end the case there.
func checkErr(t *testing.T, err error, want string) bool {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatal(err)
		}
		return false
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want it to contain %q", err, want)
	}
	return true
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
	hang, unblock := hangMetadataList(t)
	e := startCSIUnready(t, nil, hang)
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
